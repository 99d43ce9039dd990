"""Full-integer (int8) LiteRT of the shipped model: accuracy, agreement and speed against float.

Calibrated on training images (a representative dataset), evaluated on the 1000 validation
images. Usage: python bench/int8.py --data DIR (train/ and validation/ beside each other).
The product ships `serving.runtime = "litert-int8"` only if int8 is within 0.3 points of the
float model on all 1000 validation images (README, Results).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench.baselines import images_in  # noqa: E402

CALIBRATION = 200  # training images the converter sees to choose the int8 ranges
GOAL_POINTS = 0.3


def int8_flatbuffer(model: object, calibration: np.ndarray) -> bytes:
    """The serving graph converted with full-integer quantization (float in and out)."""
    import tensorflow as tf

    from inboxsort.model.export import serving_model

    def representative() -> object:
        for row in calibration:
            yield [row[None].astype(np.float32)]

    with tempfile.TemporaryDirectory() as folder:
        serving_model(model).export(folder, format="tf_saved_model", verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(folder)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        return bytes(converter.convert())


def throughput(network: object, x: np.ndarray, *, seconds: float = 5.0) -> float:
    """Images per second at batch 1 on one interpreter with every core."""
    predict = network.predict_on_batch  # type: ignore[attr-defined]
    predict(x[:1])
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        predict(x[done % len(x) : done % len(x) + 1])
        done += 1
    return done / (time.perf_counter() - start)


def main() -> int:
    """Convert, evaluate both flatbuffers on validation, print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, required=True, help="train/ + validation/ folder")
    args = parser.parse_args()
    from inboxsort.imageio import load_image
    from inboxsort.model.artifact import load_classifier
    from inboxsort.model.classifier import probabilities
    from inboxsort.model.litert import LiteRTNetwork
    from inboxsort.model.registry import BUILTIN, BUILTIN_DIR

    keras_model = load_classifier(BUILTIN_DIR, version=BUILTIN, runtime="keras")
    size, classes = keras_model.image_size, keras_model.classes
    train = images_in(args.data / "train")
    rng = np.random.default_rng(1337)
    picked = [train[i] for i in rng.choice(len(train), CALIBRATION, replace=False)]
    calibration = np.stack([load_image(p, size) for p, _ in picked])
    files = images_in(args.data / "validation")
    x = np.stack([load_image(p, size) for p, _ in files])
    truth = np.array([classes.index(label) for _, label in files])
    from inboxsort.files import file_sha256
    from inboxsort.trainer.dataset import TEST_SHARE_OF_VALIDATION, hash_fraction

    test = np.array([hash_fraction(file_sha256(p)) < TEST_SHARE_OF_VALIDATION for p, _ in files])
    start = time.perf_counter()
    content = int8_flatbuffer(keras_model.model, calibration)
    convert_seconds = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "int8.tflite"
        path.write_bytes(content)
        int8 = LiteRTNetwork(path, threads=2)
        fp32 = LiteRTNetwork(BUILTIN_DIR / "model.tflite", threads=2)
        p8 = np.concatenate(
            [probabilities(int8.predict_on_batch(x[i : i + 32])) for i in range(0, len(x), 32)]
        )
        p32 = np.concatenate(
            [probabilities(fp32.predict_on_batch(x[i : i + 32])) for i in range(0, len(x), 32)]
        )
        rate8, rate32 = throughput(int8, x), throughput(fp32, x)
    acc8 = float((p8.argmax(1) == truth).mean())
    acc32 = float((p32.argmax(1) == truth).mean())
    same = int((p8.argmax(1) == p32.argmax(1)).sum())
    test8 = float((p8.argmax(1) == truth)[test].mean())
    test32 = float((p32.argmax(1) == truth)[test].mean())
    # From whole counts: 3 images of 1000 are 0.3 points, not 0.30000000000000027.
    lost = int((p32.argmax(1) == truth).sum()) - int((p8.argmax(1) == truth).sum())
    points = round(100 * lost / len(files), 6)
    print(
        f"int8 flatbuffer: {len(content) / 1e6:.1f} MB, converted in {convert_seconds:.0f} s "
        f"({CALIBRATION} calibration images from train/)"
    )
    print(
        f"accuracy on {len(files)} validation images: float {acc32:.4f}, int8 {acc8:.4f} "
        f"({lost} images, {points:.2f} points lost; goal to ship: <= {GOAL_POINTS})"
    )
    print(f"accuracy on the test split ({int(test.sum())}): float {test32:.4f}, int8 {test8:.4f}")
    print(
        f"labels equal to the float flatbuffer: {same}/{len(files)}; largest probability "
        f"difference {float(np.abs(p8 - p32).max()):.3f}"
    )
    print(
        f"batch 1, one interpreter, 2 threads: float {rate32:.1f} images/s, int8 "
        f"{rate8:.1f} images/s ({rate8 / rate32:.2f}x)"
    )
    verdict = "accuracy within the goal" if points <= GOAL_POINTS else "accuracy misses the goal"
    if same < len(files):
        verdict += (
            f"; {len(files) - same} labels differ from float: it cannot pass the agreement gate"
        )
    print(f"verdict: {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
