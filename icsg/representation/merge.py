"""Merge same-species sites that are one atom seen twice (box boundary, blurred peaks)."""

from __future__ import annotations

import numpy as np
from pymatgen.core import Structure
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import squareform


def merge_periodic_duplicates(s: Structure, tol_A: float) -> Structure:
    """Merge same-species sites closer than tol under PBC (one site kept, at the mean)."""
    keep_species, keep_frac = [], []
    for el in s.composition.elements:
        idx = [i for i, site in enumerate(s) if site.specie == el]
        fc = s.frac_coords[idx]
        if len(idx) == 1:
            keep_species.append(el)
            keep_frac.append(fc[0])
            continue
        d = s.lattice.get_all_distances(fc, fc)
        np.fill_diagonal(d, 0.0)
        clusters = fcluster(linkage(squareform(d, checks=False), "single"), tol_A, "distance")
        for c in np.unique(clusters):
            members = fc[clusters == c]
            ref = members[0]
            shifted = ref + ((members - ref + 0.5) % 1.0 - 0.5)  # unwrap around the first member
            keep_species.append(el)
            keep_frac.append(np.mod(shifted.mean(0), 1.0))
    return Structure(s.lattice, keep_species, np.array(keep_frac))
