"""``icsg.Generator``: property-conditioned crystals from the trained Cond-DFC-VAE, UNet and CGCNNs.

Every sampling mode returns a ``pandas.DataFrame``, one row per latent vector:
``structure`` (pymatgen Structure or None), ``formula``, cell lengths (Å), ``n_sites``,
``valid`` (all distances > 0.5 Å), ``charge_neutral``, the predicted properties,
``condition`` (bin index, or a float for interpolated conditions), ``z`` (the code) and
``failure`` (why no structure came out).
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
from icsg.generation.composition import anonymous_formula, ionic_formula
from icsg.generation.guidance import keep_formula_mix
from icsg.generation.search_config import ConsistencyConfig
from icsg.generation.latent_prior import PRIOR_FILE, PRIORS, load_latent_prior
from icsg.generation.reading import READINGS, ion_signs, ionic_contacts
from icsg.generation.sampling import interpolate, sample_around, sample_prior
from icsg.pretrained import WEIGHTS_DIR


class Generator:
    """Args:
        weights_dir: folder with vae.*, readout.*, unet.* and cgcnn_*.* (default: the shipped weights/).
        predict: annotate crystals with the CGCNN properties.
        seed: seeds every sampling call in turn.
        batch_size: maps per decoder/UNet batch.
        workers: processes for the per-crystal reading.
        reading: 'fast' (default: the readout heads' composition on the segmented sites) or 'exact' (the
            per-crystal search through the encoder, tens of seconds per crystal); ``icsg.generation.codec``.
        exact: settings of the exact reading (a ``ConsistencyConfig``; default: its defaults).
        prior: where ``sample`` draws codes: 'flow' (default), the conditional flow-matching model of the
            training codes (``flow_prior.*`` beside the weights, ``icsg.generation.flow_prior``); 'fitted', the
            Gaussian fitted to the codes of the requested property bin (``vae_prior.npz``,
            ``icsg.generation.latent_prior``); or 'standard', the paper's N(0, I).
        temperature: scales the spread of the prior's noise (1 = as fitted).
        guide: ``sample`` draws this many codes per crystal asked for, decodes them all and keeps those whose
            decoded crystal reads as a typical crystal of the data and the readout puts nearest the requested
            property (inside the requested bin first; ``Generator.rank``); 1 = no guidance. Costs ``guide``
            times the decoding.
    """

    def __init__(self, weights_dir: str | os.PathLike = WEIGHTS_DIR, predict: bool = True, seed: int = 0,
                 batch_size: int = 16, workers: int = 1, reading: str = "fast", exact: ConsistencyConfig | None = None,
                 prior: str = "flow", temperature: float = 1.0, guide: int = 1):
        from icsg.generation.codec import DensityCodec

        if prior not in PRIORS:
            raise ValueError(f"prior must be one of {PRIORS}, got {prior!r}")
        if reading not in READINGS:
            raise ValueError(f"reading must be one of {READINGS}, got {reading!r}")
        self.codec = DensityCodec(weights_dir, batch_size=batch_size, workers=workers)
        self.vae, self.vae_meta = self.codec.vae, self.codec.vae_meta
        self.unet, self.unet_meta = self.codec.unet, self.codec.unet_meta
        self.spec = self.codec.spec
        self.cond = self.vae_meta["condition"]
        self.n_bins = int(self.cond["n_bins"])
        self.latent_dim = self.codec.code_dim
        self.rng = np.random.default_rng(seed)
        self.batch_size, self.reading, self.exact = batch_size, reading, exact
        self.prior_name, self.temperature = prior, float(temperature)
        if not isinstance(guide, (int, np.integer)) or guide < 1:
            raise ValueError(f"guide must be an integer >= 1, got {guide!r}")
        self.guide = int(guide)
        self._prior_path = Path(weights_dir) / PRIOR_FILE
        self.predictor = None
        if predict:
            from icsg.predict import PropertyPredictor

            self.predictor = PropertyPredictor(weights_dir)

    @cached_property
    def latent_prior(self):
        """The fitted prior of random sampling (None for 'standard'); read on first use, so the other
        modes work with weights that have none."""
        if self.prior_name == "flow":
            from icsg.generation.flow_prior import load_flow_prior

            return load_flow_prior(self._prior_path.parent, self.latent_dim)
        return load_latent_prior(self._prior_path, self.latent_dim) if self.prior_name == "fitted" else None

    @cached_property
    def site_counts(self) -> np.ndarray | None:
        """Training crystals per number of sites (from ``vae_prior.npz``, whatever the prior), which keeps
        decoded compositions to the numbers of sites the data has; None when the file has no such record."""
        cp = self.composition_prior
        return None if cp is None else cp.site_counts

    @cached_property
    def composition_prior(self):
        """The training crystals' numbers of sites, anonymous and ionic formulas (``CompositionPrior``, from
        ``vae_prior.npz``) that decoded compositions are kept to; None when the file has no such record."""
        from icsg.generation.composition import CompositionPrior

        if not self._prior_path.exists():
            return None
        p = load_latent_prior(self._prior_path)
        return None if p.site_counts is None else CompositionPrior(p.site_counts, p.formulas, p.formula_counts,
                                                                    p.ionic_formulas, p.ionic_counts)

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
        """Code (posterior means of the VAE and the readout encoder) of a crystal and the condition used (its predicted property bin by default)."""
        s = standardise(structure, item, FilterConfig())
        if condition is None:
            condition = self._predicted_bin(s)
        return self.codec.encode([s], self._onehot(condition, 1), [item])[0], condition

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
        m = n * self.guide
        cond = self._onehot(k, m)  # checks the bin first
        if self.prior_name == "flow" and target is not None:  # the flow follows the value, not only its bin
            z = self.latent_prior.sample(m, self.rng, self.temperature, value=target)
        elif self.latent_prior is not None:
            z = self.latent_prior.sample(m, self.rng, self.temperature, condition=k)
        else:
            z = sample_prior(m, self.latent_dim, self.rng)
        df = self.decode(z, cond, [k] * m)
        if self.guide == 1:
            return df
        order = self.rank(df, k, target, n)[:n]
        out = df.iloc[order].reset_index(drop=True)
        out.attrs.update(df.attrs)
        return out

    def rank(self, df: pd.DataFrame, k: int, target: float | None = None, n: int | None = None) -> np.ndarray:
        """Row order of ``df`` for guided sampling: crystals that decoded with their atoms apart first; then those
        that read as a typical crystal of the data (``typical``); then, for a ``target``, by the distance of the
        readout's property estimate (``readout_property``) from it; for bin ``k`` alone, by how far the estimate
        lies outside the bin (0 inside: within the bin the draws keep their random order, so guidance does not
        pull every sample to the bin's most typical crystals). For bin ``k`` with ``n`` (the crystals to keep),
        the first ``n`` hold the training crystals' mix of anonymous formulas where the typical draws allow,
        those inside the bin first (``icsg.generation.guidance.keep_formula_mix``)."""
        edges = [self.cond["train_min"]] + list(self.cond["edges"]) + [self.cond["train_max"]]
        v = df["readout_property"].to_numpy(float)
        if target is None:
            miss = np.maximum(edges[k] - v, 0) + np.maximum(v - edges[k + 1], 0)
        else:
            miss = np.abs(v - target)
        miss = np.where(np.isfinite(v), miss, np.inf)
        bad = ~df["valid"].to_numpy(bool)
        forms = [None if s is None else anonymous_formula([x.specie.Z for x in s]) for s in df["structure"]]
        typical = self.typical(df, forms)
        order = np.lexsort((np.arange(len(df)), miss, ~typical, bad))
        cp = self.composition_prior
        if target is not None or n is None or cp is None:
            return order
        return keep_formula_mix(order, forms, typical & ~bad, cp.shares(), n)

    def typical(self, df: pd.DataFrame, forms: list | None = None) -> np.ndarray:
        """(len(df),) True for crystals that read as a typical crystal of the data: an anonymous formula among
        the commonest that hold 95 % of the training crystals (``CompositionPrior.typical_formulas``), likewise
        its ionic formula (cations | anions, ``typical_ionic_formulas``), charge-balanced (``charge_neutral``)
        and with ionic contacts (``ionic``). A code the flow draws between real crystals' codes can read as
        A2X3 where the data has ABX3, put one element on both cation sites (Mn2NOF) or an anion on a cation's
        site; guidance keeps the other draw (measured: ``benchmarks/generation.py``). ``forms``: each row's
        ``anonymous_formula`` (None = no crystal) when the caller has them already."""
        cp = self.composition_prior
        ok = df["charge_neutral"].to_numpy(bool) & df.get("ionic", pd.Series(True, index=df.index)).to_numpy(bool)
        if cp is None:
            return ok
        common, ionic = cp.typical_formulas(), cp.typical_ionic_formulas()
        if common is not None:
            if forms is None:
                forms = [None if s is None else anonymous_formula([x.specie.Z for x in s]) for s in df["structure"]]
            ok &= np.array([f is not None and f in common for f in forms], bool)
        if ionic is not None:
            ok &= np.array([bool(o) and ionic_formula(s.composition) in ionic
                            for o, s in zip(ok, df["structure"])], bool)
        return ok

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
        """Codes (B, code_dim) under one-hot conditions -> the results table (``results_table``)."""
        t0 = time.perf_counter()
        out = self.codec.decode(np.asarray(z, np.float32), np.asarray(cond, np.float32), self.reading, self.exact,
                                progress=True, composition_prior=self.composition_prior)
        df = results_table(list(zip(out.structures, out.reasons)), z, labels, self.predictor)
        df["readout_property"] = self.codec.read_property(out.sites)
        df["ionic"] = [s is not None and ionic_contacts(s, self.spec, ion_signs(s.z)) for s in out.sites]
        # decoded density mid-slices (z = n/2) of the last call, for plots; kept off the frame so
        # pandas can concatenate frames
        self.last_density_slices = out.slices
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
