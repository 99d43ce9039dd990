"""The recipe's phase 2 keeps BatchNorm in inference mode under Keras 3 (keras-team/keras#20285)."""

from __future__ import annotations

import numpy as np

from inboxsort.trainer.recipe import backbone, build_model, compile_phase


def test_phase_2_fit_leaves_batchnorm_statistics_alone():
    import keras

    model = build_model(image_size=96, num_classes=2, weights=None)
    compile_phase(model, phase=2, learning_rate=1e-3, fine_tune_at=100)
    base = backbone(model)
    norms = [layer for layer in base.layers if isinstance(layer, keras.layers.BatchNormalization)]
    unfrozen = [layer for layer in base.layers[100:] if layer.trainable]
    assert norms and unfrozen, "phase 2 must unfreeze some layers, but no BatchNormalization"
    before = [layer.moving_mean.numpy().copy() for layer in norms]
    pixels = np.random.default_rng(0).integers(0, 256, (4, 96, 96, 3)).astype(np.float32)
    model.fit(pixels, np.ones(4, np.float32), batch_size=4, epochs=1, verbose=0)
    after = [layer.moving_mean.numpy() for layer in norms]
    assert all(np.array_equal(b, a) for b, a in zip(before, after, strict=True))
    assert any(w.trainable for w in base.weights)
