"""Keeping TensorFlow's and LiteRT's start-up chatter off stderr, and nothing else.

TensorFlow (2.19 and later) writes its native start-up lines before absl's logging is set up,
so TF_CPP_MIN_LOG_LEVEL does not reach them (tensorflow/tensorflow#100442): "oneDNN custom
operations are on", "Could not find cuda drivers", and on a machine without a GPU
`E0000 ... failed call to cuInit: ... CUDA error`, which reads like a failure. LiteRT prints
"INFO: Created TensorFlow Lite XNNPACK delegate for CPU." once per process. Only the file
descriptor sees these lines, so the two moments that print them (TensorFlow's import, the first
interpreter) run with descriptor 2 pointed at a file; afterwards every line that is not such a
known notice is written to the real stderr, so a real error still shows.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
import threading
from collections.abc import Iterator
from typing import Any

# Native notices that say nothing is wrong. An E line survives unless it is about CUDA.
_NOTICE = re.compile(
    r"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|[IW]\d{4} [\d:.]+ +\d+ \S+:\d+\] "  # absl INFO and WARNING lines
    r"|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IW] \S+:\d+\] "  # TensorFlow's older format
    r"|(E\d{4} [\d:.]+ |\d{4}-\d\d-\d\d [\d:.]+: E ).*(cuInit|CUDA|cuda|cuDNN|cuBLAS|cuFFT)"
    r"|To enable the following instructions: .*rebuild TensorFlow"
    r"|INFO: Created TensorFlow Lite XNNPACK delegate for CPU\."
)
_LOCK = threading.Lock()
# The Python warning TensorFlow logs when the predict graph of a newly loaded model is traced.
RETRACING = "triggered tf.function retracing"


def is_notice(line: str) -> bool:
    """Whether a native stderr line is one of the known start-up notices."""
    return _NOTICE.match(line) is not None


@contextlib.contextmanager
def native_notices_dropped() -> Iterator[None]:
    """Run the block with descriptor 2 captured; write back all but the known notices."""
    with _LOCK:
        try:
            sys.stderr.flush()
            saved = os.dup(2)
        except (OSError, ValueError):  # no stderr at all: nothing to keep clean
            yield
            return
        with tempfile.TemporaryFile() as capture:
            os.dup2(capture.fileno(), 2)
            try:
                yield
            finally:
                # Python's own writes meanwhile (another thread's log line) went there too.
                with contextlib.suppress(OSError, ValueError):
                    sys.stderr.flush()
                os.dup2(saved, 2)
                os.close(saved)
                capture.seek(0)
                _write_back(capture.read())


def _write_back(captured: bytes) -> None:
    kept = b"".join(
        line
        for line in captured.splitlines(keepends=True)
        if not is_notice(line.decode("utf-8", "replace"))
    )
    while kept:
        try:
            written = os.write(2, kept)
        except OSError:
            return
        kept = kept[written:]


def import_tensorflow() -> Any:
    """TensorFlow, imported once with its native start-up notices dropped."""
    if "tensorflow" not in sys.modules:
        with native_notices_dropped():
            import tensorflow as tf

            # cuInit's complaint comes with the first look at the devices, not the import.
            # Listing physical devices leaves the runtime's thread pools unset (share_cores).
            tf.config.list_physical_devices()
    return sys.modules["tensorflow"]


class ExpectedRetracing(logging.Filter):
    """Drops TensorFlow's retracing warning, which every model swap sets off by design.

    Keras builds each model's predict function as a new tf.function over the same Python code,
    and TensorFlow counts traces per code object: every model the daemon loads traces its own
    graph (at batch 1, then once more for any batch size), so after two swaps the count passes
    TensorFlow's threshold although nothing retraces in serving.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """False for the retracing warning, True for everything else."""
        return RETRACING not in record.getMessage()
