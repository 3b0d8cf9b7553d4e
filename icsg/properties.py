"""The eight properties of the paper's Table 1 (plus the perovskite heat of formation used as
the VAE condition): units, target transform, and which columns of ``../shared/data`` hold them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class PropertySpec:
    name: str
    unit: str
    log10: bool
    sources: tuple  # ((relative csv path, column or tuple of columns -> min), ...)
    label: str

    def transform(self, y: np.ndarray) -> np.ndarray:
        return np.log10(y) if self.log10 else np.asarray(y, dtype=float)

    def inverse(self, t: np.ndarray) -> np.ndarray:
        return 10.0 ** np.asarray(t) if self.log10 else np.asarray(t, dtype=float)


PROPERTIES: dict[str, PropertySpec] = {p.name: p for p in [
    PropertySpec("formation_energy_per_atom", "eV/atom", False,
                 (("wbm_sample/all.csv.gz", "formation_energy_per_atom"),
                  ("mp_20_sample/all.csv.gz", "formation_energy_per_atom")), "formation energy"),
    PropertySpec("energy_per_atom", "eV/atom", False, (("wbm_sample/all.csv.gz", "energy_per_atom"),),
                 "energy per atom"),
    PropertySpec("band_gap", "eV", False,
                 (("perov_5/train.csv.gz", ("dir_gap", "ind_gap")), ("perov_5/val.csv.gz", ("dir_gap", "ind_gap")),
                  ("mp_dielectric/all.csv.gz", "band_gap"), ("mp_20_sample/all.csv.gz", "band_gap")), "band gap"),
    PropertySpec("bulk_modulus", "GPa", True, (("mp_elastic_binaries/all.csv.gz", "bulk_modulus_vrh"),),
                 "bulk modulus"),
    PropertySpec("shear_modulus", "GPa", True, (("mp_elastic_binaries/all.csv.gz", "shear_modulus_vrh"),),
                 "shear modulus"),
    PropertySpec("poisson_ratio", "", False, (("mp_elastic_binaries/all.csv.gz", "poisson_ratio"),),
                 "Poisson ratio"),
    PropertySpec("refractive_index", "", False, (("mp_dielectric/all.csv.gz", "refractive_index"),),
                 "refractive index"),
    PropertySpec("dielectric_constant", "", True, (("mp_dielectric/all.csv.gz", "dielectric_total"),),
                 "dielectric constant"),
    PropertySpec("heat_ref", "eV (Castelli, as distributed)", False,
                 (("perov_5/train.csv.gz", "heat_ref"), ("perov_5/val.csv.gz", "heat_ref")),
                 "perovskite heat of formation"),
]}

PAPER_EIGHT = ("formation_energy_per_atom", "energy_per_atom", "band_gap", "bulk_modulus", "shear_modulus",
               "poisson_ratio", "refractive_index", "dielectric_constant")
GAP_GATED = ("refractive_index", "dielectric_constant")


def default_data_root() -> Path:
    return Path(__file__).resolve().parents[1].parent / "shared" / "data"
