"""3-D UNet: density map -> species segmentation + occupancy (paper eq. 6).

    S', S'_B = UNet(M')

Input M (B, n, n, n, 1), the normalised density of eq. 1. The first layer also
sees log(M + ε): the peak height Z/r^3 that identifies a species spans two orders
of magnitude across the periodic table, and a log channel makes that range linear
for a small network. Outputs: ``species`` softmax over K + 1 classes (background
first) and ``occupancy`` sigmoid, both (B, n, n, n, ·).

Sized for CPUs: the defaults (base 12 filters, 3 levels, 57 classes) give 0.82 M parameters;
the paper's 31 M network is out of reach on 2 cores. ``periodic``: circular padding, for maps over a unit
cell (any lattice). The encoder layers are named
``enc_0 .. enc_{depth-1}`` and ``bottleneck``: those are the DFC feature layers.
"""

from __future__ import annotations


import keras
from keras import layers, ops
from icsg.models.config import UNetConfig  # noqa: F401  (re-exported)
from icsg.models.padding import conv3d


@keras.saving.register_keras_serializable(package="icsg")
class LogChannel(layers.Layer):
    """Append log(x + eps) to the channels of x."""

    def __init__(self, eps: float = 1e-3, **kwargs):
        super().__init__(**kwargs)
        self.eps = eps

    def call(self, x):
        return ops.concatenate([x, ops.log(ops.maximum(x, 0.0) + self.eps)], axis=-1)

    def get_config(self):
        return {**super().get_config(), "eps": self.eps}


def _block(x, filters: int, name: str, periodic: bool = False):
    for i in range(2):
        x = conv3d(x, filters, 3, f"{name}_conv{i}", periodic, use_bias=False)
        x = layers.BatchNormalization(name=f"{name}_bn{i}")(x)
        x = layers.Activation("relu", name=name if i == 1 else f"{name}_act{i}")(x)
    return x


def build_unet(cfg: UNetConfig) -> keras.Model:
    inp = keras.Input((None, None, None, 1), name="density")  # any size divisible by 2**depth
    x = LogChannel(cfg.log_eps, name="log_channel")(inp)
    skips = []
    for level in range(cfg.depth):
        x = _block(x, cfg.base_filters * 2**level, f"enc_{level}", cfg.periodic)
        skips.append(x)
        x = layers.MaxPooling3D(2, name=f"pool_{level}")(x)
    x = _block(x, cfg.base_filters * 2**cfg.depth, "bottleneck", cfg.periodic)
    for level in reversed(range(cfg.depth)):
        x = layers.UpSampling3D(2, name=f"up_{level}")(x)
        x = layers.Concatenate(name=f"skip_{level}")([x, skips[level]])
        x = _block(x, cfg.base_filters * 2**level, f"dec_{level}", cfg.periodic)
    species = layers.Conv3D(cfg.n_classes, 1, activation="softmax", name="species")(x)
    occupancy = layers.Conv3D(1, 1, activation="sigmoid", name="occupancy")(x)
    return keras.Model(inp, {"species": species, "occupancy": occupancy}, name="unet")


def feature_extractor(unet: keras.Model, depth: int | None = None) -> keras.Model:
    """The UNet's encoder activations (DFC perceptual features φ_p), frozen."""
    names = [l.name for l in unet.layers if l.name.startswith("enc_") and "_" not in l.name[4:]]
    names.append("bottleneck")
    if depth is not None:
        names = names[:depth]
    outs = [unet.get_layer(nm).output for nm in names]
    fx = keras.Model(unet.input, outs, name="unet_features")
    fx.trainable = False
    return fx
