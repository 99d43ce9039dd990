"""`inboxsort web` as users start it: a real uvicorn process, its config checks, SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from inboxsort.config import load_config
from inboxsort.errors import ConfigError


def free_port() -> int:
    """A TCP port nobody listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get(url: str, timeout: float = 60.0) -> tuple[int, bytes]:
    """GET url, retrying while the server is not up yet."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_web_serves_until_sigterm(
    make_config: Callable[..., Path], cli_env: dict[str, str], tmp_path: Path
) -> None:
    port = free_port()
    config = make_config(f"[web]\nport = {port}\n")
    log = (tmp_path / "web.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "inboxsort", "--config", str(config), "web"],
        env=cli_env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        status, body = get(f"http://127.0.0.1:{port}/api/stats")
        assert status == 200, body
        assert json.loads(body)["images"]["total"] == 0
        status, body = get(f"http://127.0.0.1:{port}/review")
        assert status == 200 and b"No images match." in body
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(30)
        log.close()
    assert code == 0, (tmp_path / "web.log").read_text()
    assert f"serving http://127.0.0.1:{port}/" in (tmp_path / "web.log").read_text()


def test_listening_elsewhere_without_a_token_is_refused(
    make_config: Callable[..., Path], run_cli: Callable[..., Any]
) -> None:
    open_config = make_config('[web]\nhost = "0.0.0.0"\n')
    result = run_cli("--config", open_config, "web")
    assert result.returncode == 2
    assert "web.token = '': expected a token when web.host = '0.0.0.0'" in result.stderr
    loopback = make_config("", name="other.toml")
    flag = run_cli("--config", loopback, "web", "--host", "0.0.0.0", "--port", str(free_port()))
    assert flag.returncode == 2 and "needs web.token" in flag.stderr
    port = run_cli("--config", loopback, "web", "--port", "70000")
    assert port.returncode == 2 and "'70000': expected a port from 1 to 65535" in port.stderr


def test_web_config_is_checked(make_config: Callable[..., Path]) -> None:
    ok = load_config(make_config('[web]\nhost = "0.0.0.0"\ntoken = "t"\nread_only = true\n'))
    assert (ok.web.host, ok.web.token, ok.web.read_only) == ("0.0.0.0", "t", True)
    assert ok.web.thumbnails == Path(os.fspath(ok.source)).parent / "var" / "thumbnails"
    for text, message in [
        ("port = 0", "web.port = 0: expected a port from 1 to 65535"),
        ('thumbnails = "library/.thumbs"', "web.thumbnails = "),
        ("page_size = 0", "web.page_size = 0: expected an integer from 1 to 500"),
        ("read_only = 1", "web.read_only = 1: expected true or false"),
    ]:
        with pytest.raises(ConfigError) as err:
            load_config(make_config(f"[web]\n{text}\n", name="bad.toml"))
        assert message in str(err.value), text


PROBE = """
import json, sys
from starlette.testclient import TestClient
from inboxsort.config import load_config
from inboxsort.db import open_database
from inboxsort.model.registry import ModelStore
from inboxsort.web.app import create_app
from pathlib import Path
config = load_config(Path(sys.argv[1]))
db = open_database(config.database.url)
app = create_app(config, db=db, store=ModelStore(config.paths.models, db))
with TestClient(app, base_url="http://127.0.0.1:8470") as c:
    codes = [c.get(p).status_code for p in ("/review", "/models", "/dashboard", "/metrics")]
print(json.dumps([codes, [m for m in ("tensorflow", "keras") if m in sys.modules]]))
"""


def test_the_web_process_never_imports_tensorflow(
    make_config: Callable[..., Path], cli_env: dict[str, str]
) -> None:
    # Why its unit can enforce W^X (MemoryDenyWriteExecute), and why it starts in a moment.
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(make_config())],
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    codes, imported = json.loads(done.stdout.splitlines()[-1])
    assert codes == [200, 200, 200, 200]
    assert imported == []
