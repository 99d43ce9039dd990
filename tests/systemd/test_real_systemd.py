"""The shipped unit under a real systemd: a Debian container booted by systemd-nspawn.

Run by `make test-systemd` (root, apt and a few minutes; not part of `make test`). The tests run
in file order on one installed service, each leaving it active for the next: start (READY=1),
filing, reload, the watchdog, the sandbox, stop.
"""

from __future__ import annotations

import re
import sqlite3
import sys
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, SHARED_KERAS_HOME
from tests.systemd.machine import (
    MachineError,
    booted,
    require_host,
    root_filesystem,
    wheelhouse,
)
from tests.systemd.service import CONFIG, STATE, Service

# One budget for the module, its cold caches included; every wait inside has its own deadline.
pytestmark = pytest.mark.timeout(2400)

STOP_LIMIT_SECONDS = 10.0
# The shipped WatchdogSec=60, then RestartSec=5 and a start; SIGABRT ends a stopped process
# at once (systemd sends SIGCONT after it).
WATCHDOG_RESTART_SECONDS = 60 + 5 + 120
TRAIN_SECONDS = 600
IMAGES_PER_CLASS = 70
TRAIN_PER_CLASS = 12
WEIGHTS_160 = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_160_no_top.h5"


def log(message: str) -> None:
    """A progress line, shown live by `make test-systemd` (pytest -s)."""
    print(f"[test-systemd {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@pytest.fixture(scope="module")
def service() -> Iterator[Service]:
    """inboxsort installed in a booted container as README says, enabled, not yet started."""
    require_host()
    started = time.monotonic()
    rootfs = root_filesystem(log)
    wheels = wheelhouse(REPO_ROOT, log)
    with booted(rootfs, binds_ro={wheels: "/wheelhouse"}, log=log) as machine:
        site = Service(machine, log)
        site.install(REPO_ROOT)
        log(f"ready to test after {time.monotonic() - started:.0f} s")
        try:
            yield site
        finally:
            # The whole boot's journal, kept for a failure's post-mortem (CI's artefacts).
            path = REPO_ROOT / "build" / "test-systemd-journal.txt"
            try:
                journal = site.journal(unit_only=False)
            except MachineError as exc:
                log(f"no journal to keep: {exc}")
            else:
                path.parent.mkdir(exist_ok=True)
                path.write_text(journal)
                log(f"the container's journal is in {path}")


@pytest.fixture(scope="module")
def images(dataset_root: Path) -> Iterator[Path]:
    """Validation images, cats and dogs alternating, each handed out once."""
    cats = sorted((dataset_root / "validation" / "cats").glob("*.jpg"))[:IMAGES_PER_CLASS]
    dogs = sorted((dataset_root / "validation" / "dogs").glob("*.jpg"))[:IMAGES_PER_CLASS]
    return iter([p for pair in zip(cats, dogs, strict=True) for p in pair])


def take(images: Iterator[Path], count: int) -> list[Path]:
    """The next `count` images."""
    return [next(images) for _ in range(count)]


def test_activating_until_the_model_is_loaded_and_the_observer_runs(service, images):
    service.systemctl("start", "--no-block", "inboxsort")
    samples = []
    deadline = time.monotonic() + 180  # the unit's TimeoutStartSec
    while time.monotonic() < deadline:
        state = service.systemctl("is-active", "inboxsort", check=False)
        samples.append(state)
        if state not in ("activating", "inactive"):
            break
        time.sleep(0.05)
    log(f"is-active: {samples.count('activating')} x activating, then {samples[-1]}")
    # The start job may still be queued for the first answers ("inactive"), never more.
    while samples[:1] == ["inactive"] and len(samples) > 1:
        samples.pop(0)
    assert samples[0] == "activating", f"is-active said {samples[0]!r} right after the start"
    assert samples[-1] == "active", f"is-active went {samples[-2:]}:\n{service.journal()}"
    props = service.show("MainPID", "StatusText", "NRestarts")
    # READY=1 comes after the heartbeat that says running, with the model it loaded.
    state, pid, model = service.daemon_state()
    assert (state, pid, model) == ("running", int(props["MainPID"]), 0), props
    # The start-up scan is over; only the observer can see a file dropped now (the next rescan
    # is minutes away).
    names = service.drop(take(images, 1))
    service.wait_filed(names, timeout=30)
    service.assert_exact_accounting()


def test_dropped_images_are_filed_with_their_rows(service, images):
    names = service.drop(take(images, 12))
    rows = service.wait_filed(names)
    # Six cats and six dogs: the shipped model (99% on the test split) gives both labels.
    assert {r.label for r in rows} == {"cats", "dogs"}, rows
    assert {r.model_version for r in rows} == {0}, rows
    service.assert_exact_accounting()


def _train_a_version(service: Service, dataset_root: Path) -> int:
    """`inboxsort train` inside the container: a small second version, registered, inactive."""
    keras = service.host_path(f"{STATE}/.keras/models")
    data = service.host_path("/srv/train")
    for name in ("cats", "dogs"):
        (data / name).mkdir(parents=True)
        for source in sorted((dataset_root / "train" / name).glob("*.jpg"))[:TRAIN_PER_CLASS]:
            (data / name / source.name).write_bytes(source.read_bytes())
    # The user's Keras cache, as a user would fill it on a machine without internet.
    weights = SHARED_KERAS_HOME / "models" / WEIGHTS_160
    assert weights.is_file(), f"the offline ImageNet weights are missing: {weights}"
    owned = ("install", "-d", "-o", "inboxsort", "-g", "inboxsort")
    service.machine.run(*owned, f"{STATE}/.keras", f"{STATE}/.keras/models")
    (keras / WEIGHTS_160).write_bytes(weights.read_bytes())
    args = ("--data", "/srv/train", "--image-size", "160", "--epochs", "1")
    out = service.cli("train", *args, "--fine-tune-epochs", "0", "--quiet", timeout=TRAIN_SECONDS)
    m = re.search(r"trained version (\d+)", out)
    assert m, out
    return int(m.group(1))


def test_reload_loads_a_newly_activated_version(service, images, dataset_root):
    version = _train_a_version(service, dataset_root)
    pid = service.show("MainPID")["MainPID"]
    # The 3 s poll tries a newly active version once; a version that failed to load is tried
    # again only when asked: that is what `systemctl reload` is for.
    card = service.host_path(f"{STATE}/models/{version:04d}/card.json")
    # The database's copy of the version would heal the folder (model/lineage.py): drop it, as
    # for a version registered before the fleet's lineage, so only the folder can serve it.
    db = service.host_path(f"{STATE}/inboxsort.db")
    with closing(sqlite3.connect(db, timeout=10)) as con, con:
        con.execute("DELETE FROM model_artifacts WHERE version = ?", (version,))
    card.rename(card.with_name("card.json.aside"))
    cursor = service.cursor()
    service.cli("models", "activate", str(version))
    service.wait_for(
        "the daemon to fail loading the version without its card",
        lambda: f"cannot load model version {version}" in service.journal(after=cursor),
        timeout=30,
    )
    card.with_name("card.json.aside").rename(card)
    time.sleep(7)  # two polls
    assert service.daemon_state()[2] == 0, "the poll retried a version that failed to load"
    service.systemctl("reload", "inboxsort")
    service.wait_for(
        f"version {version} served after the reload",
        lambda: service.daemon_state()[2] == version,
        timeout=60,
    )
    props = service.show("ActiveState", "MainPID", "NRestarts")
    assert (props["ActiveState"], props["MainPID"], props["NRestarts"]) == ("active", pid, "0")
    journal = service.journal(after=cursor)
    assert "Reloaded inboxsort.service" in journal, journal
    names = service.drop(take(images, 4))
    rows = service.wait_filed(names)
    assert {r.model_version for r in rows} == {version}, rows
    service.assert_exact_accounting()


def test_a_wedged_daemon_is_killed_by_the_watchdog_and_restarted(service, images):
    before = service.show("MainPID", "NRestarts", "WatchdogUSec")
    assert before["WatchdogUSec"] == "1min", before  # the shipped WatchdogSec=60
    cursor = service.cursor()
    in_flight = service.drop(take(images, 6))
    service.machine.run("kill", "-STOP", before["MainPID"])
    status = f"/proc/{before['MainPID']}/status"
    service.wait_for(
        "the daemon to be stopped (SIGSTOP)",
        lambda: re.search(r"^State:\s+T", service.machine.run("cat", status).stdout, re.M),
        timeout=10,
    )
    waiting = service.drop(take(images, 6))  # into the inbox of a wedged daemon
    log("SIGSTOP sent; waiting for the watchdog (WatchdogSec=60)")
    service.wait_for(
        "a restart after the watchdog timeout",
        lambda: (
            (s := service.show("ActiveState", "MainPID", "NRestarts"))["ActiveState"] == "active"
            and s["NRestarts"] == str(int(before["NRestarts"]) + 1)
            and s["MainPID"] != before["MainPID"]
        ),
        timeout=WATCHDOG_RESTART_SECONDS,
    )
    journal = service.journal(after=cursor)
    assert "Watchdog timeout" in journal and "Failed with result 'watchdog'" in journal, journal
    service.wait_filed(in_flight + waiting)
    service.assert_exact_accounting()


def _probe(service: Service, pid: str, folder: str, *, uid: int) -> str:
    """Try to create a file in `folder` inside the service's own mount namespace; the error."""
    ids = [] if uid == 0 else ["-S", str(uid), "-G", str(service.gid)]
    argv = ["nsenter", "-t", pid, "-m", *ids, "--", "sh", "-c"]
    probe = f"{folder}/.inboxsort-sandbox-probe"
    done = service.machine.run(*argv, f"touch {probe} && rm {probe}", check=False)
    return "" if done.returncode == 0 else done.stderr.strip()


def test_the_sandbox_holds(service):
    pid = service.show("MainPID")["MainPID"]
    assert _probe(service, pid, f"{STATE}/library", uid=service.uid) == ""  # the probe works
    for folder in ("/usr", "/etc", "/opt/inboxsort", "/srv", "/var/lib"):
        for uid in (service.uid, 0):  # read-only mounts: even root in that namespace can't
            error = _probe(service, pid, folder, uid=uid)
            assert "Read-only file system" in error, (folder, uid, error)
    for folder in ("/home", "/root"):
        error = _probe(service, pid, folder, uid=service.uid)
        assert "Permission denied" in error or "Read-only" in error, (folder, error)
        listing = service.machine.run("nsenter", "-t", pid, "-m", "--", "ls", "-A", folder)
        assert listing.stdout == "", f"{folder} is not empty to the service: {listing.stdout}"


def test_a_folder_outside_read_write_paths_is_reported_at_start(service):
    outside = "/srv/outside"
    # The user may write there: only the sandbox says no.
    service.machine.run("install", "-d", "-o", "inboxsort", "-g", "inboxsort", outside)
    service.machine.run("runuser", "-u", "inboxsort", "--", "touch", f"{outside}/probe")
    service.machine.run("rm", f"{outside}/probe")
    config = service.host_path(CONFIG)
    good = config.read_text()
    config.write_text(good.replace(f'"{STATE}/duplicates"', f'"{outside}"'))
    assert outside in config.read_text()
    cursor = service.cursor()
    try:
        service.systemctl("restart", "inboxsort", check=False, timeout=120)
        service.wait_for(
            "the start to fail",
            lambda: service.show("ExecMainStatus")["ExecMainStatus"] == "2",
            timeout=60,
        )
        journal = service.journal(after=cursor)
        assert f"paths.duplicates = {outside} is not writable" in journal, journal
        assert "read-only" in journal and "ReadWritePaths=" in journal, journal
        assert not list(service.host_path(outside).iterdir())
    finally:
        config.write_text(good)
    service.systemctl("restart", "inboxsort", timeout=120)
    service.wait_active()
    service.assert_exact_accounting()


def test_stop_is_within_10_s_and_accounts_for_every_image(service, images):
    cursor = service.cursor()
    # Stopped at once: some images may be on their way, some not yet claimed, some filed.
    names = service.drop(take(images, 60))
    started = time.monotonic()
    service.systemctl("stop", "inboxsort", timeout=60)
    took = time.monotonic() - started
    log(f"systemctl stop took {took:.1f} s")
    props = service.show("ActiveState", "Result", "ExecMainStatus")
    assert props == {"ActiveState": "inactive", "Result": "success", "ExecMainStatus": "0"}, props
    assert took < STOP_LIMIT_SECONDS, f"systemctl stop took {took:.1f} s"
    assert "SIGKILL" not in service.journal(after=cursor)
    # Every image is somewhere, once, unchanged: filed with its row, or still in the inbox.
    files = service.files()
    rows = {r.original_name: r for r in service.rows()}
    waiting = []
    for name in names:
        assert len(files.get(name, [])) == 1, (name, files.get(name))
        [path] = files[name]
        if path.startswith(f"{STATE}/library/"):
            assert rows[name].status == "filed" and rows[name].path == path, rows.get(name)
        else:
            assert path == f"{STATE}/inbox/{name}", path
            assert name not in rows or rows[name].status == "pending", rows[name]
            waiting.append(name)
    log(f"at the stop: {len(names) - len(waiting)} filed, {len(waiting)} still in the inbox")
    service.systemctl("start", "inboxsort", timeout=200)
    service.wait_filed(names)
    service.assert_exact_accounting()
    service.systemctl("stop", "inboxsort", timeout=60)
