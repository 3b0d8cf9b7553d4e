"""CCDCGAN-style latent GAN with a property constraint (Long et al., npj Comput. Mater. 2021).

The generator and discriminator work on the *crystal code* of the iMatGen-style
autoencoders (``icsg.models.crystal_code``): the stacked cell and per-element basis
latents, which is what CCDCGAN calls the latent crystal graph (its autoencoders are
iMatGen's image autoencoders). This project's Cond-DFC-VAE latent would tie the GAN to a
property-conditioned decoder that needs a condition bin per sample; the crystal code
decodes unconditionally, as in the paper.

A frozen property regressor R on the code constrains the generator (paper eq., ω = 0.1):

    L_G = BCE(D(G(n)), 1) + ω · mean(exp(R(G(n))))      (R in eV/atom: favours low formation energy)
    L_D = BCE(D(x), 1) + BCE(D(G(n)), 0)

Training uses ``train_on_batch`` on two compiled models (the discriminator, and the
generator through an untracked, frozen D and R), so it runs on every Keras backend.
"""

from __future__ import annotations



import icsg  # noqa: F401
import keras
from keras import layers, ops

from icsg.models.config import CCDCGANConfig  # noqa: F401  (re-exported)


def build_generator(cfg: CCDCGANConfig) -> keras.Model:
    n = keras.Input((cfg.noise_dim,), name="noise")
    h = layers.Dense(cfg.hidden, name="g_h0")(n)
    h = layers.LeakyReLU(0.2)(h)
    h = layers.Dense(cfg.hidden, name="g_h1")(h)
    h = layers.LeakyReLU(0.2)(h)
    return keras.Model(n, layers.Dense(cfg.code_dim, name="g_code")(h), name="generator")


def build_discriminator(cfg: CCDCGANConfig) -> keras.Model:
    x = keras.Input((cfg.code_dim,), name="code")
    h = layers.Dense(cfg.hidden, name="d_h0")(x)
    h = layers.LeakyReLU(0.2)(h)
    h = layers.Dense(cfg.hidden // 2, name="d_h1")(h)
    h = layers.LeakyReLU(0.2)(h)
    return keras.Model(x, layers.Dense(1, name="d_logit")(h), name="discriminator")


def build_regressor(cfg: CCDCGANConfig) -> keras.Model:
    x = keras.Input((cfg.code_dim,), name="code")
    h = layers.Dense(128, activation="relu", name="r_h0")(x)
    h = layers.Dense(64, activation="relu", name="r_h1")(h)
    return keras.Model(x, layers.Dense(1, name="r_property")(h), name="regressor")


@keras.saving.register_keras_serializable(package="icsg")
class ConstrainedGenerator(keras.Model):
    """G with the frozen D and R attached untracked, so only G's weights train."""

    def __init__(self, generator, discriminator, regressor, omega: float, **kwargs):
        super().__init__(**kwargs)
        self.generator = generator
        object.__setattr__(self, "_d", discriminator)
        object.__setattr__(self, "_r", regressor)
        self.omega = omega
        self.adv_tracker = keras.metrics.Mean(name="adv")
        self.prop_tracker = keras.metrics.Mean(name="property")

    def call(self, noise, training=False):
        code = self.generator(noise, training=training)
        return {"logit": self._d(code, training=False), "property": self._r(code, training=False)}

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        logit = y_pred["logit"]
        adv = ops.mean(ops.binary_crossentropy(ops.ones_like(logit), logit, from_logits=True))
        prop = ops.mean(ops.exp(y_pred["property"]))
        self.adv_tracker.update_state(adv)
        self.prop_tracker.update_state(ops.mean(y_pred["property"]))
        return adv + self.omega * prop

    @property
    def metrics(self):
        return super().metrics + [self.adv_tracker, self.prop_tracker]


def _scalar(v):
    return v[0] if isinstance(v, (list, tuple)) else v
