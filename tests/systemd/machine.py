"""A minimal Debian booted by systemd-nspawn: the real systemd tests/systemd runs the unit under.

The root filesystem (debootstrap from the host's apt mirror) and a wheelhouse of inboxsort's
dependencies are cached outside the repo, under CACHE_DIR, and reused between runs. Each is built
under a temporary name and renamed into place, so a half-built cache is never used. Every run
boots a fresh copy of the root filesystem, from a cgroup of its own (the host runs no systemd, so
nspawn must neither register nor create a scope), and removes the copy and the cgroups afterwards,
on failure too.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

CACHE_DIR = Path(os.environ.get("INBOXSORT_SYSTEMD_CACHE", "/var/cache/inboxsort-systemd"))
# The wheelhouse is built by this Python (3.11); bookworm's python3 is 3.11 too.
SUITE = "bookworm"
# minbase has no /bin/kill (the unit's ExecReload=) without procps; runuser and nsenter come
# with util-linux, which minbase has.
PACKAGES = ("systemd", "systemd-sysv", "procps", "python3", "python3-venv")
KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
DEFAULT_MIRROR = "http://deb.debian.org/debian"
CONTAINER_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
WHEELHOUSE_IN_CONTAINER = "/wheelhouse"

DEBOOTSTRAP_SECONDS = 1200
WHEELHOUSE_SECONDS = 1200
COPY_SECONDS = 300
BOOT_SECONDS = 120
HALT_SECONDS = 60
RUN_TMPFS = "8g"  # an upper bound; a tmpfs uses only what is written
KILL_SECONDS = 15
CGROUP_SECONDS = 10


class MachineError(AssertionError):
    """The container could not be built, booted or cleaned up; the message says which step."""


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.splitlines()[-lines:])


def _run_host(argv: Sequence[str | Path], *, timeout: float, what: str) -> str:
    """Run a host command to its end within `timeout`; its output, or MachineError saying why."""
    try:
        done = subprocess.run(
            [str(a) for a in argv],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) else ""
        raise MachineError(f"{what}: still running after {timeout:.0f} s\n{_tail(out)}") from None
    if done.returncode != 0:
        raise MachineError(
            f"{what}: exit code {done.returncode}\n{_tail(done.stdout)}\n{_tail(done.stderr)}"
        )
    return done.stdout


def require_host() -> None:
    """Fail (not skip: this test only runs when asked for) when the host cannot run it."""
    if os.geteuid() != 0:
        raise MachineError("tests/systemd needs root (debootstrap, systemd-nspawn, cgroups)")
    missing = [t for t in ("systemd-nspawn", "debootstrap", "nsenter") if not shutil.which(t)]
    if missing:
        raise MachineError(
            f"tests/systemd needs {', '.join(missing)}: run .ci/install-systemd-container"
        )


# --------------------------------------------------------------------------------------------
# Caches: the root filesystem and the wheelhouse
# --------------------------------------------------------------------------------------------


def apt_mirror(sources: Sequence[Path] = ()) -> str:
    """The Debian archive the host's apt uses (deb822 or one-line sources), else deb.debian.org."""
    files = list(sources) or [
        Path("/etc/apt/sources.list"),
        *sorted(Path("/etc/apt/sources.list.d").glob("*")),
    ]
    for path in files:
        try:
            text = path.read_text()
        except OSError:
            continue
        # One-line form: deb [options] URI SUITE COMPONENTS...
        for m in re.finditer(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+(\S+)", text, re.M):
            if m.group(2) == SUITE:
                return m.group(1).rstrip("/")
        # deb822 form: a stanza whose Suites include the suite itself (not -security).
        for stanza in re.split(r"\n\s*\n", text):
            uris = re.search(r"^URIs:\s*(\S+)", stanza, re.M)
            suites = re.search(r"^Suites:\s*(.+)$", stanza, re.M)
            if uris and suites and SUITE in suites.group(1).split():
                return uris.group(1).rstrip("/")
    return DEFAULT_MIRROR


def _key(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:12]


def _remove_stale(prefix: str) -> None:
    """Remove `<prefix>.tmp-<pid>*` folders of builds whose process is gone."""
    for path in CACHE_DIR.glob(f"{prefix}.tmp-*"):
        m = re.match(rf"{re.escape(prefix)}\.tmp-(\d+)", path.name)
        if m and not Path(f"/proc/{m.group(1)}").exists():
            remove_tree(path)


def _build_cached(name: str, build: Callable[[Path], None]) -> Path:
    """CACHE_DIR/name, built by `build(tmp)` into a temporary folder renamed into place."""
    final = CACHE_DIR / name
    if final.is_dir():
        final.chmod(0o755)  # a root filesystem's / must be open to the service user
        return final
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    _remove_stale(name)
    tmp = Path(tempfile.mkdtemp(prefix=f"{name}.tmp-{os.getpid()}-", dir=CACHE_DIR))
    try:
        tmp.chmod(0o755)  # mkdtemp makes it 0700: the container's / would shut out its users
        build(tmp)
        try:
            tmp.rename(final)
        except OSError:
            if not final.is_dir():  # not another run finishing first
                raise
    finally:
        if tmp.exists():
            remove_tree(tmp)
    return final


def root_filesystem(log: Callable[[str], None]) -> Path:
    """The cached Debian root filesystem (debootstrap minbase plus PACKAGES)."""
    mirror = apt_mirror()
    name = f"rootfs-{SUITE}-{_key(SUITE, mirror, PACKAGES)}"

    def build(tmp: Path) -> None:
        log(f"debootstrap {SUITE} from {mirror} into {tmp} (a few minutes, once)")
        argv: list[str | Path] = ["debootstrap", "--variant=minbase"]
        argv += [f"--include={','.join(PACKAGES)}"]
        if KEYRING.is_file():
            argv += [f"--keyring={KEYRING}"]
        argv += [SUITE, tmp, mirror]
        try:
            _run_host(argv, timeout=DEBOOTSTRAP_SECONDS, what="debootstrap")
        finally:
            unmount_below(tmp)  # debootstrap mounts /proc and /sys in the target while it works
        if not (tmp / "usr/lib/systemd/systemd").is_file():
            raise MachineError(f"debootstrap finished but {tmp} has no systemd")

    return _build_cached(name, build)


def wheelhouse(repo: Path, log: Callable[[str], None]) -> Path:
    """The cached wheels of inboxsort's dependencies and build requirements, for this Python."""
    project = tomllib.loads((repo / "pyproject.toml").read_text())
    wanted = [*project["project"]["dependencies"], *project["build-system"]["requires"]]
    tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
    name = f"wheelhouse-{tag}-{_key(sorted(wanted))}"

    def build(tmp: Path) -> None:
        log(f"pip download {len(wanted)} requirements into {tmp} (once per dependency set)")
        argv = [sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:"]
        _run_host([*argv, "--dest", tmp, *wanted], timeout=WHEELHOUSE_SECONDS, what="pip download")

    return _build_cached(name, build)


# --------------------------------------------------------------------------------------------
# Mounts and cgroups left behind
# --------------------------------------------------------------------------------------------


def _mounts_below(path: Path) -> list[str]:
    """Mount points at `path` or under it."""
    top = str(path.resolve())
    points = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            point = line.split()[4].replace("\\040", " ")
            if point == top or point.startswith(top + "/"):
                points.append(point)
    return points


def unmount_below(path: Path) -> None:
    """Lazily unmount whatever is mounted at `path` or under it, deepest first."""
    for point in sorted(_mounts_below(path), key=len, reverse=True):
        subprocess.run(["umount", "--lazy", point], capture_output=True, check=False, timeout=30)


def remove_tree(path: Path) -> None:
    """Remove a folder this module made; never one with something still mounted inside it."""
    unmount_below(path)
    left = _mounts_below(path)
    if left:
        raise MachineError(f"not removing {path}: still mounted under it: {', '.join(left)}")
    shutil.rmtree(path, ignore_errors=True)


def _cgroup_roots() -> list[Path]:
    """The hierarchies nspawn uses: the unified one, or name=systemd plus unified (hybrid)."""
    base = Path("/sys/fs/cgroup")
    if (base / "cgroup.controllers").is_file():
        return [base]
    roots = [base / "systemd", base / "unified"]
    return [r for r in roots if (r / "cgroup.procs").is_file()]


def make_cgroups(name: str) -> list[Path]:
    """A cgroup called `name` in each hierarchy nspawn uses."""
    roots = _cgroup_roots()
    if not roots:
        raise MachineError("no cgroup hierarchy for nspawn under /sys/fs/cgroup")
    made = []
    for root in roots:
        (root / name).mkdir()
        made.append(root / name)
    return made


def remove_cgroups(cgroups: Sequence[Path]) -> list[str]:
    """Remove our cgroups (nspawn's payload/ and supervisor/ below them too); the problems."""
    problems = []
    for top in cgroups:
        deadline = time.monotonic() + CGROUP_SECONDS
        while top.exists():
            below = [p for p in top.rglob("*") if p.is_dir()]
            for folder in sorted(below, key=lambda p: -len(p.parts)):
                with contextlib.suppress(OSError):
                    folder.rmdir()
            with contextlib.suppress(OSError):
                top.rmdir()
            if not top.exists():
                break
            if time.monotonic() > deadline:
                problems.append(f"cgroup {top} could not be removed")
                break
            # Anything still in it was started by this container: ours to kill.
            for procs in top.rglob("cgroup.procs"):
                for pid in procs.read_text().split():
                    with contextlib.suppress(OSError):
                        os.kill(int(pid), signal.SIGKILL)
            time.sleep(0.2)
    return problems


# --------------------------------------------------------------------------------------------
# The booted container
# --------------------------------------------------------------------------------------------


@dataclass
class Machine:
    """A booted container: run commands in it with `run`, see its files under `root`."""

    name: str
    root: Path
    init_pid: int
    log_path: Path

    def run(
        self,
        *argv: str,
        timeout: float = 60,
        check: bool = True,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run argv inside the container (all its namespaces, as root, clean environment)."""
        # A clean environment: the host's (PIP_*, VIRTUAL_ENV...) must not leak into the guest.
        full_env = {"PATH": CONTAINER_PATH, "LANG": "C.UTF-8", **(env or {})}
        cmd = ["nsenter", "--target", str(self.init_pid), "--all", "--", *argv]
        try:
            done = subprocess.run(
                cmd,
                env=full_env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            what = " ".join(argv)
            raise MachineError(f"in the container, {what!r} ran past {timeout} s") from None
        if check and done.returncode != 0:
            raise MachineError(
                f"in the container, {' '.join(argv)!r} exited {done.returncode}\n"
                f"{_tail(done.stdout)}\n{_tail(done.stderr)}"
            )
        return done

    def console(self) -> str:
        """What the container printed on its console (boot and shutdown messages)."""
        return self.log_path.read_text(errors="replace")


def _container_init(nspawn: subprocess.Popen[bytes], log_path: Path) -> int:
    """The host pid of the container's PID 1: nspawn's child that is pid 1 in its namespace."""
    deadline = time.monotonic() + BOOT_SECONDS
    while time.monotonic() < deadline:
        if nspawn.poll() is not None:
            raise MachineError(
                f"systemd-nspawn exited {nspawn.returncode} before the container booted:\n"
                + _tail(log_path.read_text(errors="replace"))
            )
        for status in Path("/proc").glob("[0-9]*/status"):
            with contextlib.suppress(OSError):
                lines = status.read_text().splitlines()
                fields = dict(line.split(":\t", 1) for line in lines if ":\t" in line)
                ns_pids = fields.get("NSpid", "").split()
                ours = fields.get("PPid") == str(nspawn.pid)
                if ours and len(ns_pids) > 1 and ns_pids[-1] == "1":
                    return int(status.parent.name)
        time.sleep(0.1)
    raise MachineError(f"no container init under systemd-nspawn within {BOOT_SECONDS} s")


def _wait_booted(machine: Machine) -> None:
    """Wait until the container's systemd has finished booting (running, or degraded)."""
    deadline = time.monotonic() + BOOT_SECONDS
    while True:
        left = max(1.0, deadline - time.monotonic())
        argv = ("systemctl", "is-system-running", "--wait")
        done = machine.run(*argv, timeout=left, check=False)
        state = done.stdout.strip()
        if state in ("running", "degraded"):
            return
        # In the first instants PID 1 has no socket yet ("offline", or no bus): ask again.
        if state in ("maintenance", "stopping") or time.monotonic() > deadline:
            raise MachineError(
                f"the container did not finish booting: {state!r}\n{done.stderr}\n"
                + _tail(machine.console())
            )
        time.sleep(0.2)


def _halt(nspawn: subprocess.Popen[bytes], init_pid: int | None) -> list[str]:
    """Power the container off (SIGTERM to nspawn halts it), killing it if that takes too long."""
    if nspawn.poll() is not None:
        return []
    nspawn.send_signal(signal.SIGTERM)
    try:
        nspawn.wait(timeout=HALT_SECONDS)
        return []
    except subprocess.TimeoutExpired:
        pass
    # SIGKILL to the namespace's init ends every process of the container.
    if init_pid is not None:
        with contextlib.suppress(OSError):
            os.kill(init_pid, signal.SIGKILL)
    nspawn.kill()
    try:
        nspawn.wait(timeout=KILL_SECONDS)
    except subprocess.TimeoutExpired:
        return [f"systemd-nspawn (pid {nspawn.pid}) survived SIGKILL"]
    return [f"the container did not halt within {HALT_SECONDS} s and was killed"]


def _start_nspawn(argv: list[str], cgroups: list[Path], log_path: Path) -> subprocess.Popen[bytes]:
    """Start systemd-nspawn inside our own cgroups, its console going to `log_path`."""

    def enter_cgroups() -> None:  # in the child, before exec: nspawn starts from our cgroup
        for cgroup in cgroups:
            (cgroup / "cgroup.procs").write_text(str(os.getpid()))

    with log_path.open("wb") as console:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=console,
            stderr=subprocess.STDOUT,
            preexec_fn=enter_cgroups,
            start_new_session=True,
        )


def _remove_stale_runs(runs: Path) -> None:
    """Remove the copies left by runs that were killed before their cleanup."""
    for old in runs.iterdir():
        m = re.match(r"(\d+)-", old.name)
        if m and not Path(f"/proc/{m.group(1)}").exists():
            remove_tree(old)


@contextlib.contextmanager
def booted(
    rootfs: Path, *, binds_ro: dict[Path, str], log: Callable[[str], None]
) -> Iterator[Machine]:
    """Boot a fresh copy of `rootfs`; halt it and remove the copy and its cgroups afterwards."""
    runs = CACHE_DIR / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    _remove_stale_runs(runs)
    work = Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-", dir=runs))
    name = f"inboxsort-test-{os.getpid()}"
    root, log_path = work / "root", work / "console.log"
    problems: list[str] = []
    nspawn: subprocess.Popen[bytes] | None = None
    init_pid: int | None = None
    cgroups: list[Path] = []
    try:
        # The copy and its venv (about 3 GB) live in memory: deleting them from a disk mounted
        # with `discard` took minutes, unmounting a tmpfs takes none.
        mount = ["mount", "-t", "tmpfs", "-o", f"size={RUN_TMPFS}", "tmpfs", str(work)]
        _run_host(mount, timeout=30, what="mount a tmpfs for the container")
        _run_host(["cp", "-a", "--reflink=auto", rootfs, root], timeout=COPY_SECONDS, what="copy")
        cgroups = make_cgroups(name)
        argv = ["systemd-nspawn", "--quiet", "--boot", "--private-network", "--register=no"]
        argv += ["--keep-unit", f"--machine={name}", f"--directory={root}"]
        argv += [f"--bind-ro={host}:{inside}" for host, inside in binds_ro.items()]
        nspawn = _start_nspawn(argv, cgroups, log_path)
        started = time.monotonic()
        init_pid = _container_init(nspawn, log_path)
        machine = Machine(name=name, root=root, init_pid=init_pid, log_path=log_path)
        _wait_booted(machine)
        log(f"container {name} booted in {time.monotonic() - started:.1f} s")
        yield machine
    finally:
        if nspawn is not None:
            problems += _halt(nspawn, init_pid)
        problems += remove_cgroups(cgroups)
        if nspawn is None or nspawn.poll() is not None:
            try:
                remove_tree(work)
            except MachineError as exc:
                problems.append(str(exc))
        else:
            problems.append(f"left {work} in place: systemd-nspawn still runs")
        if problems and sys.exc_info()[0] is None:
            raise MachineError("cleanup: " + "; ".join(problems))
        for problem in problems:
            log(f"cleanup problem: {problem}")
