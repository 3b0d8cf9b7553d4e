"""Cell lengths read from the latent vector by a ridge regression, instead of from the decoded coordinate channels.

Why: the paper reads the cell from the decoded CoordConv channels. With the shipped VAE that reading
is 3 % off (cell MAE 0.12 Å on perov_5 validation crystals, ``python benchmarks/reconstruction.py``),
while the cell is linear in the code itself: a ridge regression from the posterior mean μ and the
one-hot condition to (a, b, c), fitted on training maps, is off by ~0.025 Å on maps it never saw
(the prepared dataset's own validation split). So decoding reads the cell from z and uses the
coordinate channels only where no readout was fitted (``cell_from='coords'`` keeps the paper's way).

Stored as plain arrays in ``weights/vae_cell.npz`` (read with ``allow_pickle=False``); fitted with the
latent prior by ``icsg fit-latent-prior`` and ``icsg ship-weights --recalibrate``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from icsg.errors import WeightsError

CELL_FILE = "vae_cell.npz"
CELL_FROM = ("latent", "coords")
ALPHAS = (0.01, 0.1, 1.0, 10.0, 100.0)


@dataclass(frozen=True)
class LatentCell:
    coef: np.ndarray       # (D + K, 3): rows for μ then for the one-hot condition
    intercept: np.ndarray  # (3,) Å
    alpha: float           # ridge penalty chosen by leave-one-out error on the training codes
    n_maps: int
    source: str

    def predict(self, z: np.ndarray, cond: np.ndarray) -> np.ndarray:
        """(B, 3) cell lengths in Å of latent vectors z (B, D) under one-hot conditions cond (B, K)."""
        x = np.concatenate([np.asarray(z, np.float64), np.asarray(cond, np.float64)], axis=1)
        if x.shape[1] != self.coef.shape[0]:
            raise ValueError(f"cell readout takes {self.coef.shape[0]} features (latent + condition), got {x.shape[1]}")
        return x @ self.coef + self.intercept


def fit_latent_cell(mu: np.ndarray, cond: np.ndarray, abc_A: np.ndarray, alphas=ALPHAS,
                    source: str = "") -> LatentCell:
    """Ridge regression (B, D) μ + (B, K) one-hot -> (B, 3) cell lengths in Å; α by efficient leave-one-out."""
    from sklearn.linear_model import RidgeCV

    mu, cond, abc_A = np.asarray(mu, np.float64), np.asarray(cond, np.float64), np.asarray(abc_A, np.float64)
    if len(mu) < 8 or len(mu) != len(cond) or len(mu) != len(abc_A) or abc_A.shape[1:] != (3,):
        raise ValueError(f"a cell readout needs >= 8 codes with one condition and three lengths each; got "
                         f"{mu.shape}, {cond.shape}, {abc_A.shape}")
    reg = RidgeCV(alphas=tuple(alphas)).fit(np.concatenate([mu, cond], axis=1), abc_A)
    return LatentCell(np.asarray(reg.coef_.T), np.asarray(reg.intercept_), float(reg.alpha_), len(mu), str(source))


def save_latent_cell(cell: LatentCell, path: str | os.PathLike) -> None:
    from icsg.io import atomic_save_npz

    atomic_save_npz(path, coef=cell.coef, intercept=cell.intercept, alpha=np.array(cell.alpha),
                    n_maps=np.array(cell.n_maps), source=np.array(cell.source))


def load_latent_cell(path: str | os.PathLike, n_features: int | None = None) -> LatentCell:
    """The stored readout, or WeightsError naming the file and the reason (missing, corrupt, wrong size)."""
    from icsg.io import load_weights_npz

    f = load_weights_npz(path, "latent cell readout", ("coef", "intercept", "alpha", "n_maps", "source"),
                         "make it with `icsg fit-latent-prior DATA`, or read the cell from the coordinate channels "
                         "with cell_from='coords'")
    coef, intercept = f["coef"].astype(np.float64), f["intercept"].astype(np.float64)
    alpha, n_maps, source = float(f["alpha"]), int(f["n_maps"]), str(f["source"])
    if coef.ndim != 2 or coef.shape[1] != 3 or intercept.shape != (3,) or not np.all(np.isfinite(coef)):
        raise WeightsError(f"{path}: cell readout has coefficients {coef.shape} and intercept {intercept.shape}")
    if n_features is not None and coef.shape[0] != n_features:
        raise WeightsError(f"{path}: cell readout takes {coef.shape[0]} features, the VAE gives {n_features} "
                           "(latent + condition)")
    return LatentCell(coef, intercept, alpha, n_maps, source)


def cell_readout(folder: str | os.PathLike, cell_from: str, meta: dict) -> LatentCell | None:
    """The readout stored beside the VAE weights in ``folder`` for ``cell_from='latent'``, None for 'coords'."""
    if cell_from not in CELL_FROM:
        raise ValueError(f"cell_from must be one of {CELL_FROM}, got {cell_from!r}")
    if cell_from == "coords":
        return None
    n_features = int(meta["config"]["latent_dim"]) + int(meta["condition"]["n_bins"])
    return load_latent_cell(Path(folder) / CELL_FILE, n_features)
