"""TensorFlow's and LiteRT's start-up notices stay off stderr; real errors do not."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest

from inboxsort.model.classifier import Classifier, warm_up
from inboxsort.model.nativelog import RETRACING, ExpectedRetracing, native_notices_dropped

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


def small_classifier() -> Classifier:
    """A new Keras model served as the daemon serves one: same predict_on_batch path, tiny."""
    import keras

    model = keras.Sequential(
        [keras.Input((4, 4, 3)), keras.layers.Flatten(), keras.layers.Dense(1)]
    )
    return Classifier(model, ("cats", "dogs"), image_size=4, version=1)


def test_a_model_swap_sets_off_tensorflows_retracing_warning_and_the_filter_drops_only_it(caplog):
    """Each loaded model traces its own predict graph over the same code: TF counts them all."""
    caplog.set_level(logging.WARNING, logger="tensorflow")

    def load_three() -> list[str]:
        caplog.clear()
        for _ in range(3):
            warm_up(small_classifier(), max_batch=16)  # as the daemon warms up each new model
        return [r.getMessage() for r in caplog.records if r.name == "tensorflow"]

    tensorflow_log = logging.getLogger("tensorflow")
    # An in-process CLI test earlier in the session leaves setup_logging's filter installed.
    installed = [f for f in tensorflow_log.filters if isinstance(f, ExpectedRetracing)]
    for existing in installed:
        tensorflow_log.removeFilter(existing)
    retracing = ExpectedRetracing()
    try:
        assert any(RETRACING in message for message in load_three())  # the cause is real
        tensorflow_log.addFilter(retracing)
        assert not any(RETRACING in message for message in load_three())
        tensorflow_log.warning("another warning")
        assert caplog.records[-1].getMessage() == "another warning"
    finally:
        tensorflow_log.removeFilter(retracing)
        for existing in installed:
            tensorflow_log.addFilter(existing)


@pytest.mark.parametrize("line", NOTICES)
def test_each_known_notice_is_recognised(line: str):
    from inboxsort.model.nativelog import is_notice

    assert is_notice(line)
