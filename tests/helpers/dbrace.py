"""Several first opens of one database at once, as a daemon and CLIs starting together."""

from __future__ import annotations

import threading

from inboxsort.db import open_database


def concurrent_opens(url: str, *, count: int = 4) -> list[BaseException]:
    """Open and close `url` from `count` threads released together; return what they raised."""
    barrier = threading.Barrier(count)
    errors: list[BaseException] = []

    def opener() -> None:
        barrier.wait()
        try:
            open_database(url).close()
        except BaseException as exc:  # returned to the test, which asserts on it
            errors.append(exc)

    threads = [threading.Thread(target=opener) for _ in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors
