"""The slot head of the readout: where each site of each element sits, from z_read alone, and its loss.

A slot is one site of a crystal named by its element and its rank among that element's sites; the head answers
(cos 2πx, sin 2πx) per fractional axis, so positions wrap around the cell without a seam.

The loss (``chamfer_slot_loss``) pairs each slot with the nearest site of its element and each site with the
nearest slot, plus a penalty on two slots of one element closer than SLOT_SEPARATION_A.
"""

from __future__ import annotations

import keras
from keras import layers, ops

SLOT_SEPARATION_A = 1.0
SLOT_SEPARATION_WEIGHT = 10.0


def ranks(site_Z):
    """(B, S) Z -> (B, S) int: how many earlier sites of the list hold the same element."""
    s = ops.shape(site_Z)[1]
    same = ops.cast(ops.equal(ops.expand_dims(site_Z, 2), ops.expand_dims(site_Z, 1)), "int32")
    earlier = ops.cast(ops.greater(ops.expand_dims(ops.arange(s), 1), ops.expand_dims(ops.arange(s), 0)), "int32")
    return ops.sum(same * ops.expand_dims(earlier, 0), axis=-1)


def build_slot_head(cfg) -> keras.Model:
    """(z_read (B, D), site Z (B, S) in canonical order) -> fractional positions (B, S, 3) in [0, 1).

    ``cfg`` is a ``ReadoutConfig`` (latent_dim, max_sites, embed_dim, max_count, hidden, site_features: the slots
    are then the code's site path read back linearly plus the dense layers' correction)."""
    z_in = keras.Input((cfg.latent_dim,), name="z_read")
    s_in = keras.Input((cfg.max_sites,), dtype="int32", name="site_Z")
    zt = layers.Lambda(lambda t: ops.repeat(ops.expand_dims(t, 1), cfg.max_sites, axis=1), name="s_tile")(z_in)
    e = layers.Embedding(119, cfg.embed_dim, name="s_embed")(s_in)
    rank = layers.Lambda(lambda t: ops.one_hot(ops.minimum(ranks(t), cfg.max_count - 1), cfg.max_count),
                         name="s_rank")(s_in)
    h = layers.Concatenate(name="s_in")([zt, e, rank])
    h = layers.Dense(cfg.hidden, activation="relu", name="s_dense0")(h)
    h = layers.Dense(cfg.hidden, activation="relu", name="s_dense1")(h)
    if cfg.site_features:  # the code's site list read back linearly, the dense part corrects it
        cs = layers.Dense(6, kernel_initializer="zeros", name="s_out")(h)
        cs = layers.Add(name="s_sum")([cs, layers.Reshape((cfg.max_sites, 6), name="s_linear_sites")(
            layers.Dense(cfg.max_sites * 6, use_bias=False, name="s_linear")(z_in))])
    else:
        cs = layers.Dense(6, name="s_out")(h)
    cs = layers.Reshape((cfg.max_sites, 3, 2), name="s_cos_sin")(cs)
    out = layers.Lambda(lambda t: ops.mod(ops.arctan2(t[..., 1], t[..., 0]) / (2 * 3.141592653589793), 1.0),
                        name="s_frac")(cs)
    return keras.Model([z_in, s_in], out, name="slot_head")


def pair_d2(a, b, abc_A):
    """(B, S, S) squared periodic distances (Å², along the cell axes) between fractional positions a_i and b_j."""
    d = ops.expand_dims(a, 2) - ops.expand_dims(b, 1)
    d = (d - ops.round(d)) * ops.expand_dims(ops.expand_dims(abc_A, 1), 1)
    return ops.sum(ops.square(d), -1)


def chamfer_slot_loss(slots, frac, site_Z, abc_A):
    """Mean over occupied sites of the squared distance (Å²) from each slot to the nearest true site of its element
    and from each true site to the nearest slot of its element, plus SLOT_SEPARATION_WEIGHT × (SLOT_SEPARATION_A
    - d)² for every two slots of one element closer than SLOT_SEPARATION_A: without it two slots settle on one site
    (65 % of held-out readings had two atoms within 0.5 Å), and the pairing is one to one only with it."""
    same = ops.logical_and(ops.equal(ops.expand_dims(site_Z, 2), ops.expand_dims(site_Z, 1)),
                           ops.greater(ops.expand_dims(site_Z, 2), 0))
    d2 = ops.where(same, pair_d2(slots, frac, abc_A), 1e6)
    occupied = ops.cast(ops.greater(site_Z, 0), d2.dtype)
    n = ops.maximum(ops.sum(occupied), 1.0)
    chamfer = (ops.sum(ops.min(d2, 2) * occupied) + ops.sum(ops.min(d2, 1) * occupied)) / (2 * n)
    others = ops.logical_and(same, ops.logical_not(ops.cast(ops.eye(ops.shape(site_Z)[1]), "bool")))
    gap = ops.relu(SLOT_SEPARATION_A - ops.sqrt(pair_d2(slots, slots, abc_A) + 1e-12))
    return chamfer + SLOT_SEPARATION_WEIGHT * ops.sum(ops.where(others, ops.square(gap), 0.0)) / n

