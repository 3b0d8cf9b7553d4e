"""``icsg.Generator``: property-conditioned crystals from the trained Cond-DFC-VAE, UNet and CGCNNs.

Every sampling mode returns a ``pandas.DataFrame``, one row per latent vector:
``structure`` (pymatgen Structure or None), ``formula``, cell lengths (Å), ``n_sites``,
``valid`` (all distances > 0.5 Å), ``charge_neutral``, the predicted properties,
``condition`` (bin index, or a float for interpolated conditions), ``z`` (latent
vector), ``failure`` (why no structure came out) and ``latent_residual`` (mean squared
distance between the crystal's own code and z after the round-trip refinement: small means the
encoder maps the crystal back to where it was drawn; NaN with ``refine=False``).
``apply_filters`` adds the paper's Table 2 filter flags and counts.
"""

from __future__ import annotations

import os
import time
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
from pymatgen.core import Structure

import icsg  # noqa: F401
from icsg.data.dataset import property_bin
from icsg.data.filters import FilterConfig, standardise
from icsg.errors import SourceError
from icsg.generation import filters as F
from icsg.generation.consistency import ConsistencyConfig
from icsg.generation.pipeline import (batch_to_sites, decode_latents, refined, segmentation_for,
                                      structures_from_sites)
from icsg.generation.latent_cell import CELL_FROM, cell_readout
from icsg.generation.latent_prior import PRIOR_FILE, PRIORS, load_latent_prior
from icsg.generation.sampling import interpolate, sample_around, sample_prior
from icsg.grid import GridSpec
from icsg.pretrained import WEIGHTS_DIR, load_unet, load_vae
from icsg.representation.augment import TTA_ROTATIONS
from icsg.representation.density import encode


class Generator:
    """Args:
        weights_dir: folder with unet.*, vae.* and cgcnn_*.* (default: the shipped weights/).
        vae, unet: run folders overriding the weights folder for those models.
        predict: annotate crystals with the CGCNN properties.
        seed: seeds every sampling call in turn.
        batch_size: maps per decoder/UNet batch.
        workers: segmentation worker processes.
        species_from: 'fit' (species from the density profile) or 'unet' (UNet vote);
            see ``icsg.generation.pipeline.segmentation_for``.
        rotations: exact cube rotations the UNet's output is averaged over (1-24; see
            ``icsg.generation.pipeline.segment_maps``).
        prior: where ``sample`` draws z: 'fitted' (default), the Gaussian fitted to the posterior
            means of the training crystals of the requested property bin, stored beside the VAE
            weights (vae_prior.npz, ``icsg.generation.latent_prior``), or 'standard', the paper's N(0, I).
        temperature: scales the spread of the fitted prior (1 = as fitted).
        refine: read each decoded map as the crystal whose code is closest to the map's latent vector
            (``icsg.generation.consistency``; default on, a ``ConsistencyConfig`` to tune it, e.g.
            ``ConsistencyConfig(soft_steps=60)`` for the soft fit first, False for the segmentation alone,
            several times faster). ``True`` leaves out the restart from the segmentation, the exact fit and the
            element refit (``ConsistencyConfig.restart_above``, ``exact_fit_steps``, ``element_refit_above``),
            which are measured on reconstruction only; pass a ``ConsistencyConfig`` to have them.
        cell_from: 'latent' (default): cell lengths from the latent vector by the ridge readout stored beside
            the VAE weights (vae_cell.npz, ``icsg.generation.latent_cell``); 'coords': from the decoded
            coordinate channels, as in the paper.
    """

    def __init__(self, weights_dir: str | os.PathLike = WEIGHTS_DIR, vae=None, unet=None, predict: bool = True,
                 seed: int = 0, batch_size: int = 32, workers: int = 1, species_from: str = "fit",
                 rotations: int = TTA_ROTATIONS, prior: str = "fitted", temperature: float = 1.0,
                 refine: bool | ConsistencyConfig = True, cell_from: str = "latent"):
        if prior not in PRIORS:
            raise ValueError(f"prior must be one of {PRIORS}, got {prior!r}")
        if cell_from not in CELL_FROM:
            raise ValueError(f"cell_from must be one of {CELL_FROM}, got {cell_from!r}")
        self.unet, self.unet_meta = load_unet(unet or weights_dir)
        self.vae, self.vae_meta = load_vae(vae or weights_dir)
        self.spec = GridSpec.from_dict(self.vae_meta["grid"])
        self.cond = self.vae_meta["condition"]
        self.n_bins = int(self.cond["n_bins"])
        self.latent_dim = int(self.vae_meta["config"]["latent_dim"])
        self.rng = np.random.default_rng(seed)
        self.batch_size, self.workers, self.rotations = batch_size, workers, rotations
        self.segmentation = segmentation_for(self.unet_meta["elements_Z"], species_from)
        self.prior_name, self.temperature = prior, float(temperature)
        self.consistency = (ConsistencyConfig(restart_above=None, exact_fit_steps=0, element_refit_above=None)
                            if refine is True else (refine or None))
        self._prior_path = Path(vae or weights_dir) / PRIOR_FILE
        self.cell_from, self._vae_dir = cell_from, Path(vae or weights_dir)
        self.predictor = None
        if predict:
            from icsg.predict import PropertyPredictor

            self.predictor = PropertyPredictor(weights_dir)

    @cached_property
    def latent_prior(self):
        """The fitted prior of random sampling (None for 'standard'); read on first use, so the other
        modes work with weights that have none."""
        return load_latent_prior(self._prior_path, self.latent_dim) if self.prior_name == "fitted" else None

    @cached_property
    def latent_cell(self):
        """The cell readout of decoding (None for cell_from='coords'); read on first decode."""
        return cell_readout(self._vae_dir, self.cell_from, self.vae_meta)

    # --- conditions ----------------------------------------------------------------
    @property
    def condition_property(self) -> str:
        return self.cond["property"]

    @property
    def train_source(self) -> str | None:
        """The training CSV (novelty reference) recorded with the VAE weights."""
        return self.vae_meta.get("train_source")

    def bin_of(self, value: float) -> int:
        lo, hi = self.cond["train_min"], self.cond["train_max"]
        if not np.isfinite(value) or value < lo or value > hi:
            raise ValueError(f"target {value} is outside the training range of {self.condition_property} "
                             f"[{lo:.4g}, {hi:.4g}]")
        return int(property_bin([value], np.array(self.cond["edges"]))[0])

    def bin_centre(self, k: int) -> float:
        """A representative value of bin k: midpoint of its edges (train min/max at the ends)."""
        edges = [self.cond["train_min"]] + list(self.cond["edges"]) + [self.cond["train_max"]]
        return 0.5 * (edges[k] + edges[k + 1])

    def _onehot(self, k: int, n: int) -> np.ndarray:
        if not (isinstance(k, (int, np.integer)) and 0 <= k < self.n_bins):
            raise ValueError(f"condition must be an integer bin in [0, {self.n_bins - 1}], got {k!r}")
        return np.tile(np.eye(self.n_bins, dtype=np.float32)[k], (n, 1))

    # --- encoding --------------------------------------------------------------------
    def encode(self, structure: Structure, condition: int | None = None, item: str = "base") -> tuple[np.ndarray, int]:
        """Posterior mean μ of a crystal and the condition used (its predicted property bin by default)."""
        s = standardise(structure, item, FilterConfig())
        e = encode(s, self.spec, item=item)
        x = np.concatenate([e.density[..., None], e.coords], -1)[None].astype(np.float32)
        if condition is None:
            condition = self._predicted_bin(s)
        mu, _ = self.vae.encoder.predict([x, self._onehot(condition, 1)], verbose=0)
        return np.asarray(mu)[0], condition

    def _predicted_bin(self, s: Structure) -> int:
        if self.predictor is None or self.condition_property not in self.predictor.models:
            return self.n_bins // 2
        v = float(self.predictor.predict([s])[self.condition_property].iloc[0])
        v = float(np.clip(v, self.cond["train_min"], self.cond["train_max"]))
        return self.bin_of(v)

    # --- sampling modes -----------------------------------------------------------------
    def sample(self, n: int, condition: int | None = None, target: float | None = None) -> pd.DataFrame:
        """n crystals for one property bin (or the bin of ``target``), z from the generator's prior."""
        _check_n(n)
        k = self.bin_of(target) if target is not None else (self.n_bins // 2 if condition is None else condition)
        cond = self._onehot(k, n)  # checks the bin first
        if self.latent_prior is not None:
            z = self.latent_prior.sample(n, self.rng, self.temperature, condition=k)
        else:
            z = sample_prior(n, self.latent_dim, self.rng)
        return self.decode(z, cond, [k] * n)

    def around(self, base: Structure, n: int, variance: float = 0.5, condition: int | None = None) -> pd.DataFrame:
        """n crystals with z ~ N(μ_base, σ² I) (paper σ² = 0.5); the base's condition by default."""
        _check_n(n)
        mu, k = self.encode(base, condition)
        return self.decode(sample_around(mu, n, variance, self.rng), self._onehot(k, n), [k] * n)

    def interpolate(self, a: Structure, b: Structure, steps: int = 10, method: str = "linear") -> pd.DataFrame:
        """Decoded points on the path between two crystals' μ; conditions interpolated linearly."""
        mu_a, ka = self.encode(a, item="a")
        mu_b, kb = self.encode(b, item="b")
        z = interpolate(mu_a, mu_b, steps, method)
        c = interpolate(np.eye(self.n_bins)[ka], np.eye(self.n_bins)[kb], steps, "linear")
        return self.decode(z, c, list(np.linspace(ka, kb, steps)))

    # --- decoding ----------------------------------------------------------------------------
    def decode(self, z: np.ndarray, cond: np.ndarray, labels: list) -> pd.DataFrame:
        t0 = time.perf_counter()
        from tqdm.auto import tqdm

        rows, densities, residuals = [], [], []
        # a bar on terminals (disable=None): with the refinement a crystal takes seconds
        for i in tqdm(range(0, len(z), self.batch_size), desc="decoding", unit="batch", disable=None):
            zb, cb = z[i:i + self.batch_size], cond[i:i + self.batch_size]
            b = decode_latents(self.vae, self.unet, zb, cb, self.unet_meta["elements_Z"], self.batch_size,
                               self.rotations, self.unet_meta.get("class_weights"), self.latent_cell)
            densities.append(b.density[:, :, :, self.spec.size // 2].copy())
            items = batch_to_sites(b, self.spec, self.segmentation, workers=self.workers)
            items = refined(self.vae, items, b, zb, cb, self.spec, self.segmentation, self.consistency)
            residuals += [s.residual if s is not None else np.nan for s, _ in items]
            rows += structures_from_sites(items, self.spec, self.segmentation)
        df = results_table(rows, z, labels, self.predictor)
        # mean squared distance between each crystal's code and its latent vector (NaN without refinement)
        df["latent_residual"] = residuals
        # decoded density mid-slices (z = n/2) of the last call, for plots; kept off the frame so
        # pandas can concatenate frames
        self.last_density_slices = np.concatenate(densities) if densities else np.zeros((0,))
        df.attrs["seconds"] = time.perf_counter() - t0
        return df


def results_table(rows: list[tuple], z: np.ndarray, condition, predictor=None) -> pd.DataFrame:
    """The generators' common results table from [(Structure or None, failure or None)] per latent."""
    structs = [s for s, _ in rows]
    df = pd.DataFrame({
        "structure": structs,
        "formula": [s.composition.reduced_formula if s is not None else None for s in structs],
        "a_A": [s.lattice.a if s is not None else np.nan for s in structs],
        "b_A": [s.lattice.b if s is not None else np.nan for s in structs],
        "c_A": [s.lattice.c if s is not None else np.nan for s in structs],
        "n_sites": [len(s) if s is not None else 0 for s in structs],
        "valid": [s is not None and F.distances_ok(s) for s in structs],
        "charge_neutral": [s is not None and F.charge_neutral(s) for s in structs],
        "condition": condition,
        "z": list(z),
        "failure": [why for _, why in rows],
    })
    if predictor is not None:
        ok = [i for i, s in enumerate(structs) if s is not None]
        props = predictor.predict([structs[i] for i in ok])
        for col in props.columns:
            df[col] = np.nan
            df.loc[ok, col] = props[col].to_numpy()
    return df


def _check_n(n) -> None:
    if not isinstance(n, (int, np.integer)) or n <= 0:
        raise ValueError(f"n must be a positive integer, got {n!r}")


def load_training_set(path: str | os.PathLike) -> F.TrainingSet:
    """The novelty reference: a CSV with a ``cif`` column (parsed lazily per formula)."""
    p = Path(path)
    if not p.exists():
        raise SourceError(f"{p}: training set for the novelty filter not found")
    return F.TrainingSet.from_csv(p)


def apply_filters(df: pd.DataFrame, target: float | None, property_name: str | None,
                  base: Structure | None = None, training: F.TrainingSet | None = None,
                  window: float = 0.2) -> dict:
    """Add pass_* flags and ``kept`` to ``df`` (in place); return the funnel counts (paper Table 2)."""
    n = len(df)
    keep = np.array([s is not None for s in df["structure"]])
    funnel = {"generated": n, "decoded": int(keep.sum())}
    keep &= df["valid"].to_numpy(bool)
    df["pass_distance"] = keep.copy()
    funnel["distance > 0.5 Å"] = int(keep.sum())
    if base is not None:
        keep &= np.array([s is not None and F.same_stoichiometry(s, base) for s in df["structure"]])
        funnel["stoichiometry of base"] = int(keep.sum())
    df["pass_stoichiometry"] = keep.copy()
    if training is not None:
        novel = np.array([k and not training.contains(s) for s, k in zip(df["structure"], keep)])
        df["novel"] = novel
        keep &= novel
        funnel["not in training set"] = int(keep.sum())
    if target is not None and property_name in df:
        inwin = np.array([F.within_window(v, target, window) for v in df[property_name]])
        keep &= inwin
        funnel[f"{property_name} within {int(window * 100)}% of {target:.3g}"] = int(keep.sum())
    df["pass_property"] = keep.copy()
    uniq = np.array(F.unique_mask(list(df["structure"]), list(keep)))
    df["kept"] = uniq
    funnel["unique"] = int(uniq.sum())
    funnel["charge neutral (flag, of kept)"] = int((uniq & df["charge_neutral"].to_numpy(bool)).sum())
    return funnel
