"""Conditional deep-feature-consistent VAE over [M, C] (paper eqs. 4-5).

    L_DFCV = MSE(X, X') + β·KL(q(z|X, y) || N(0, I)) + α·Σ_p MSE(φ_p(M), φ_p(M'))

X = [M, C] (B, n, n, n, 4): the normalised density and the CoordConv channels;
y: one-hot property bin (B, K). The condition enters the encoder once per voxel
(4 + K input channels; the original tiled it four times by accident) and again at
the bottleneck, next to z, for the decoder. φ_p are the encoder layers of a frozen,
trained UNet applied to the density channel (``icsg.models.unet.feature_extractor``).

Encoder: ``len(filters)`` × [Conv3D 3^3, BatchNorm, LeakyReLU, MaxPool]; decoder
mirrors with UpSampling3D. Paper: filters 16/32/64/128, latent 256, β = 5e-4, α = 1.
The loss lives in ``compute_loss`` so the same model trains on the torch and
tensorflow backends without a backend-specific train step.

Density loss: on perov_5 an O or N anion is a broad Gaussian whose peak is ~0.1 in the
normalised map next to a cation peak of up to ~6, so it adds almost nothing to a plain
MSE; a VAE trained that way decodes the cations and drops the anions. ``density_asinh_k = k`` compares asinh(k·M) instead: linear
(×k) for small densities, logarithmic for peaks, so the error is closer to relative
and the decoder is still asked for M itself.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import keras
from keras import layers, ops

from icsg.models.padding import conv3d


@dataclass(frozen=True)
class VAEConfig:
    grid_size: int = 32
    channels: int = 4
    n_cond: int = 10
    latent_dim: int = 256
    filters: tuple = (16, 32, 64, 128)
    beta: float = 5e-4
    alpha: float = 1.0
    coord_weight: float = 1.0  # weight of the 3 coordinate channels in the MSE (1 = paper; >1 starves the density)
    # k > 0: the density channel's error is taken between asinh(k·M) and asinh(k·M') instead of M and M'
    # (0 = paper). Light anions are broad shoulders ~2 % of a heavy cation's peak; a plain MSE lets the
    # decoder leave them out (see 'Density loss' in the module docstring).
    density_asinh_k: float = 0.0
    periodic: bool = False  # circular padding (maps over a unit cell, icsg.representation.periodic)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["filters"] = list(self.filters)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "VAEConfig":
        d = dict(d)
        d["filters"] = tuple(d.get("filters", cls.filters))
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


@keras.saving.register_keras_serializable(package="icsg")
class TileCondition(layers.Layer):
    """(B, K) condition -> (B, n, n, n, K), one copy per voxel."""

    def __init__(self, grid_size: int, **kwargs):
        super().__init__(**kwargs)
        self.grid_size = grid_size

    def call(self, cond):
        n = self.grid_size
        c = ops.reshape(cond, (-1, 1, 1, 1, ops.shape(cond)[-1]))
        return ops.tile(c, (1, n, n, n, 1))

    def get_config(self):
        return {**super().get_config(), "grid_size": self.grid_size}


@keras.saving.register_keras_serializable(package="icsg")
class Reparameterize(layers.Layer):
    """z = μ + ε·exp(log σ² / 2), ε ~ N(0, I)."""

    def __init__(self, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.seed_gen = keras.random.SeedGenerator(seed)

    def call(self, mu, logvar):
        eps = keras.random.normal(ops.shape(mu), seed=self.seed_gen)
        return mu + eps * ops.exp(0.5 * logvar)


def build_encoder(cfg: VAEConfig) -> keras.Model:
    n = cfg.grid_size
    x_in = keras.Input((n, n, n, cfg.channels), name="x")
    c_in = keras.Input((cfg.n_cond,), name="cond")
    x = layers.Concatenate(name="x_cond")([x_in, TileCondition(n, name="tile_cond")(c_in)])
    for i, f in enumerate(cfg.filters):
        x = conv3d(x, f, 3, f"e_conv{i}", cfg.periodic, use_bias=False)
        x = layers.BatchNormalization(name=f"e_bn{i}")(x)
        x = layers.LeakyReLU(0.2, name=f"e_act{i}")(x)
        x = layers.MaxPooling3D(2, name=f"e_pool{i}")(x)
    x = layers.Flatten(name="e_flat")(x)
    x = layers.Concatenate(name="e_flat_cond")([x, c_in])
    mu = layers.Dense(cfg.latent_dim, name="mu")(x)
    logvar = layers.Dense(cfg.latent_dim, name="logvar", kernel_initializer="zeros")(x)
    return keras.Model([x_in, c_in], [mu, logvar], name="encoder")


def build_decoder(cfg: VAEConfig) -> keras.Model:
    n = cfg.grid_size
    m = n // 2 ** len(cfg.filters)
    z_in = keras.Input((cfg.latent_dim,), name="z")
    c_in = keras.Input((cfg.n_cond,), name="cond")
    x = layers.Concatenate(name="z_cond")([z_in, c_in])
    x = layers.Dense(m**3 * cfg.filters[-1], name="d_dense")(x)
    x = layers.LeakyReLU(0.2, name="d_dense_act")(x)
    x = layers.Reshape((m, m, m, cfg.filters[-1]), name="d_reshape")(x)
    for i, f in enumerate(reversed(cfg.filters)):
        x = layers.UpSampling3D(2, name=f"d_up{i}")(x)
        x = conv3d(x, f, 3, f"d_conv{i}", cfg.periodic, use_bias=False)
        x = layers.BatchNormalization(name=f"d_bn{i}")(x)
        x = layers.LeakyReLU(0.2, name=f"d_act{i}")(x)
    out = conv3d(x, cfg.channels, 3, "d_out", cfg.periodic)
    return keras.Model([z_in, c_in], out, name="decoder")


@keras.saving.register_keras_serializable(package="icsg")
class CondDFCVAE(keras.Model):
    """Encoder + decoder + (optional) frozen UNet features for the perceptual term."""

    def __init__(self, cfg: dict, features: keras.Model | None = None, **kwargs):
        super().__init__(**kwargs)
        self.cfg = VAEConfig.from_dict(cfg) if isinstance(cfg, dict) else cfg
        self.encoder = build_encoder(self.cfg)
        self.decoder = build_decoder(self.cfg)
        self.sampler = Reparameterize(name="reparameterize")
        # not tracked as a sub-layer: the UNet's weights are not part of the VAE's checkpoint,
        # so a VAE saved while training with DFC loads into one built without the UNet
        object.__setattr__(self, "_dfc_features", features)
        if features is not None:
            features.trainable = False
        self.mse_tracker = keras.metrics.Mean(name="mse")
        self.kl_tracker = keras.metrics.Mean(name="kl")
        self.dfc_tracker = keras.metrics.Mean(name="dfc")

    def build(self, input_shape=None):  # encoder and decoder are functional models, built already
        self.built = True

    def call(self, inputs, training=False):
        x, cond = inputs
        mu, logvar = self.encoder([x, cond], training=training)
        z = self.sampler(mu, logvar) if training else mu
        recon = self.decoder([z, cond], training=training)
        return {"recon": recon, "mu": mu, "logvar": logvar}

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        recon, mu, logvar = y_pred["recon"], y_pred["mu"], y_pred["logvar"]
        y = ops.convert_to_tensor(y, dtype=recon.dtype)
        sq = ops.square(y - recon)
        mse = ops.mean(sq)  # reported as 'mse' in every setting, so runs stay comparable
        k = self.cfg.density_asinh_k
        if k > 0:
            dens = ops.square(ops.arcsinh(k * y[..., :1]) - ops.arcsinh(k * recon[..., :1]))
            sq = ops.concatenate([dens, sq[..., 1:]], axis=-1)
        kl = ops.mean(-0.5 * ops.sum(1 + logvar - ops.square(mu) - ops.exp(logvar), axis=-1))
        total = ops.mean(sq) + self.cfg.beta * kl
        if self.cfg.coord_weight != 1.0:
            # the cell lengths live in a small part of the C channels' variance (a ramp scaled by L), so
            # weighting those channels up sharpens the cell, but at a cost: at 20 the density stayed at
            # the mean-map level for thousands of steps (benchmarks/vae_settings.py)
            w = ops.convert_to_tensor([1.0] + [self.cfg.coord_weight] * (self.cfg.channels - 1), dtype=sq.dtype)
            total = ops.mean(sq * w) + self.cfg.beta * kl
        dfc = ops.convert_to_tensor(0.0)
        features = self._dfc_features
        if features is not None and self.cfg.alpha > 0:
            real = features(y[..., :1], training=False)
            fake = features(recon[..., :1], training=False)
            real = real if isinstance(real, (list, tuple)) else [real]
            fake = fake if isinstance(fake, (list, tuple)) else [fake]
            dfc = sum(ops.mean(ops.square(ops.stop_gradient(r) - f)) for r, f in zip(real, fake))
            total = total + self.cfg.alpha * dfc
        self.mse_tracker.update_state(mse)
        self.kl_tracker.update_state(kl)
        self.dfc_tracker.update_state(dfc)
        return total

    def load_weights(self, filepath, *args, **kwargs):
        # the frozen UNet is not in VAE checkpoints; hide it so Keras does not look for it there
        features = self._dfc_features
        object.__setattr__(self, "_dfc_features", None)
        try:
            return super().load_weights(filepath, *args, **kwargs)
        finally:
            object.__setattr__(self, "_dfc_features", features)

    @property
    def metrics(self):
        return super().metrics + [self.mse_tracker, self.kl_tracker, self.dfc_tracker]

    def get_config(self):
        return {**super().get_config(), "cfg": self.cfg.to_dict()}


def build_vae(cfg: VAEConfig, features: keras.Model | None = None) -> CondDFCVAE:
    model = CondDFCVAE(cfg.to_dict(), features, name="cond_dfc_vae")
    n = cfg.grid_size
    model([ops.zeros((1, n, n, n, cfg.channels)), ops.zeros((1, cfg.n_cond))])
    return model
