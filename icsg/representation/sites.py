"""A crystal's sites as arrays: the canonical order in which the readout names them."""

from __future__ import annotations

import numpy as np


def canonical_order(site_Z, site_frac):
    """(S,) order of a crystal's sites: heaviest element first, the sites of one element by their fractional
    coordinates on a 1/8 grid (z, then y, then x), so that the slot head's 'k-th site of Z' is one site."""
    z = np.asarray(site_Z)
    g = np.mod(np.rint(np.mod(np.asarray(site_frac, np.float64), 1.0) * 8), 8)
    return np.lexsort((g[:, 0], g[:, 1], g[:, 2], -z.astype(np.int64)))


def canonical_sites(site_Z, site_frac):
    """(Z (B, S), frac (B, S, 3)) 0-padded arrays with each crystal's sites in ``canonical_order`` (padding last)."""
    zs, fr = np.array(site_Z), np.array(site_frac)
    for i in range(len(zs)):
        n = int((zs[i] > 0).sum())
        o = canonical_order(zs[i, :n], fr[i, :n])
        zs[i, :n], fr[i, :n] = zs[i, :n][o], fr[i, :n][o]
    return zs, fr
