"""The literature baselines behind the ``icsg.Generator`` interface: iMatGen-style VAE and CCDCGAN-style GAN.

Both decode *crystal codes* through the iMatGen-style autoencoders
(``icsg.models.crystal_code``) and return the same results table as
``icsg.Generator`` (``condition`` is NaN: neither model is property-conditioned; the
CCDCGAN is property-*constrained* in training). ``make_generator(name)`` picks one.
"""

from __future__ import annotations

import os
import time

import numpy as np
import pandas as pd
from pymatgen.core import Structure

from icsg.generation.generator import results_table
from icsg.generation.sampling import interpolate, sample_around, sample_prior
from icsg.pretrained import WEIGHTS_DIR

MODELS = ("cond-dfc-vae", "imatgen", "ccdcgan")


class _CodeGenerator:
    """Decoding and property annotation shared by the two code-space generators."""

    def __init__(self, weights_dir: str | os.PathLike = WEIGHTS_DIR, predict: bool = True, seed: int = 0,
                 batch_size: int = 64, imatgen=None):
        from icsg.training.imatgen import load_imatgen

        self.codec, self.mvae, self.imatgen_meta = load_imatgen(imatgen or weights_dir)
        self.rng = np.random.default_rng(seed)
        self.batch_size = batch_size
        self.predictor = None
        self.last_density_slices = np.zeros((0,))
        if predict:
            from icsg.predict import PropertyPredictor

            self.predictor = PropertyPredictor(weights_dir)

    @property
    def condition_property(self) -> str:
        return self.imatgen_meta["property"]

    @property
    def train_source(self) -> str | None:
        return self.imatgen_meta.get("train_source")

    def decode_codes(self, codes: np.ndarray, z: np.ndarray) -> pd.DataFrame:
        t0 = time.perf_counter()
        rows, slices = [], []
        for i in range(0, len(codes), self.batch_size):
            out, sl = self.codec.decode(codes[i:i + self.batch_size], self.batch_size)
            rows.extend(out)
            slices.append(sl)
        df = results_table(rows, z, np.nan, self.predictor)
        self.last_density_slices = np.concatenate(slices) if slices else np.zeros((0,))
        df.attrs["seconds"] = time.perf_counter() - t0
        return df

    @staticmethod
    def _no_condition(condition, target) -> None:
        if condition is not None:
            raise ValueError("this model is not property-conditioned: --condition needs --model cond-dfc-vae "
                             "(use --target for the property window only)")


class ImatgenGenerator(_CodeGenerator):
    """iMatGen-style materials VAE: z ~ N(0, I), around a known crystal, or slerp between two."""

    @property
    def latent_dim(self) -> int:
        return int(self.codec.cfg.latent_dim)

    def _decode_z(self, z: np.ndarray) -> pd.DataFrame:
        codes = np.asarray(self.mvae.decoder.predict(z.astype(np.float32), batch_size=256, verbose=0))
        return self.decode_codes(codes, z)

    def encode(self, structure: Structure, item: str = "base") -> np.ndarray:
        code = self.codec.encode_structures([structure], [item])
        mu, _ = self.mvae.encoder.predict(code, verbose=0)
        return np.asarray(mu)[0]

    def sample(self, n: int, condition=None, target=None) -> pd.DataFrame:
        self._no_condition(condition, target)
        _check_n(n)
        return self._decode_z(sample_prior(n, self.latent_dim, self.rng))

    def around(self, base: Structure, n: int, variance: float = 0.5, condition=None) -> pd.DataFrame:
        self._no_condition(condition, None)
        _check_n(n)
        return self._decode_z(sample_around(self.encode(base), n, variance, self.rng))

    def interpolate(self, a: Structure, b: Structure, steps: int = 10, method: str = "slerp") -> pd.DataFrame:
        return self._decode_z(interpolate(self.encode(a, "a"), self.encode(b, "b"), steps, method))


class CCDCGANGenerator(_CodeGenerator):
    """CCDCGAN-style GAN on crystal codes: noise -> code -> crystal (no encoder, so no 'around')."""

    def __init__(self, weights_dir: str | os.PathLike = WEIGHTS_DIR, predict: bool = True, seed: int = 0,
                 batch_size: int = 64, ccdcgan=None, imatgen=None):
        from icsg.pretrained import load_ccdcgan

        super().__init__(weights_dir, predict, seed, batch_size, imatgen)
        self.generator, self.regressor, self.gan_meta = load_ccdcgan(ccdcgan or weights_dir)
        self.noise_dim = int(self.gan_meta["config"]["noise_dim"])

    def _decode_noise(self, noise: np.ndarray) -> pd.DataFrame:
        codes = np.asarray(self.generator.predict(noise.astype(np.float32), batch_size=256, verbose=0))
        return self.decode_codes(codes, noise)

    def sample(self, n: int, condition=None, target=None) -> pd.DataFrame:
        self._no_condition(condition, target)
        _check_n(n)
        return self._decode_noise(sample_prior(n, self.noise_dim, self.rng))

    def around(self, *args, **kwargs):
        raise ValueError("the CCDCGAN generator has no encoder: --around needs --model cond-dfc-vae or imatgen")

    def interpolate(self, *args, **kwargs):
        raise ValueError("the CCDCGAN generator has no encoder: --interpolate needs --model cond-dfc-vae or imatgen")


def _check_n(n) -> None:
    if not isinstance(n, (int, np.integer)) or n <= 0:
        raise ValueError(f"n must be a positive integer, got {n!r}")


def make_generator(model: str = "cond-dfc-vae", weights_dir: str | os.PathLike = WEIGHTS_DIR, **kwargs):
    """The generator called ``model`` (one of ``MODELS``), loaded from ``weights_dir``."""
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r} (choose from {', '.join(MODELS)})")
    if model in ("imatgen", "ccdcgan"):
        # options of the voxel pipeline (reading, latent prior) do not apply: asking for them is an error
        bad = [k for k in ("workers", "reading", "exact", "prior", "temperature", "guide") if k in kwargs]
        if bad:
            raise ValueError(f"{bad[0]!r} applies to the cond-dfc-vae model only, not {model}")
        return (ImatgenGenerator if model == "imatgen" else CCDCGANGenerator)(weights_dir, **kwargs)
    from icsg.generation.generator import Generator

    return Generator(weights_dir, **kwargs)
