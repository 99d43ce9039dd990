"""systemd/inboxsort-web.service: hardened like the daemon's, the network families it needs."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.service.test_systemd_unit import Setting, parse_unit, systemd_analyze, value, values

UNIT_PATH = Path(__file__).resolve().parents[2] / "systemd" / "inboxsort-web.service"


@pytest.fixture(scope="module")
def unit() -> list[Setting]:
    return parse_unit(UNIT_PATH.read_text())


def test_every_setting_is_preceded_by_a_comment(unit: list[Setting]) -> None:
    uncommented = [f"line {s.line}: {s.key}={s.value}" for s in unit if not s.commented]
    assert not uncommented, "settings without a comment line above them:\n" + "\n".join(uncommented)


def test_hardening_matches_the_daemon_and_adds_only_the_network(unit: list[Setting]) -> None:
    daemon = parse_unit((UNIT_PATH.parent / "inboxsort.service").read_text())
    same = (
        "User",
        "Group",
        "UMask",
        "NoNewPrivileges",
        "ProtectSystem",
        "ReadWritePaths",
        "ProtectHome",
        "PrivateTmp",
        "PrivateDevices",
        "ProtectKernelTunables",
        "ProtectKernelModules",
        "ProtectKernelLogs",
        "ProtectControlGroups",
        "ProtectClock",
        "ProtectHostname",
        "RestrictNamespaces",
        "RestrictRealtime",
        "RestrictSUIDSGID",
        "LockPersonality",
        "SystemCallArchitectures",
        "SystemCallErrorNumber",
        "CapabilityBoundingSet",
        "AmbientCapabilities",
        "IPAddressDeny",
    )
    for key in same:
        assert value(unit, "Service", key) == value(daemon, "Service", key), key
    assert values(unit, "Service", "RestrictAddressFamilies") == ["AF_UNIX AF_INET AF_INET6"]
    assert values(unit, "Service", "IPAddressAllow") == ["localhost"]
    # No TensorFlow here, so unlike the daemon W^X is enforced.
    assert value(unit, "Service", "MemoryDenyWriteExecute") == "yes"
    assert value(unit, "Service", "ExecStart") == (
        "/opt/inboxsort/venv/bin/inboxsort --config /etc/inboxsort/config.toml web"
    )


def test_systemd_analyze_verify_and_security(tmp_path: Path) -> None:
    exe = systemd_analyze()
    path = tmp_path / "inboxsort-web.service"
    path.write_text(UNIT_PATH.read_text())
    verify = subprocess.run(
        [exe, "verify", "--man=no", str(path)], capture_output=True, text=True, check=False
    )
    missing_binary = re.compile(r"Command /opt/inboxsort/venv/bin/inboxsort is not executable")
    lines = [line for line in (verify.stdout + verify.stderr).splitlines() if line.strip()]
    assert [line for line in lines if not missing_binary.search(line)] == []
    security = subprocess.run(
        [exe, "security", "--offline=true", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", security.stdout)
    assert match, security.stdout[-2000:]
    assert float(match[1]) <= 2.0, security.stdout[-2000:]
