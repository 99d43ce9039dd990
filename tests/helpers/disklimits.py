"""Real storage conditions for tests: a folder that refuses writes (also for root), and a small
tmpfs that can be filled up and freed again.

Each one is made with what really refuses writes here; where no mechanism is available (no
root for a mount, no `chattr`), the test is skipped with the reason the system gave.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


def refuses_writes(path: Path) -> bool:
    """Whether writing fails: a new file in a folder, an append to a file (whoever the user)."""
    try:
        if path.is_dir():
            probe = path / ".write-probe"
            probe.write_bytes(b"")
            probe.unlink()
        else:
            with open(path, "ab"):
                pass
    except OSError:
        return True
    return False


def _run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, check=False)


def _why(result: subprocess.CompletedProcess[str]) -> str:
    return (result.stderr or result.stdout).strip() or f"exit {result.returncode}"


@contextmanager
def _mode_bits(paths: tuple[Path, ...]) -> Iterator[str]:
    modes = {path: path.stat().st_mode & 0o7777 for path in paths}
    for path in paths:
        path.chmod(0o500 if path.is_dir() else 0o400)
    try:
        yield "mode bits"
    finally:
        for path, mode in modes.items():
            path.chmod(mode)


@contextmanager
def _read_only_binds(paths: tuple[Path, ...], tried: list[str]) -> Iterator[bool]:
    """Bind-mount each path onto itself read-only; yields whether every one refuses writes."""
    mounted: list[Path] = []
    try:
        for path in paths:
            bound = _run("mount", "--bind", path, path)
            if bound.returncode != 0:
                tried.append(f"bind mount: {_why(bound)}")
                break
            mounted.append(path)
            ro = _run("mount", "-o", "remount,bind,ro", path, path)
            if ro.returncode != 0:
                tried.append(f"read-only remount: {_why(ro)}")
                break
        else:
            refused = all(refuses_writes(path) for path in paths)
            if not refused:
                tried.append("read-only bind mount: writes still allowed")
            yield refused
            return
        yield False
    finally:
        for path in reversed(mounted):
            _unmount(path)


@contextmanager
def refusing_writes(*paths: Path) -> Iterator[str]:
    """Make each path (a file, or a folder: no new files in it) refuse writes; yields how.

    Not root: mode bits. Root ignores those: `chattr +i` where the filesystem supports it,
    else read-only bind mounts. Skips the test where neither works.
    """
    if os.geteuid() != 0:
        with _mode_bits(paths) as how:
            yield how
        return
    tried: list[str] = []
    if shutil.which("chattr") is None:
        tried.append("chattr: not installed")
    else:
        made = _run("chattr", "+i", *paths)
        if made.returncode == 0 and all(refuses_writes(path) for path in paths):
            try:
                yield "chattr +i"
            finally:
                _run("chattr", "-i", *paths)
            return
        _run("chattr", "-i", *paths)
        tried.append(f"chattr +i: {_why(made) if made.returncode else 'writes still allowed'}")
    with _read_only_binds(paths, tried) as refused:
        if refused:
            yield "read-only bind mount"
            return
    pytest.skip("cannot make a path refuse writes for root here: " + "; ".join(tried))


def _unmount(folder: Path) -> None:
    if _run("umount", folder).returncode != 0:
        _run("umount", "-l", folder)  # still busy (a process that is going away): detach it


@contextmanager
def small_tmpfs(folder: Path, size: str) -> Iterator[Path]:
    """Mount a tmpfs of `size` (mount's syntax: "4m") on `folder`; skip where refused."""
    folder.mkdir(parents=True, exist_ok=True)
    mounted = _run("mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", folder)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs (needs root): {_why(mounted)}")
    try:
        yield folder
    finally:
        _unmount(folder)


def fill_up(folder: Path, name: str = "filler") -> Path:
    """Write a file into `folder` until its filesystem has no space left; returns the file."""
    path = folder / name
    chunk = b"\0" * 4096
    with open(path, "wb", buffering=0) as out:
        try:
            while True:
                out.write(chunk)
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
        try:  # the last partial block too
            while True:
                out.write(b"\0")
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
    return path
