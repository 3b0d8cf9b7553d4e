"""The field's generation metrics (Xie et al. 2022, CDVAE Table 3; Jiao et al. 2023, DiffCSP Table 4).

    structure validity     every interatomic distance >= 0.5 Å and volume >= 0.1 Å³
    composition validity   SMACT charge neutrality with the Pauling electronegativity test (all-metal
                           compositions count as valid), oxidation states of SMACT's 'smact14' set, the set
                           CDVAE's evaluation used
    COV-R / COV-P          recall: share of reference crystals with a valid sample within both cut-offs;
                           precision: share of valid samples within both cut-offs of some reference crystal.
                           Structure: CrystalNN site fingerprints ('ops' preset) averaged over the sites;
                           composition: Magpie element-property features standardised with the protocol's
                           constants (``magpie_scaler.json``); Euclidean distances, cut-offs 0.2 and 4.0 for
                           perovskites. As CDVAE, the structure and composition minima are taken separately,
                           and precision counts against every valid sample (a failed fingerprint misses).
    d_ρ, d_elem            Wasserstein distances of density (g/cm³) and of the number of elements between the
                           valid samples and the reference set
    novelty, uniqueness    share of the valid samples not matched to a training crystal / to another sample
                           (pymatgen StructureMatcher, ``icsg.metrics.default_matcher``)
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

PEROVSKITE_CUTOFFS = (0.2, 4.0)


@dataclass
class Fingerprints:
    """Per crystal: structure validity, composition validity, structure fingerprint (61,), composition
    fingerprint (132,), density (g/cm³), number of elements. Fingerprints are NaN where featurisation failed."""

    struct_valid: np.ndarray
    comp_valid: np.ndarray
    struct_fp: np.ndarray
    comp_fp: np.ndarray
    density: np.ndarray
    n_elements: np.ndarray


def structure_valid(structure, cutoff_A: float = 0.5) -> bool:
    """Every distance between two sites (periodic images included) >= ``cutoff_A`` and volume >= 0.1 Å³."""
    if structure.volume < 0.1:
        return False
    if len(structure) == 1:
        return min(structure.lattice.abc) >= cutoff_A
    d = structure.distance_matrix + np.diag([np.inf] * len(structure))
    return bool(d.min() >= cutoff_A) and min(structure.lattice.abc) >= cutoff_A


def composition_valid(composition) -> bool:
    """SMACT charge neutrality + electronegativity test; alloys (all metals) are valid."""
    from smact.screening import smact_validity

    try:
        return bool(smact_validity(composition, use_pauling_test=True, include_alloys=True,
                                   oxidation_states_set="smact14"))
    except (ValueError, KeyError, TypeError):
        return False


def _one(structure):
    from matminer.featurizers.composition import ElementProperty
    from matminer.featurizers.site import CrystalNNFingerprint

    if structure is None:  # a sample that did not decode: invalid, no fingerprints
        return {"struct_valid": False, "comp_valid": False, "density": float("nan"), "n_elements": 0,
                "struct_fp": np.full(61, np.nan), "comp_fp": np.full(132, np.nan)}
    out = {"struct_valid": structure_valid(structure), "comp_valid": composition_valid(structure.composition),
           "density": float(structure.density), "n_elements": len(structure.composition.elements),
           "struct_fp": np.full(61, np.nan), "comp_fp": np.full(132, np.nan)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            out["comp_fp"] = np.asarray(ElementProperty.from_preset("magpie", impute_nan=False)
                                        .featurize(structure.composition), float)
        except Exception:  # noqa: BLE001  matminer raises many kinds on odd compositions: a NaN row
            pass
        if not out["struct_valid"]:  # coverage reads valid samples only; CrystalNN crawls on overlapping atoms
            return out
        try:
            fp = CrystalNNFingerprint.from_preset("ops")
            out["struct_fp"] = np.mean([fp.featurize(structure, i) for i in range(len(structure))], axis=0)
        except Exception:  # noqa: BLE001  CrystalNN fails on some invalid structures: a NaN row
            pass
    return out


def fingerprints(structures: list, workers: int = 1, desc: str = "fingerprints", progress: bool = True
                 ) -> Fingerprints:
    """Validity and fingerprints of each crystal (None: a sample that did not decode, invalid); CrystalNN costs
    ~0.05 s per site, so worker processes help."""
    from icsg.parallel import pmap

    rows = list(pmap(_one, structures, workers=workers, desc=desc, total=len(structures), progress=progress,
                     chunksize=4))
    if not rows:
        return Fingerprints(*(np.zeros(0) for _ in range(6)))
    return Fingerprints(np.array([r["struct_valid"] for r in rows]), np.array([r["comp_valid"] for r in rows]),
                        np.stack([r["struct_fp"] for r in rows]), np.stack([r["comp_fp"] for r in rows]),
                        np.array([r["density"] for r in rows]), np.array([r["n_elements"] for r in rows]))


def scaled_composition(comp_fp: np.ndarray) -> np.ndarray:
    """Magpie features standardised with the protocol's constants; NaN features become 0."""
    import json
    from pathlib import Path

    sc = json.loads((Path(__file__).with_name("magpie_scaler.json")).read_text())
    z = (np.asarray(comp_fp, float) - np.asarray(sc["means"])) / np.asarray(sc["stds"])
    return np.where(np.isnan(z), 0.0, z)


def coverage(gen: Fingerprints, ref: Fingerprints, cutoffs: tuple = PEROVSKITE_CUTOFFS) -> dict:
    """COV-R and COV-P of the valid samples against the reference crystals."""
    from scipy.spatial.distance import cdist

    valid = gen.struct_valid & gen.comp_valid
    g = valid & np.isfinite(gen.struct_fp).all(1)
    r = np.isfinite(ref.struct_fp).all(1)
    if not g.any() or not r.any():
        return {"cov_recall": 0.0, "cov_precision": 0.0, "n_valid": int(valid.sum()), "n_ref": int(r.sum())}
    d_struct = cdist(gen.struct_fp[g], ref.struct_fp[r])
    d_comp = cdist(scaled_composition(gen.comp_fp[g]), scaled_composition(ref.comp_fp[r]))
    s_cut, c_cut = cutoffs
    recall = np.mean((d_struct.min(0) <= s_cut) & (d_comp.min(0) <= c_cut))
    precision = np.sum((d_struct.min(1) <= s_cut) & (d_comp.min(1) <= c_cut)) / valid.sum()
    return {"cov_recall": float(recall), "cov_precision": float(precision), "n_valid": int(valid.sum()),
            "n_ref": int(r.sum())}


def distribution_distances(gen: Fingerprints, ref: Fingerprints) -> dict:
    """Wasserstein distances of density (g/cm³) and number of elements, valid samples against the reference."""
    from scipy.stats import wasserstein_distance

    v = gen.struct_valid & gen.comp_valid
    if not v.any():
        return {"d_density_g_cm3": float("nan"), "d_n_elements": float("nan")}
    return {"d_density_g_cm3": float(wasserstein_distance(gen.density[v], ref.density)),
            "d_n_elements": float(wasserstein_distance(gen.n_elements[v], ref.n_elements))}


def generation_metrics(gen: Fingerprints, ref: Fingerprints, cutoffs: tuple = PEROVSKITE_CUTOFFS) -> dict:
    """The protocol's table row: validity, coverage and distribution distances."""
    n = max(len(gen.struct_valid), 1)
    return {"n_samples": int(len(gen.struct_valid)),
            "structure_validity": float(gen.struct_valid.sum() / n),
            "composition_validity": float(gen.comp_valid.sum() / n),
            "overall_validity": float((gen.struct_valid & gen.comp_valid).sum() / n),
            **coverage(gen, ref, cutoffs), **distribution_distances(gen, ref)}


def success_rates(predicted: np.ndarray, training_values: np.ndarray, shares=(0.05, 0.10, 0.15)) -> dict:
    """SR5 / SR10 / SR15: share of ``predicted`` values (property to minimise) in the training set's lowest
    5 / 10 / 15 % (Xie et al. 2022, property optimisation)."""
    predicted = np.asarray(predicted, float)
    predicted = predicted[np.isfinite(predicted)]
    cuts = np.quantile(np.asarray(training_values, float)[np.isfinite(training_values)], shares)
    return {f"SR{round(100 * q)}": float(np.mean(predicted <= c)) if predicted.size else float("nan")
            for q, c in zip(shares, cuts)}
