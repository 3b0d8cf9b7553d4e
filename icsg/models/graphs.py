"""Crystal graphs for the CGCNN (Xie & Grossman 2018), as torch-geometric ``Data``.

Nodes: one per site, features = z-scored Magpie element properties (matminer's
``MagpieData``) + one-hot period and group. Edges: each site to its up to 12
nearest neighbours within 8 Å, periodic images included (pymatgen's neighbour
list), edge features = distance expanded in Gaussians
exp(-(d - μ_k)^2 / w^2), μ_k = 0, 0.2, ..., 8 Å, w = 0.2 Å.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from pymatgen.core import Element, Structure
from torch_geometric.data import Data

MAGPIE_PROPS = (
    "Number", "MendeleevNumber", "AtomicWeight", "MeltingT", "CovalentRadius", "Electronegativity",
    "NsValence", "NpValence", "NdValence", "NfValence", "NValence", "NsUnfilled", "NpUnfilled",
    "NdUnfilled", "NfUnfilled", "NUnfilled", "GSvolume_pa", "GSbandgap", "GSmagmom", "FirstIonizationEnergy",
    "ElectronAffinity", "Polarizability",
)
MAX_Z = 100


@dataclass(frozen=True)
class GraphConfig:
    max_neighbours: int = 12
    cutoff_A: float = 8.0
    gauss_step_A: float = 0.2
    gauss_width_A: float = 0.2

    @property
    def n_edge_features(self) -> int:
        return int(round(self.cutoff_A / self.gauss_step_A)) + 1


@lru_cache(maxsize=1)
def element_feature_table() -> np.ndarray:
    """(MAX_Z + 1, F) float32; row Z holds element Z's features (row 0 unused)."""
    from matminer.utils.data import MagpieData

    magpie = MagpieData()
    raw = np.full((MAX_Z + 1, len(MAGPIE_PROPS)), np.nan)
    rows = np.zeros((MAX_Z + 1, 7))
    cols = np.zeros((MAX_Z + 1, 18))
    for z in range(1, MAX_Z + 1):
        el = Element.from_Z(z)
        for j, prop in enumerate(MAGPIE_PROPS):
            try:
                raw[z, j] = float(magpie.get_elemental_property(el, prop))
            except (KeyError, TypeError, ValueError):
                pass
        rows[z, min(el.row, 7) - 1] = 1
        cols[z, max(1, min(el.group, 18)) - 1] = 1
    mean = np.nanmean(raw[1:], axis=0)
    std = np.nanstd(raw[1:], axis=0) + 1e-8
    z = (raw - mean) / std
    z[np.isnan(z)] = 0.0  # missing data sits at the mean
    return np.concatenate([z, rows, cols], axis=1).astype(np.float32)


def n_atom_features() -> int:
    return element_feature_table().shape[1]


def structure_to_graph(s: Structure, cfg: GraphConfig = GraphConfig(), y: float | None = None) -> Data:
    """One crystal -> Data(x, edge_index, edge_attr, [y]). Edges point neighbour -> centre."""
    table = element_feature_table()
    zs = [site.specie.Z for site in s]
    if max(zs) > MAX_Z:
        raise ValueError(f"{s.composition.reduced_formula}: element with Z > {MAX_Z}")
    centres, neigh, _, dist = s.get_neighbor_list(r=cfg.cutoff_A)
    src, dst, d = [], [], []
    for i in range(len(s)):
        sel = np.where(centres == i)[0]
        if sel.size == 0:
            continue
        sel = sel[np.argsort(dist[sel], kind="stable")[: cfg.max_neighbours]]
        src.extend(neigh[sel].tolist())
        dst.extend([i] * len(sel))
        d.extend(dist[sel].tolist())
    mu = np.arange(cfg.n_edge_features) * cfg.gauss_step_A
    d = np.asarray(d, dtype=np.float64)
    edge_attr = np.exp(-((d[:, None] - mu[None, :]) ** 2) / cfg.gauss_width_A**2)
    data = Data(
        x=torch.from_numpy(table[zs]),
        edge_index=torch.tensor([src, dst], dtype=torch.long).reshape(2, -1),
        edge_attr=torch.from_numpy(edge_attr.astype(np.float32)).reshape(-1, cfg.n_edge_features),
        distances=torch.from_numpy(d.astype(np.float32)),
    )
    if y is not None:
        data.y = torch.tensor([float(y)], dtype=torch.float32)
    return data
