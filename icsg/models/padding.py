"""Convolutions over a periodic grid: the map of a unit cell continues into its neighbours, so a 3³ kernel at
a face should see the opposite face, not zeros (``icsg.representation.periodic``)."""

from __future__ import annotations

import keras
from keras import layers, ops


@keras.saving.register_keras_serializable(package="icsg")
class CircularPad3D(layers.Layer):
    """Pad (B, n, n, n, C) by ``width`` voxels on every side with the opposite side's voxels."""

    def __init__(self, width: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.width = width

    def call(self, x):
        w = self.width
        for axis in (1, 2, 3):
            n = ops.shape(x)[axis]
            head = ops.take(x, ops.arange(n - w, n), axis=axis)
            tail = ops.take(x, ops.arange(0, w), axis=axis)
            x = ops.concatenate([head, x, tail], axis=axis)
        return x

    def get_config(self):
        return {**super().get_config(), "width": self.width}


def conv3d(x, filters: int, kernel: int, name: str, periodic: bool = False, **kwargs):
    """Conv3D with 'same' output size: zero padding, or circular padding when ``periodic``."""
    if periodic and kernel > 1:
        x = CircularPad3D(kernel // 2, name=f"{name}_wrap")(x)
        return layers.Conv3D(filters, kernel, padding="valid", name=name, **kwargs)(x)
    return layers.Conv3D(filters, kernel, padding="same", name=name, **kwargs)(x)
