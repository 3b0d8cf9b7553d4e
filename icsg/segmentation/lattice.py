"""Cell lengths from the (decoded) coordinate channels.

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


def lengths_from_coordinates(coords: np.ndarray, spec: GridSpec = GridSpec()) -> np.ndarray:
    """Cell lengths (a, b, c) in Å recovered from the coordinate channels."""
    line = fit_axis(coords, spec)
    return line[:, 0] * spec.size / (1 + 2 * spec.padding)
