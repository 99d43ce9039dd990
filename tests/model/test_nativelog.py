"""TensorFlow's and LiteRT's start-up notices stay off stderr; real errors do not."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from inboxsort.model.nativelog import native_notices_dropped

# Lines TensorFlow 2.21 and LiteRT printed on this machine (no GPU), as they came.
NOTICES = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1796015066.971071   25582 port.cc:153] oneDNN custom operations are on. You may"
    " see slightly different numerical results.",
    "I0000 00:00:1796015066.971510   25582 cudart_stub.cc:31] Could not find cuda drivers on your"
    " machine, GPU will not be used.",
    "I0000 00:00:1796015110.548879   29889 cpu_feature_guard.cc:227] This TensorFlow binary is"
    " optimized to use available CPU instructions in performance-critical operations.",
    "To enable the following instructions: AVX2 AVX512F FMA, in other operations, rebuild"
    " TensorFlow with the appropriate compiler flags.",
    "E0000 00:00:1796015195.843395   32292 cuda_platform.cc:52] failed call to cuInit: INTERNAL:"
    " CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)",
    "2025-09-17 14:44:05.157831: I external/local_xla/xla/tsl/cuda/cudart_stub.cc:32] Could not"
    " find cuda drivers on your machine, GPU will not be used.",
    "INFO: Created TensorFlow Lite XNNPACK delegate for CPU.",
]
KEPT = [
    "E0000 00:00:1796015195.843395   32292 op_kernel.cc:1830] OP_REQUIRES failed: out of memory",
    "Traceback (most recent call last):",
    "a line a library printed",
]


def test_notices_are_dropped_and_everything_else_is_written_back(capfd):
    with native_notices_dropped():
        os.write(2, "\n".join([*NOTICES[:3], KEPT[0], *NOTICES[3:], *KEPT[1:]]).encode() + b"\n")
    assert capfd.readouterr().err.splitlines() == KEPT


def test_importing_tensorflow_prints_nothing(cli_env):
    """tensorflow/tensorflow#100442: TF_CPP_MIN_LOG_LEVEL does not reach these lines."""
    env = {k: v for k, v in cli_env.items() if not k.startswith(("TF_CPP", "ABSL", "GLOG"))}
    code = (
        "from inboxsort.model.nativelog import import_tensorflow\n"
        "tf = import_tensorflow()\n"
        "print(tf.constant(2).numpy() * 21)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "42\n", "")


# Run in a fresh interpreter: TensorFlow counts traces per process, and other tests (and
# setup_logging's filter) change what an in-process run of this would see.
_SWAP_SCRIPT = """
import logging
import keras
from inboxsort.model.classifier import Classifier, warm_up
from inboxsort.model.nativelog import RETRACING, ExpectedRetracing

seen = []
class Catch(logging.Handler):
    def emit(self, record):
        seen.append(record.getMessage())
tensorflow_log = logging.getLogger("tensorflow")
tensorflow_log.addHandler(Catch())

def load_three():
    seen.clear()
    for _ in range(3):  # as the daemon warms up each new model
        model = keras.Sequential(
            [keras.Input((4, 4, 3)), keras.layers.Flatten(), keras.layers.Dense(1)]
        )
        warm_up(Classifier(model, ("cats", "dogs"), image_size=4, version=1), max_batch=16)
    return any(RETRACING in m for m in seen)

print("unfiltered", load_three())
tensorflow_log.addFilter(ExpectedRetracing())
print("filtered", load_three())
tensorflow_log.warning("another warning")
print("other kept", seen[-1:] == ["another warning"])
"""


def test_a_model_swap_sets_off_tensorflows_retracing_warning_and_the_filter_drops_only_it(
    cli_env,
):
    """Each loaded model traces its own predict graph over the same code: TF counts them all."""
    result = subprocess.run(
        [sys.executable, "-c", _SWAP_SCRIPT],
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["unfiltered True", "filtered False", "other kept True"]


@pytest.mark.parametrize("line", NOTICES)
def test_each_known_notice_is_recognised(line: str):
    from inboxsort.model.nativelog import is_notice

    assert is_notice(line)
