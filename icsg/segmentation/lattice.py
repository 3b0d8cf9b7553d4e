"""Cell lengths from the (decoded) coordinate channels.

Three estimators, all exact on the encoder's grid and none with the original
code's (n-1)/n bias:

* ``lsq`` (default): channel x is a times a fixed profile, C_x(i, j, k) = a·f(i) with
  f(i) = (-p + (i + 1/2)(1 + 2p)/n) / L, so the least-squares a = Σ C_x f / Σ f² uses
  level and ramp of every voxel at once, so it is the least sensitive to a decoder's noise
  in either.
* ``centre``: the box is symmetric about the cell centre, so the median of
  channel x over all voxels is a/2: a = 2·L·median(C_x). It needs only the channel's
  level, which a VAE decoder learns long before the ramp.
* ``slope``: the line fit below.

Channel x of C holds x_i / L with x_i = -p·a + (i + 1/2)·a(1 + 2p)/n, a straight
line in the voxel index i whose slope gives a = slope·L·n/(1 + 2p). We fit that
line robustly: the median of the channel over each slice, then a Theil-Sen line
through the n slice medians (scipy.stats.theilslopes), so a few bad voxels or
slices in a decoded map do not move the estimate. This replaces the original
code's (max - min) estimate, which comes out (n-1)/n of the truth.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import theilslopes

from icsg.grid import GridSpec


def fit_axis(coords: np.ndarray, spec: GridSpec = GridSpec()) -> np.ndarray:
    """Per axis (slope, intercept) in Å per voxel and Å, from C of shape (n, n, n, 3)."""
    coords = np.asarray(coords, dtype=np.float64)
    n = coords.shape[0]
    idx = np.arange(n, dtype=np.float64)
    out = np.zeros((3, 2))
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        medians = np.median(coords[..., axis], axis=other) * spec.length_scale_A
        slope, intercept, _, _ = theilslopes(medians, idx)
        out[axis] = slope, intercept
    return out


def coordinate_profile(spec: GridSpec = GridSpec()) -> np.ndarray:
    """f(i): channel value per voxel index for a cell length of 1 Å (C_x = a·f(i))."""
    n = spec.size
    return (-spec.padding + (np.arange(n) + 0.5) * (1 + 2 * spec.padding) / n) / spec.length_scale_A


def lengths_from_coordinates(coords: np.ndarray, spec: GridSpec = GridSpec(), method: str = "lsq") -> np.ndarray:
    """Cell lengths (a, b, c) in Å recovered from the coordinate channels (n, n, n, 3)."""
    if method == "lsq":
        c = np.asarray(coords, dtype=np.float64)
        f = coordinate_profile(GridSpec(**{**spec.to_dict(), "size": c.shape[0]}))
        shape = [(-1, 1, 1), (1, -1, 1), (1, 1, -1)]
        norm = c.shape[0] ** 2 * np.sum(f**2)  # Σ over all voxels of f²
        return np.array([np.sum(c[..., a] * f.reshape(shape[a])) / norm for a in range(3)])
    if method == "centre":
        c = np.asarray(coords, dtype=np.float64).reshape(-1, 3)
        return 2.0 * spec.length_scale_A * np.median(c, axis=0)
    if method == "slope":
        line = fit_axis(coords, spec)
        return line[:, 0] * spec.size / (1 + 2 * spec.padding)
    raise ValueError(f"unknown lattice method '{method}' (lsq, centre or slope)")
