"""The transfer-learning recipe of TensorFlow's tutorial: MobileNetV2 base, new head, fine-tune."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from inboxsort.errors import ModelError

BACKBONE = "mobilenet_v2_1.0"
# The sizes for which Keras publishes MobileNetV2 ImageNet weights (alpha 1.0, no top).
WEIGHT_SIZES = (96, 128, 160, 192, 224)


def weights_file(image_size: int) -> str:
    """The file name Keras's cache uses for the no-top MobileNetV2 weights at this size."""
    return f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_{image_size}_no_top.h5"


def keras_cache() -> Path:
    """The folder Keras reads cached weights from ($KERAS_HOME/models or ~/.keras/models)."""
    home = os.environ.get("KERAS_HOME") or str(Path.home() / ".keras")
    return Path(home) / "models"


def _base(image_size: int, *, weights: str | None) -> Any:
    import keras

    if image_size not in WEIGHT_SIZES:
        raise ModelError(
            f"image size {image_size}: MobileNetV2 ImageNet weights exist only for "
            f"{', '.join(map(str, WEIGHT_SIZES))}"
        )
    try:
        return keras.applications.MobileNetV2(
            input_shape=(image_size, image_size, 3), include_top=False, weights=weights
        )
    except Exception as exc:  # a download failure surfaces as many different types
        cached = keras_cache() / weights_file(image_size)
        raise ModelError(
            f"cannot get the MobileNetV2 ImageNet weights for {image_size}x{image_size} "
            f"({type(exc).__name__}: {exc}). Put {weights_file(image_size)} in {cached.parent} "
            f"(or set KERAS_HOME to a folder whose models/ holds it), or allow the download."
        ) from None


def build_model(
    *, image_size: int, num_classes: int, dropout: float = 0.2, weights: str | None = "imagenet"
) -> Any:
    """Raw RGB pixels 0..255 → augmentation → preprocess_input → MobileNetV2 → pool → head."""
    import keras

    if num_classes < 2:
        raise ModelError(f"need at least 2 classes, got {num_classes}")
    base = _base(image_size, weights=weights)
    base.trainable = False
    augment = keras.Sequential(
        [keras.layers.RandomFlip("horizontal"), keras.layers.RandomRotation(0.2)],
        name="augmentation",
    )
    inputs = keras.Input(shape=(image_size, image_size, 3), name="pixels")
    x = augment(inputs)
    # Rescaling(1/127.5, -1) is exactly mobilenet_v2.preprocess_input, as a serializable layer:
    # it lives inside the model so serving feeds raw pixels and cannot drift from training,
    # and unlike a Lambda it loads with safe_mode on.
    x = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="preprocess_input")(x)
    # The tutorial's training=False for the base. Keras 3 overrides it with fit's training=True,
    # so compile_phase also keeps every BatchNormalization layer frozen (see there).
    x = base(x, training=False)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = keras.layers.Dropout(dropout, name="dropout")(x)
    if num_classes == 2:
        outputs = keras.layers.Dense(1, name="logit")(x)
    else:
        outputs = keras.layers.Dense(num_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="inboxsort")


def backbone(model: Any) -> Any:
    """The MobileNetV2 base inside a model built by build_model."""
    for layer in model.layers:
        if layer.name.startswith("mobilenetv2"):
            return layer
    raise ModelError("model has no MobileNetV2 base layer")


def compile_phase(
    model: Any,
    *,
    phase: int,
    learning_rate: float,
    fine_tune_at: int = 100,
    label_smoothing: float = 0.0,
) -> None:
    """Phase 1: frozen base, Adam. Phase 2: unfreeze from fine_tune_at, RMSprop (the tutorial)."""
    import keras

    base = backbone(model)
    if phase == 1:
        base.trainable = False
        optimizer: Any = keras.optimizers.Adam(learning_rate)
    else:
        base.trainable = True
        for layer in base.layers[:fine_tune_at]:
            layer.trainable = False
        # Keras 3 passes fit's training=True through the graph over the base's training=False
        # (keras-team/keras#20285); only a frozen BatchNormalization runs in inference mode.
        # Unfrozen, it normalises with batch statistics while training and moving ones when
        # serving: a one-sided batch of corrections then teaches the opposite of its labels.
        for layer in base.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.trainable = False
        optimizer = keras.optimizers.RMSprop(learning_rate)
    if model.output_shape[-1] == 1:
        loss: Any = keras.losses.BinaryCrossentropy(
            from_logits=True, label_smoothing=label_smoothing
        )
        metrics: list[Any] = [keras.metrics.BinaryAccuracy(threshold=0.0, name="accuracy")]
    else:
        # Integer labels for any number of classes; label smoothing applies to two classes only.
        loss = keras.losses.SparseCategoricalCrossentropy()
        metrics = [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
    model.compile(optimizer=optimizer, loss=loss, metrics=metrics)
