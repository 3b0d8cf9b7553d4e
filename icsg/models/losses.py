"""Losses and metrics of the UNet (paper eq. 7).

    L_U = Σ_v w̄[S_v] CE(S_v, S'_v) / Σ_v w̄[S_v]  +  BCE(S_B, S'_B)

The class weights w̄ are inversely proportional to each class's voxel count in the
training set, with the background weight 0 (the paper's intent; the original code
passed the number 95 instead of the vector, so its weights were never applied).
"""

from __future__ import annotations

import numpy as np
import keras
from keras import ops


def class_weights(voxel_counts: np.ndarray) -> np.ndarray:
    """w_k ∝ 1 / count_k, normalised to mean 1 over present classes; w_0 = 0; absent classes 0."""
    counts = np.asarray(voxel_counts, dtype=np.float64)
    w = np.zeros_like(counts)
    present = counts > 0
    w[present] = 1.0 / counts[present]
    w[0] = 0.0
    nz = w > 0
    if nz.any():
        w[nz] /= w[nz].mean()
    return w.astype(np.float32)


@keras.saving.register_keras_serializable(package="icsg")
class WeightedSpeciesCrossEntropy(keras.losses.Loss):
    """Class-weighted sparse categorical cross-entropy over voxels (background weight 0)."""

    def __init__(self, weights, name: str = "weighted_species_ce", **kwargs):
        super().__init__(name=name, **kwargs)
        self.weights = [float(v) for v in np.asarray(weights).ravel()]

    def call(self, y_true, y_pred):
        y_true = ops.cast(y_true, "int32")
        w = ops.take(ops.convert_to_tensor(self.weights, dtype=y_pred.dtype), y_true)
        ce = keras.losses.sparse_categorical_crossentropy(y_true, y_pred)
        axes = tuple(range(1, len(ce.shape)))
        return ops.sum(w * ce, axis=axes) / (ops.sum(w, axis=axes) + 1e-6)

    def get_config(self):
        return {**super().get_config(), "weights": self.weights}


@keras.saving.register_keras_serializable(package="icsg")
class NonzeroRecall(keras.metrics.Metric):
    """Per-voxel recall of the non-background classes: P(argmax = S | S != 0)."""

    def __init__(self, name: str = "nonzero_recall", **kwargs):
        super().__init__(name=name, **kwargs)
        self.hits = self.add_variable(shape=(), initializer="zeros", name="hits")
        self.total = self.add_variable(shape=(), initializer="zeros", name="total")

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true = ops.cast(y_true, "int32")
        pred = ops.cast(ops.argmax(y_pred, axis=-1), "int32")
        nz = ops.cast(y_true > 0, "float32")
        self.hits.assign_add(ops.sum(nz * ops.cast(pred == y_true, "float32")))
        self.total.assign_add(ops.sum(nz))

    def result(self):
        return self.hits / ops.maximum(self.total, 1.0)

    def reset_state(self):
        self.hits.assign(0.0)
        self.total.assign(0.0)
