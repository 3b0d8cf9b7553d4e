"""Gaussians fitted to the training crystals' posterior means, one per property bin: where the decoder has
learnt to draw crystals of that bin.

The paper samples z ~ N(0, I). That is where the encoder's codes lie only if the KL term
has pulled them there; at the shipped β = 1e-5 it has not (posterior means: std ~0.6 per
dimension, correlated), and z ~ N(0, I) decoded to near-empty maps (1.4 sites per sample
against 5 in perov_5; the fitted prior: 4.3; ``python benchmarks/generation.py``). Sampling
the aggregate posterior instead keeps random samples in the decoder's region. It is fitted
per property bin, N(m_k, Σ_k) over the means μ of the training maps of bin k, because with a
weak KL term the code z carries the property and the decoder can ignore the one-hot condition
next to it; drawing z from the codes of bin k gives the condition a way in through z (not yet
visible in the predicted property of the decoded crystals: their species are half wrong).
Σ_k is Ledoit-Wolf shrunk (sklearn) so a few hundred maps give a well-conditioned
256 × 256 estimate (a bin with fewer than ``min_per_bin`` maps takes the pooled fit). The
factors are stored as Cholesky matrices in ``weights/vae_prior.npz`` (plain arrays, read
with ``allow_pickle=False``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np

from icsg.errors import WeightsError

PRIOR_FILE = "vae_prior.npz"
PRIORS = ("flow", "fitted", "standard")
OPTIONAL = ("site_counts", "formulas", "formula_counts", "ionic_counts")  # int64 records beside the Gaussians


@dataclass(frozen=True)
class LatentPrior:
    mean: np.ndarray    # (K, D): one Gaussian per property bin (K = 1: one for all)
    chol: np.ndarray    # (K, D, D) lower-triangular, Σ_k = chol[k] @ chol[k].T
    counts: np.ndarray  # (K,) training maps behind each bin's fit (0: the pooled fit stands in)
    n_maps: int
    source: str
    site_counts: np.ndarray | None = None  # training crystals per number of sites (index = sites)
    formulas: np.ndarray | None = None        # (P, L) the training crystals' anonymous formulas
    formula_counts: np.ndarray | None = None  # (P,) training crystals per formula
    ionic_formulas: np.ndarray | None = None  # (Q,) str the charge-balanced training crystals' ionic formulas
    ionic_counts: np.ndarray | None = None    # (Q,) training crystals per ionic formula

    @property
    def n_bins(self) -> int:
        return len(self.mean)

    def sample(self, n: int, rng: np.random.Generator, temperature: float = 1.0,
               condition: int | None = None) -> np.ndarray:
        """(n, D) float32 draws of m_k + temperature · chol_k @ ε for property bin k = ``condition``."""
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        if self.n_bins == 1:
            k = 0
        elif condition is None or not 0 <= int(condition) < self.n_bins:
            raise ValueError(f"this prior has one Gaussian per property bin 0..{self.n_bins - 1}; "
                             f"got condition {condition!r}")
        else:
            k = int(condition)
        eps = rng.standard_normal((n, self.mean.shape[1]))
        return (self.mean[k][None] + temperature * eps @ self.chol[k].T).astype(np.float32)

    def complete(self, tail: np.ndarray, condition: int) -> np.ndarray:
        """Whole codes (n, D) whose last d numbers are ``tail`` (n, d) and whose first D - d are their mean given the
        tail under bin ``condition``'s Gaussian: the map code most probable for a reading drawn elsewhere."""
        k = 0 if self.n_bins == 1 else int(condition)
        tail = np.asarray(tail, np.float64)
        head = self.mean.shape[1] - tail.shape[1]
        cov = self.chol[k] @ self.chol[k].T
        gain = np.linalg.solve(cov[head:, head:], cov[head:, :head])  # Σ_tt⁻¹ Σ_th
        first = self.mean[k][:head] + (tail - self.mean[k][head:]) @ gain
        return np.concatenate([first, tail], axis=1).astype(np.float32)


def _gaussian(mu: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.covariance import LedoitWolf

    lw = LedoitWolf().fit(mu)
    return lw.location_, np.linalg.cholesky(lw.covariance_ + 1e-9 * np.eye(mu.shape[1]))


def fit_latent_prior(mu: np.ndarray, bins: np.ndarray | None = None, n_bins: int = 1, min_per_bin: int = 32,
                     source: str = "") -> LatentPrior:
    """N(mean, Ledoit-Wolf Σ) of posterior means ``mu`` (N, D), one per bin of ``bins`` (N,) in [0, n_bins)."""
    mu = np.asarray(mu, dtype=np.float64)
    if mu.ndim != 2 or len(mu) < 2:
        raise ValueError(f"need posterior means of at least 2 maps as (N, D), got shape {mu.shape}")
    pooled = _gaussian(mu)
    if bins is None:
        return LatentPrior(pooled[0][None], pooled[1][None], np.array([len(mu)]), int(len(mu)), str(source))
    bins = np.asarray(bins, dtype=int)
    if bins.shape != (len(mu),) or bins.min() < 0 or bins.max() >= n_bins:
        raise ValueError(f"bins must be {len(mu)} integers in [0, {n_bins}), got shape {bins.shape}")
    means, chols, counts = [], [], []
    for k in range(n_bins):
        sel = mu[bins == k]
        m, c = _gaussian(sel) if len(sel) >= min_per_bin else pooled
        means.append(m)
        chols.append(c)
        counts.append(len(sel) if len(sel) >= min_per_bin else 0)
    return LatentPrior(np.stack(means), np.stack(chols), np.array(counts), int(len(mu)), str(source))


class Codes(NamedTuple):
    mu: np.ndarray      # (N, D) posterior means
    bins: np.ndarray    # (N,) property bin of each map
    onehot: np.ndarray  # (N, K) the condition each map was encoded under
    abc_A: np.ndarray   # (N, 3) cell lengths in Å
    values: np.ndarray  # (N,) the conditioning property (NaN where unknown)
    site_counts: np.ndarray | None = None  # crystals of the whole split per number of sites
    formulas: tuple | None = None          # (formulas (P, L), counts (P,)) of the whole split's anonymous formulas
    ionic: tuple | None = None             # (ionic formulas (Q,), counts (Q,)) of the whole split


def posterior_means(vae, vae_meta: dict, data_dir: str | os.PathLike, n_maps: int = 8192, seed: int = 0,
                    batch_size: int = 32, split: str = "train") -> Codes:
    """Posterior means of up to ``n_maps`` maps of one split of a prepared dataset, each under its own bin,
    with the bins, conditions and cell lengths. ``vae``: the VAE (its z_map) or a ``DensityCodec`` (whole codes)."""
    from icsg.data.dataset import condition_onehot, load_arrays, vae_inputs

    arrays = load_arrays(data_dir, split)
    if len(arrays["ids"]) == 0:
        raise ValueError(f"{data_dir}: no {'training' if split == 'train' else split} maps")
    size = vae_meta["grid"]["size"]
    if arrays["density"].shape[1] != size or arrays["manifest"].get("encoding", "density") != \
            vae_meta["grid"].get("encoding", "density"):
        raise ValueError(f"{data_dir}: maps are {arrays['density'].shape[1]}^3 "
                         f"({arrays['manifest'].get('encoding', 'density')}), the VAE takes {size}^3 "
                         f"({vae_meta['grid'].get('encoding', 'density')})")
    pick = np.sort(np.random.default_rng(seed).permutation(len(arrays["ids"]))[:n_maps])
    onehot = condition_onehot(arrays["prop"][pick], vae_meta["condition"])
    out = []
    for i in range(0, len(pick), batch_size):
        idx = pick[i:i + batch_size]
        x = vae_inputs(vae_meta["grid"], arrays["density"][idx], arrays, idx)
        if hasattr(vae, "encode_maps"):  # a DensityCodec or PeriodicCodec: the whole code [z_map, z_read]
            cell = [arrays["angles_deg"][idx]] if arrays["manifest"].get("encoding") == "periodic" else []
            out.append(vae.encode_maps(x, onehot[i:i + batch_size], arrays["site_Z"][idx], arrays["site_frac"][idx],
                                       arrays["abc_A"][idx], *cell))
        else:
            mu, _ = vae.encoder.predict([x, onehot[i:i + batch_size]], verbose=0)
            out.append(np.asarray(mu))
    from icsg.generation.composition import formula_histogram, ionic_formula_histogram

    n_sites = (np.asarray(arrays["site_Z"]) > 0).sum(1) if "site_Z" in arrays else None
    return Codes(np.concatenate(out), onehot.argmax(1).astype(int), onehot, np.asarray(arrays["abc_A"][pick]),
                 np.asarray(arrays["prop"][pick], dtype=np.float64),
                 None if n_sites is None else np.bincount(n_sites).astype(np.int64),
                 None if n_sites is None else formula_histogram(arrays["site_Z"]),
                 None if n_sites is None else ionic_formula_histogram(arrays["site_Z"]))


def save_latent_prior(prior: LatentPrior, path: str | os.PathLike) -> None:
    from icsg.io import atomic_save_npz

    extra = {k: np.asarray(getattr(prior, k), np.int64)
             for k in ("site_counts", "formulas", "formula_counts", "ionic_counts") if getattr(prior, k) is not None}
    if prior.ionic_formulas is not None:
        extra["ionic_formulas"] = np.asarray(prior.ionic_formulas, str)
    atomic_save_npz(path, mean=prior.mean, chol=prior.chol, counts=prior.counts, n_maps=np.array(prior.n_maps),
                    source=np.array(prior.source), **extra)


def load_latent_prior(path: str | os.PathLike, latent_dim: int | None = None) -> LatentPrior:
    """The stored prior, or WeightsError naming the file and the reason (missing, corrupt, wrong size)."""
    from icsg.io import load_weights_npz

    f = load_weights_npz(path, "latent prior", ("mean", "chol", "counts", "n_maps", "source"),
                         "make it with `icsg fit-latent-prior DATA`, or sample the paper's N(0, I) with "
                         "prior='standard'",
                         optional=OPTIONAL + ("ionic_formulas",))
    mean, chol = f["mean"].astype(np.float64), f["chol"].astype(np.float64)
    counts, n_maps, source = f["counts"].astype(int), int(f["n_maps"]), str(f["source"])
    k, d = mean.shape if mean.ndim == 2 else (0, 0)
    if (mean.ndim != 2 or chol.shape != (k, d, d) or counts.shape != (k,) or not np.all(np.isfinite(chol))
            or not np.all(np.isfinite(mean))):
        raise WeightsError(f"{path}: latent prior has means {mean.shape}, Cholesky factors {chol.shape} "
                           f"and counts {counts.shape}")
    if latent_dim is not None and d != latent_dim:
        raise WeightsError(f"{path}: latent prior is {d}-dimensional, the VAE's latent space is {latent_dim}")
    opt = {k: f[k].astype(np.int64) if k in f else None for k in OPTIONAL}
    opt["ionic_formulas"] = f["ionic_formulas"].astype(str) if "ionic_formulas" in f else None
    return LatentPrior(mean, chol, counts, n_maps, source, **opt)


def write_code_prior(codec, weights_dir: str | os.PathLike, data_dir: str | os.PathLike, n_maps: int = 8192,
                     seed: int = 0) -> tuple[LatentPrior, dict, Codes]:
    """The per-bin prior over whole codes [z_map, z_read] of a ``DensityCodec`` -> WEIGHTS/vae_prior.npz,
    and the cell readout of the exact reading (z_map only) -> WEIGHTS/vae_cell.npz; returns the prior and
    a description of both for the model card, with the codes they were fitted to."""
    from icsg.generation.latent_cell import CELL_FILE, fit_latent_cell, save_latent_cell
    from icsg.pretrained import sha256

    codes = posterior_means(codec, codec.vae_meta, data_dir, n_maps, seed)
    prior = fit_latent_prior(codes.mu, codes.bins, int(codec.condition["n_bins"]), source=str(data_dir))
    prior = replace(prior, site_counts=codes.site_counts,
                    **({} if codes.formulas is None else dict(zip(("formulas", "formula_counts"), codes.formulas))),
                    **({} if codes.ionic is None else dict(zip(("ionic_formulas", "ionic_counts"), codes.ionic))))
    out = Path(weights_dir) / PRIOR_FILE
    save_latent_prior(prior, out)
    cov_diag = np.sum(prior.chol**2, axis=2)
    info = {"latent_prior": {"file": PRIOR_FILE, "sha256": sha256(out), "maps": prior.n_maps, "data": str(data_dir),
                             "seed": seed, "per_bin": prior.counts.tolist(), "dim": int(codes.mu.shape[1]),
                             "mean_std": float(np.mean(np.sqrt(cov_diag))),
                             "site_counts": None if prior.site_counts is None else prior.site_counts.tolist(),
                             "anonymous_formulas": None if prior.formulas is None else {
                                 ",".join(str(c) for c in f if c): int(n)
                                 for f, n in zip(prior.formulas, prior.formula_counts)},
                             "ionic_formulas": None if prior.ionic_formulas is None else {
                                 str(f): int(n) for f, n in zip(prior.ionic_formulas, prior.ionic_counts)}}}
    z_map = codes.mu[:, :codec.map_dim]
    cell = fit_latent_cell(z_map, codes.onehot, codes.abc_A, source=str(data_dir))
    save_latent_cell(cell, Path(weights_dir) / CELL_FILE)
    info["latent_cell"] = {"file": CELL_FILE, "sha256": sha256(Path(weights_dir) / CELL_FILE), "maps": cell.n_maps,
                           "alpha": cell.alpha,
                           "train_mae_A": float(np.mean(np.abs(cell.predict(z_map, codes.onehot) - codes.abc_A)))}
    return prior, info, codes


def fit_periodic_prior(weights_dir: str | os.PathLike, data_dir: str | os.PathLike, n_maps: int = 8192,
                       seed: int = 0, flow_steps: int | None = None) -> dict:
    """Per-bin Gaussians over the periodic codes of ``n_maps`` training crystals -> WEIGHTS/vae_prior.npz (whole
    codes [z_map, z_read] when a readout is beside the VAE, else the VAE's alone); returns its description.

    With a readout, also the flow prior over z_read (``flow_steps``, 0 = none) -> WEIGHTS/flow_prior.*: the reading
    uses z_read alone, and the per-bin Gaussians over whole codes read back as crystals of 8.5 elements on average
    where the training crystals have 2.4 and the flow's samples 2.1."""
    from icsg.pretrained import has_readout, load_vae, sha256

    readout = has_readout(weights_dir)
    if readout:
        from icsg.generation.periodic_codec import PeriodicCodec

        vae = PeriodicCodec(weights_dir)
        meta = vae.vae_meta
    else:
        vae, meta = load_vae(weights_dir)
    codes = posterior_means(vae, meta, data_dir, n_maps, seed)
    prior = fit_latent_prior(codes.mu, codes.bins, int(meta["condition"]["n_bins"]), source=str(data_dir))
    prior = replace(prior, site_counts=codes.site_counts,
                    **({} if codes.formulas is None else dict(zip(("formulas", "formula_counts"), codes.formulas))))
    out = Path(weights_dir) / PRIOR_FILE
    save_latent_prior(prior, out)
    info = {"file": PRIOR_FILE, "sha256": sha256(out), "maps": prior.n_maps, "data": str(data_dir), "seed": seed,
            "per_bin": prior.counts.tolist(), "dim": int(codes.mu.shape[1])}
    if readout and flow_steps != 0:
        info["flow"] = _train_read_flow(vae, codes, weights_dir, data_dir, seed, flow_steps)
    return info


def _train_read_flow(codec, codes: Codes, weights_dir, data_dir, seed: int, steps: int | None) -> dict:
    """The flow prior over the z_read part of ``codes`` (all its dimensions, no principal-axis cut) -> WEIGHTS."""
    import time

    from icsg.generation.flow_prior import FlowPriorConfig, save_flow_prior, train_flow_prior

    t0 = time.perf_counter()
    z_read = codes.mu[:, codec.map_dim:]
    cfg = FlowPriorConfig(dim=z_read.shape[1], n_bins=int(codec.condition["n_bins"]), pca_dims=0)
    cfg = replace(cfg, steps=steps or cfg.steps)
    flow, fit = train_flow_prior(z_read, codes.bins, codes.values, codec.condition["edges"], cfg, seed)
    info = {"data": str(data_dir), "maps": int(len(z_read)), "seed": seed, "part": "z_read",
            "train_seconds": time.perf_counter() - t0, **fit}
    save_flow_prior(flow, weights_dir, info)
    return info


def cmd_fit_latent_prior(a) -> int:
    from icsg.generation.codec import DensityCodec
    from icsg.io import atomic_write_json
    from icsg.pretrained import WEIGHTS_DIR, is_periodic

    weights = Path(a.weights or WEIGHTS_DIR)
    if is_periodic(weights):  # any-lattice models: Gaussians over the codes, a flow over z_read
        info = fit_periodic_prior(weights, a.data, a.maps, a.seed, a.flow_steps)
        print(f"code prior from {info['maps']} maps ({info['dim']} dimensions) -> {weights / PRIOR_FILE}"
              + (f"; flow prior over z_read (final loss {info['flow']['final_loss']:.3f}) -> {weights / 'flow_prior.pt'}"
                 if "flow" in info else ""))
        return 0
    codec = DensityCodec(weights)
    prior, info, codes = write_code_prior(codec, weights, a.data, a.maps, a.seed)
    if a.flow_steps is None or a.flow_steps > 0:
        import time

        from icsg.generation.flow_prior import FlowPriorConfig, save_flow_prior, train_flow_prior

        t0 = time.perf_counter()
        cfg = FlowPriorConfig(dim=codec.code_dim, n_bins=int(codec.condition["n_bins"]))
        cfg = replace(cfg, steps=a.flow_steps or cfg.steps, pca_dims=min(cfg.pca_dims, cfg.dim))
        flow, fit = train_flow_prior(codes.mu, codes.bins, codes.values, codec.condition["edges"], cfg, a.seed)
        save_flow_prior(flow, weights, {"data": str(a.data), "maps": int(len(codes.mu)), "seed": a.seed,
                                        "train_seconds": time.perf_counter() - t0, **fit})
        print(f"flow prior ({cfg.steps} steps, final loss {fit['final_loss']:.3f}) -> {weights / 'flow_prior.pt'}")
    meta = dict(codec.readout_meta, **info)
    if (weights / "readout.json").exists():  # a weights folder; a training run keeps its model.json as it is
        atomic_write_json(weights / "readout.json", meta)
    print(f"code prior from {prior.n_maps} maps ({info['latent_prior']['dim']} dimensions, per-dimension std "
          f"{info['latent_prior']['mean_std']:.3f}) -> {weights / PRIOR_FILE}; cell readout of the exact reading "
          f"(MAE {info['latent_cell']['train_mae_A']:.4f} Å on those maps) -> {weights / info['latent_cell']['file']}")
    return 0


def register_cli(sub) -> None:
    p = sub.add_parser("fit-latent-prior", help="fit the Gaussians that random generation samples codes from",
                       description="Encode training maps of a prepared dataset with the VAE and the readout encoder, "
                                   "fit N(mean, Σ) (Ledoit-Wolf) to the codes [z_map, z_read] of each property bin and "
                                   "write WEIGHTS/vae_prior.npz (`icsg generate` samples from it unless --prior "
                                   "standard), and the ridge cell readout of the exact reading to WEIGHTS/vae_cell.npz.")
    p.add_argument("data", help="prepared dataset (icsg prepare) the VAE was trained on")
    p.add_argument("--weights", default=None, help="folder with vae.*, readout.*, unet.* (default: the shipped weights/)")
    p.add_argument("--maps", type=int, default=8192, help="training maps to encode (default 8192, ~4 min)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--flow-steps", type=int, default=None,
                   help="also train the flow-matching prior (icsg.generation.flow_prior) for this many steps on the "
                        "same codes, into WEIGHTS/flow_prior.* (default: FlowPriorConfig's 24000, ~6 min; 0 = skip)")
    p.set_defaults(func=cmd_fit_latent_prior)
