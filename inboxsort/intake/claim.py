"""Intake: arrivals → ignore → settle → claim once → read and decode on a small thread pool.

Memory stays bounded for a flood of any size: a claimed image holds one of `queue_size` slots
from the moment it is claimed until the filer is done with it, and intake waits for a free
slot before it reads another file. Paths waiting to settle cost a few bytes each.
"""

from __future__ import annotations

import logging
import queue
import stat
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from inboxsort.backoff import backoff_delay
from inboxsort.config import BatchConfig, WatchConfig
from inboxsort.db import utcnow
from inboxsort.dirfd import PathChanged, lstat_under
from inboxsort.errors import StoreError
from inboxsort.files import Ignore, ScanErrors, loggable, scan
from inboxsort.intake.decode import Retry, Undecodable, read_and_decode
from inboxsort.intake.ledger import Ledger
from inboxsort.intake.records import Arrival, Claim, Decoded
from inboxsort.intake.settle import SettleTracker
from inboxsort.model.live import LiveModel

log = logging.getLogger(__name__)

_MAX_ATTEMPTS = 5
_IN_USE_DELAY = 1.0
# Another look after a transient error or a file that changed under the reader: waits double.
_RETRY_FIRST, _RETRY_CAP = 0.5, 60.0


@dataclass(frozen=True)
class _Hold:
    """A file that did not decode, kept back while unchanged until `until` (intake's clock)."""

    path: Path
    until: float
    size: int
    mtime_ns: int


def retry_delay(attempt: int) -> float:
    """Seconds before intake looks at a file again after its `attempt`-th failed try."""
    return backoff_delay(attempt, first=_RETRY_FIRST, cap=_RETRY_CAP)


class Intake:
    """The intake stage; `run` is its thread, `ready` its output, `done` releases images."""

    def __init__(
        self,
        *,
        root: Path,
        watch: WatchConfig,
        batch: BatchConfig,
        model: LiveModel,
        ledger: Ledger | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.root = root
        # With a ledger, claims go through the database: daemons sharing the inbox (a fleet)
        # each get other files. Without, this daemon is the inbox's only one (its lock file).
        self._ledger = ledger
        self.watch = watch
        self.arrivals: queue.SimpleQueue[Arrival] = queue.SimpleQueue()
        self.ready: queue.SimpleQueue[Decoded] = queue.SimpleQueue()
        self._holds: queue.SimpleQueue[_Hold] = queue.SimpleQueue()
        self._ignore = Ignore(root, watch.ignore)
        # Every look goes through the inbox's folders by descriptor: no symbolic link is
        # followed and no path is too long (deeper than PATH_MAX) to look at.
        self._settle = SettleTracker(
            watch.settle_seconds,
            writer_timeout=watch.writer_timeout_seconds,
            stat=lambda path: lstat_under(root, path),
        )
        self._scan_errors = ScanErrors()
        self._model = model
        self._clock = clock
        self._slots = threading.BoundedSemaphore(batch.queue_size)
        self._pool = ThreadPoolExecutor(batch.decode_workers, thread_name_prefix="decode")
        self._lock = threading.Lock()
        self._by_inode: dict[tuple[int, int], Path] = {}
        self._by_path: dict[Path, tuple[int, int]] = {}
        self._keys: dict[tuple[int, int], str] = {}  # the database claim of each local one
        self._attempts: dict[Path, int] = {}
        self._idle = threading.Event()

    # -- called from other threads -------------------------------------------------------

    def in_flight(self) -> int:
        """Images claimed and not yet filed."""
        with self._lock:
            return len(self._by_inode)

    def waiting(self) -> int:
        """Paths seen but not yet settled (an estimate, read without the intake's lock)."""
        return len(self._settle)

    def idle(self) -> bool:
        """True when nothing is waiting, settling, decoding, batched or being filed."""
        return self._idle.is_set()

    def done(self, items: Iterable[Decoded], *, retry: Iterable[Decoded] = ()) -> None:
        """Release a batch's images; those also in `retry` are looked at again after a pause."""
        again = {item.claim.path for item in retry}
        with self._lock:
            # Re-noted before their claims are released, so idle() never sees them as gone.
            for path in again:
                count = self._attempts.get(path, 0) + 1
                self._attempts[path] = count
                self.arrivals.put(Arrival(path, delay=retry_delay(count)))
            keys = []
            for item in items:
                if item.claim.path not in again:
                    self._attempts.pop(item.claim.path, None)
                keys.append(self._release(item.claim))
        # Outside the lock: the database round trip must not hold up the intake thread.
        self._release_in_database([k for k in keys if k is not None])

    # -- the intake thread -----------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Loop until `stop`: settle arrivals, claim ready files, hand them to the decoders."""
        try:
            while not stop.is_set():
                now = self._clock()
                wait = self._settle.next_check(now)
                self._take_arrivals(timeout=0.2 if wait is None else min(wait, 0.2))
                self._take_holds()
                for path in self._settle.poll(self._clock()):
                    if not self._claim(path, stop):
                        break
                with self._lock:
                    self._idle_update()
        finally:
            # Decoded images not yet filed stay in the inbox with no row: the next start
            # finds them again. Waiting for running decodes keeps shutdown orderly.
            self._pool.shutdown(wait=True, cancel_futures=True)

    def _idle_update(self) -> None:
        if (
            self.arrivals.empty()
            and self._holds.empty()
            and not self._settle
            and not self._by_inode
        ):
            self._idle.set()
        else:
            self._idle.clear()

    def _take_arrivals(self, *, timeout: float) -> None:
        try:
            arrival = self.arrivals.get(timeout=timeout)
        except queue.Empty:
            return
        while True:
            self._note(arrival)
            try:
                arrival = self.arrivals.get_nowait()
            except queue.Empty:
                return

    def _take_holds(self) -> None:
        while True:
            try:
                held = self._holds.get_nowait()
            except queue.Empty:
                return
            self._settle.hold(
                held.path, self._clock(), until=held.until, size=held.size, mtime_ns=held.mtime_ns
            )

    def _note(self, arrival: Arrival) -> None:
        if self._ignore(arrival.path):
            return
        if arrival.is_dir:
            recursive = self.watch.recursive
            if arrival.path != self.root and not recursive:
                return
            found = scan(
                arrival.path, recursive=recursive, ignore=self._ignore, on_error=self._scan_errors
            )
            for path in found:
                self._settle.note(path, self._clock())
            return
        self._settle.note(
            arrival.path,
            self._clock(),
            closed=arrival.closed,
            writing=arrival.writing,
            delay=arrival.delay,
        )

    def _claim(self, path: Path, stop: threading.Event) -> bool:
        """Claim one settled file; False when stopping (the file stays for the next start)."""
        try:
            st = lstat_under(self.root, path)
        except FileNotFoundError:
            return True
        except PathChanged as exc:
            log.warning("skipping %s: %s", loggable(path), exc.strerror)
            return True
        except OSError as exc:
            log.warning(
                "cannot look at %s: %s (will retry at the next rescan)", loggable(path), exc
            )
            return True
        if stat.S_ISDIR(st.st_mode):
            self._note(Arrival(path, is_dir=True))
            return True
        key = (st.st_dev, st.st_ino)
        with self._lock:
            if key in self._by_inode:
                return True  # already being processed: a repeated event, or a rescan
            if path in self._by_path:
                # A new file took the name of one still being filed: look again afterwards.
                self._settle.note(path, self._clock(), delay=_IN_USE_DELAY)
                return True
        while not self._slots.acquire(timeout=0.2):
            if stop.is_set():
                return False
        claim = Claim.from_stat(path, st, received_at=utcnow())
        fleet_key = None
        if self._ledger is not None:
            fleet_key = self._claim_in_database(claim, self._ledger)
            if fleet_key is None:
                self._slots.release()
                return True
        with self._lock:
            self._by_inode[key] = path
            self._by_path[path] = key
            if fleet_key is not None:
                self._keys[key] = fleet_key
        self._pool.submit(self._decode, claim)
        return True

    def _claim_in_database(self, claim: Claim, ledger: Ledger) -> str | None:
        """The claim's key once this node holds it; None when another node does, or the file
        left meanwhile (that node filed it: a claim goes only after its file has gone)."""
        fleet_key = claim.fleet_key(self.root)
        try:
            claimed = ledger.claim(fleet_key, claim.path)
        except StoreError as exc:
            # The next rescan looks again; the file stays where it is.
            log.warning("cannot claim %s: %s", loggable(claim.path), exc)
            return None
        if not claimed:
            # Another node has it: it files it, or a takeover makes it free again (and a
            # rescan follows). Nothing to remember here.
            log.debug("%s: claimed by another node", loggable(claim.path))
            return None
        try:
            again = lstat_under(self.root, claim.path)
        except OSError:
            again = None
        if again is None or (again.st_dev, again.st_ino, again.st_size, again.st_mtime_ns) != (
            claim.device,
            claim.inode,
            claim.size,
            claim.mtime_ns,
        ):
            self._release_in_database([fleet_key])
            if again is not None:
                self._settle.note(claim.path, self._clock())  # changed: settle it again
            return None
        return fleet_key

    def _release_in_database(self, keys: list[str]) -> None:
        if not keys or self._ledger is None:
            return
        try:
            self._ledger.release(keys)
        except StoreError as exc:
            # A claim left behind is dropped when this node restarts or is taken over.
            log.warning("cannot release %d claim(s): %s", len(keys), exc)

    def _decode(self, claim: Claim) -> None:
        try:
            result = read_and_decode(claim, self._model.image_size(), root=self.root)
        except Exception as exc:  # the edge for one image: record it, never kill the pool
            log.exception("unexpected error reading %s", loggable(claim.path))
            result = Decoded(claim, None, None, f"unexpected error: {type(exc).__name__}: {exc}")
        if isinstance(result, Undecodable):
            result = self._hold_or_fail(result.decoded)
            if result is None:
                return  # kept back for its writer, and released
        if isinstance(result, Retry):
            result = self._retry_or_fail(result)
        if isinstance(result, Decoded):
            self.ready.put(result)
            return
        with self._lock:
            fleet_key = self._release(claim)
        self._release_in_database([fleet_key] if fleet_key else [])

    def _hold_or_fail(self, decoded: Decoded) -> Decoded | None:
        """A file that does not decode fails only once unchanged for writer_timeout_seconds.

        A writer that appends and closes again and again (a resumed download, a slow copy in
        chunks) would otherwise leave a fragment in failed/ at each close, and the whole image
        nowhere. Until then the file waits in the inbox; written or changed, it is looked at
        again at once, so only its final version is filed. Quiet time counts from its mtime:
        an old broken file (the start-up scan) fails at once.
        """
        claim = decoded.claim
        timeout = self.watch.writer_timeout_seconds
        quiet = time.time() - claim.mtime_ns / 1e9
        if timeout <= 0 or quiet >= timeout:
            return decoded
        wait = min(timeout, timeout - quiet)
        log.info(
            "%s: %s; waiting until it has been unchanged for %.0f s before failing it, "
            "in case its writer is not done",
            loggable(claim.path),
            decoded.error,
            timeout,
        )
        with self._lock:
            # Kept back before the claim is released, so idle() never sees it as gone.
            self._holds.put(_Hold(claim.path, self._clock() + wait, claim.size, claim.mtime_ns))
            fleet_key = self._release(claim)
        self._release_in_database([fleet_key] if fleet_key else [])
        return None

    def _retry_or_fail(self, retry: Retry) -> Decoded | None:
        path = retry.claim.path
        with self._lock:
            count = self._attempts.get(path, 0) + 1
            self._attempts[path] = count
            if retry.transient_error and count >= _MAX_ATTEMPTS:
                return Decoded(retry.claim, None, None, f"{retry.reason} (after {count} tries)")
            log.debug("%s: %s; trying again later", loggable(path), retry.reason)
            # Re-noted before the claim is released, so idle() never sees it as gone.
            self.arrivals.put(Arrival(path, delay=retry_delay(count)))
            fleet_key = self._release(retry.claim)
        self._release_in_database([fleet_key] if fleet_key else [])
        return None

    def _release(self, claim: Claim) -> str | None:
        """Forget a claim (caller holds the lock) and free its slot; returns its database key,
        for the caller to release once it has let go of the lock."""
        key = (claim.device, claim.inode)
        if self._by_inode.pop(key, None) is None:
            return None
        self._by_path.pop(claim.path, None)
        self._slots.release()
        return self._keys.pop(key, None)
