"""iMatGen-style generator (Noh et al., Matter 1, 1370 (2019)) on the iMatGen image encoding.

Three stages, as in the paper and its supplement:

1. a cell autoencoder: cell image (m^3, eq. 1) -> ``cell_latent`` numbers;
2. one basis autoencoder shared by every element: basis image (n^3, eq. 3) -> ``basis_latent``
   numbers (the paper trains one per element of V-O; with the 50+ elements of perov_5 a
   per-element model would see a few hundred images each, so one shared model);
3. a materials VAE over the *crystal code*: the stacked latents
       x = [cell code | slot_1 | ... | slot_S],  slot_k = [basis code, element descriptor, present]
   with slots ordered by Pauling electronegativity (A, B, X for a perovskite) and the element
   descriptor (Z, Pauling χ, ionic radius Å) standardised, decoded back to the nearest element
   of the training set. A classification head on the latent predicts whether the property
   (heat_ref / formation energy) lies below the training median (the paper's stability head).

Images are in [0, 1], so the autoencoders end in a sigmoid and train on binary cross-entropy.
No BatchNorm: the models are small and inference then needs no statistics recalibration.
"""

from __future__ import annotations


import numpy as np

import icsg  # noqa: F401
import keras
from keras import layers, ops

from icsg.models.config import ImatgenModelConfig  # noqa: F401  (re-exported)


def build_image_autoencoder(size: int, latent: int, filters: tuple, name: str):
    """(encoder, decoder, autoencoder) for (size^3, 1) images in [0, 1]."""
    x_in = keras.Input((size, size, size, 1), name=f"{name}_image")
    x = x_in
    for i, f in enumerate(filters):
        x = layers.Conv3D(f, 3, strides=2, padding="same", name=f"{name}_enc{i}")(x)
        x = layers.LeakyReLU(0.2, name=f"{name}_enc{i}_act")(x)
    x = layers.Flatten(name=f"{name}_flat")(x)
    code = layers.Dense(latent, name=f"{name}_code")(x)
    encoder = keras.Model(x_in, code, name=f"{name}_encoder")

    m = size // 2 ** len(filters)
    z_in = keras.Input((latent,), name=f"{name}_z")
    y = layers.Dense(m**3 * filters[-1], name=f"{name}_dec_dense")(z_in)
    y = layers.LeakyReLU(0.2, name=f"{name}_dec_dense_act")(y)
    y = layers.Reshape((m, m, m, filters[-1]), name=f"{name}_dec_reshape")(y)
    for i, f in enumerate(reversed(filters)):
        y = layers.Conv3DTranspose(f, 3, strides=2, padding="same", name=f"{name}_dec{i}")(y)
        y = layers.LeakyReLU(0.2, name=f"{name}_dec{i}_act")(y)
    out = layers.Conv3D(1, 3, padding="same", activation="sigmoid", name=f"{name}_out")(y)
    decoder = keras.Model(z_in, out, name=f"{name}_decoder")
    ae = keras.Model(x_in, decoder(encoder(x_in)), name=f"{name}_autoencoder")
    return encoder, decoder, ae


def build_cell_autoencoder(cfg: ImatgenModelConfig):
    return build_image_autoencoder(cfg.cell_size, cfg.cell_latent, cfg.filters[:2], "cell")


def build_basis_autoencoder(cfg: ImatgenModelConfig):
    return build_image_autoencoder(cfg.basis_size, cfg.basis_latent, cfg.filters, "basis")


@keras.saving.register_keras_serializable(package="icsg")
class MaterialsVAE(keras.Model):
    """VAE over standardised crystal codes with a property-classification head on z.

        L = MSE(x, x') + β·KL(q(z|x) || N(0, I)) + γ·BCE(y, h(μ)),   y = property < median

    Fit with ``x = codes`` and ``y = concat[codes, label]`` (the label rides in the last column).
    """

    def __init__(self, cfg: dict, **kwargs):
        super().__init__(**kwargs)
        self.cfg = ImatgenModelConfig.from_dict(cfg) if isinstance(cfg, dict) else cfg
        c = self.cfg
        x_in = keras.Input((c.code_dim,), name="code")
        h = layers.Dense(c.hidden, activation="relu", name="q_h0")(x_in)
        h = layers.Dense(c.hidden // 2, activation="relu", name="q_h1")(h)
        mu = layers.Dense(c.latent_dim, name="mu")(h)
        logvar = layers.Dense(c.latent_dim, kernel_initializer="zeros", name="logvar")(h)
        self.encoder = keras.Model(x_in, [mu, logvar], name="mvae_encoder")
        z_in = keras.Input((c.latent_dim,), name="z")
        g = layers.Dense(c.hidden // 2, activation="relu", name="p_h0")(z_in)
        g = layers.Dense(c.hidden, activation="relu", name="p_h1")(g)
        self.decoder = keras.Model(z_in, layers.Dense(c.code_dim, name="code_out")(g), name="mvae_decoder")
        zc = keras.Input((c.latent_dim,), name="z_head")
        self.head = keras.Model(zc, layers.Dense(1, name="below_median_logit")(zc), name="mvae_head")
        self.seed_gen = keras.random.SeedGenerator(0)
        self.trackers = {k: keras.metrics.Mean(name=k) for k in ("mse", "kl", "bce", "acc")}

    def build(self, input_shape=None):
        self.built = True

    def call(self, x, training=False):
        mu, logvar = self.encoder(x, training=training)
        z = mu + keras.random.normal(ops.shape(mu), seed=self.seed_gen) * ops.exp(0.5 * logvar) if training else mu
        return {"recon": self.decoder(z, training=training), "mu": mu, "logvar": logvar,
                "logit": self.head(mu, training=training)}

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        y = ops.convert_to_tensor(y, dtype=y_pred["recon"].dtype)
        target, label = y[:, :-1], y[:, -1:]
        mse = ops.mean(ops.square(target - y_pred["recon"]))
        mu, logvar = y_pred["mu"], y_pred["logvar"]
        kl = ops.mean(-0.5 * ops.sum(1 + logvar - ops.square(mu) - ops.exp(logvar), axis=-1))
        logit = y_pred["logit"]
        bce = ops.mean(ops.binary_crossentropy(label, logit, from_logits=True))
        acc = ops.mean(ops.cast(ops.equal(ops.cast(logit > 0, label.dtype), label), "float32"))
        for k, v in (("mse", mse), ("kl", kl), ("bce", bce), ("acc", acc)):
            self.trackers[k].update_state(v)
        return mse + self.cfg.beta * kl + self.cfg.gamma * bce

    @property
    def metrics(self):
        return super().metrics + list(self.trackers.values())

    def get_config(self):
        return {**super().get_config(), "cfg": self.cfg.to_dict()}


def build_materials_vae(cfg: ImatgenModelConfig) -> MaterialsVAE:
    model = MaterialsVAE(cfg.to_dict(), name="materials_vae")
    model(np.zeros((1, cfg.code_dim), dtype="float32"))
    return model
