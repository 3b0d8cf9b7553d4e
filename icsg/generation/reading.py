"""The fast reading of decoded maps: positions from the segmented map, elements and cell from the code.

For every crystal of a decoded batch: the UNet's occupancy is split into regions (one site per
region, ``icsg.segmentation.watershed.find_sites``), duplicates of one atom across the box boundary are
merged, and the composition the readout heads give is put on the sites by one linear assignment on the
UNet's class probabilities (``icsg.segmentation.assign``). The cell lengths come from the readout heads.
No search, no encoder in the loop: the cost per crystal is one decoder and one UNet pass plus a
watershed and a small assignment.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from icsg.generation.consistency import Sites, spare_positions
from icsg.grid import GridSpec
from icsg.parallel import pmap
from icsg.segmentation.assign import (assign_elements, class_columns, distinct_arrangements, element_slots,
                                     periodic_clusters, periodic_distances_A, place_slots, profile_arrangement)
from icsg.segmentation.watershed import SegmentationConfig, check_cell_lengths, find_sites

READINGS = ("fast", "exact")


@dataclass(frozen=True)
class FastReadingConfig:
    """Args:
        duplicate_tol_A: sites closer than this (Å, periodic) are one atom.
        prior_radius_vox: class probabilities are averaged within this radius of each site.
        spare_penalty: extra cost of a site placed at a spare position (a local maximum the regions miss).
        max_spares: spare positions offered when the map has fewer regions than the composition has sites.
        profile_weight: after the assignment, the order of the elements over the chosen sites is re-decided by
            the eq.-1 misfit to the map minus this weight times the class log-probabilities
            (``icsg.segmentation.assign.profile_arrangement``); None = the assignment alone.
        snap_positions: move each site to where the code puts it (the readout's position head,
            ``DensityCodec.snap_positions``); the map's sites are ~0.1 Å off.
        consistent: choose among candidate readings (``candidates``) the one the readout encoder maps
            closest to the code's z_read (``DensityCodec``): the amortised form of the exact reading's
            search through the encoder, one batched encoder pass instead of an optimisation.
        slot_tols_A: the slot readings among the candidates: the readout's slots (each element at the
            position the code gives it) placed on the map site matched to each within this distance (Å;
            0 = the code's positions alone).
        max_arrangements: orders of the composition over the map's sites offered as candidates (all
            distinct orders when there are at most this many, else none).
        alt_compositions: the next most probable compositions of the heads (one element's count changed)
            whose slot readings join the candidates, for codes whose composition the heads misread.
        min_separation_A: a candidate with two atoms closer than this (Å, periodic; the structure-validity
            cut-off of the field's protocol) is chosen only when every candidate of its map is; a code far
            from the training codes can put two slots on one spot.
        ionic: when generating, prefer among the candidates apart those whose atoms have only oppositely
            charged nearest neighbours (``ionic_contacts``, signs from charge-balanced oxidation states): a
            code drawn from a prior can leave the order of the elements over the sites to chance. Codes of
            real crystals (reconstruction) choose by the code alone, which reads them better.
        min_contact_ratio: when generating, prefer (after ionic contacts) candidates whose closest contact is at
            least this fraction of the two atoms' summed atomic radii (``contact_ratio``): a code between real
            crystals' codes can put two slots ~1 Å apart, overlapping atoms the 0.5 Å validity cut-off passes.
            0.65: no perov_5 training crystal comes closer (2,000 checked: smallest 0.649, 1 % below 0.70).
            0 = no preference.
    """

    duplicate_tol_A: float = 1.0
    prior_radius_vox: float = 1.5
    spare_penalty: float = 2.0
    max_spares: int = 6
    profile_weight: float | None = 1.0
    snap_positions: bool = True
    consistent: bool = True
    slot_tols_A: tuple = (0.0, 0.3)
    max_arrangements: int = 720
    alt_compositions: int = 3
    min_separation_A: float = 0.5
    ionic: bool = True
    min_contact_ratio: float = 0.65


REGIONS = SegmentationConfig(split_by_species=False, species_from="labels")


def _merge_duplicates(cents: np.ndarray, lp: np.ndarray, abc: np.ndarray, spec: GridSpec, tol_A: float):
    """One site per cluster of periodic duplicates: the member inside the cell (else the first), with the
    mean class probability of the cluster."""
    if len(cents) < 2:
        return cents, lp
    frac = spec.index_to_cartesian(cents, abc) / abc
    labels = periodic_clusters(np.mod(frac, 1.0), abc, tol_A)
    keep_c, keep_lp = [], []
    for lab in np.unique(labels):
        members = np.flatnonzero(labels == lab)
        inside = [m for m in members if np.all((frac[m] >= -1e-6) & (frac[m] < 1.0))]
        keep_c.append(cents[(inside or list(members))[0]])
        keep_lp.append(np.log(np.exp(lp[members]).mean(0)))
    return np.array(keep_c), np.array(keep_lp)


def read_one(density: np.ndarray, species: np.ndarray, occupancy: np.ndarray, class_probs: np.ndarray,
             classes_Z: np.ndarray, counts: np.ndarray, elements_Z, abc_A: np.ndarray, spec: GridSpec,
             cfg: FastReadingConfig = FastReadingConfig()) -> Sites:
    """One decoded map + the heads' composition (``counts`` over ``elements_Z``) and cell (Å) -> Sites.
    ValueError (with the reason) when there is nothing to read."""
    from icsg.segmentation.species_fit import site_class_log_probs

    abc = check_cell_lengths(abc_A)
    slots = element_slots(counts, elements_Z)
    if len(slots) == 0:
        raise ValueError("the readout heads give an empty composition")
    _, cents = find_sites(species, density, occupancy, REGIONS)
    lp = site_class_log_probs(class_probs, cents, cfg.prior_radius_vox) if len(cents) else np.zeros((0, len(classes_Z)))
    cents, lp = _merge_duplicates(cents, lp, abc, spec, cfg.duplicate_tol_A)
    cost = -class_columns(lp, classes_Z, slots) if len(cents) else np.zeros((0, len(slots)))
    spares, spare_cost = np.zeros((0, 3)), None
    if len(cents) < len(slots):
        z_now = np.asarray(classes_Z)[np.argmax(lp, axis=1)] if len(cents) else np.zeros(0, np.int64)
        spares = spare_positions(density, np.maximum(z_now, 1), cents, abc, spec, max_spares=cfg.max_spares)
        if len(spares):
            spare_cost = -class_columns(site_class_log_probs(class_probs, spares, cfg.prior_radius_vox),
                                        classes_Z, slots)
    rows, order = assign_elements(cost, spare_cost, cfg.spare_penalty)
    if len(rows) < len(slots):
        raise ValueError(f"the map has {len(rows)} sites for the {len(slots)} of the composition")
    where = np.concatenate([cents.reshape(-1, 3), spares.reshape(-1, 3)])[rows].astype(np.float64)
    z = slots[order].astype(np.int64)
    if cfg.profile_weight is not None:
        lp_all = np.concatenate([lp.reshape(-1, len(classes_Z)),
                                 site_class_log_probs(class_probs, spares, cfg.prior_radius_vox) if len(spares)
                                 else np.zeros((0, len(classes_Z)))])[rows]
        z = profile_arrangement(density, where, abc, z, lp_all, classes_Z, spec, cfg.profile_weight)
    return Sites(abc, z, where)


def slot_reading(map_sites: Sites | None, slot_Z: np.ndarray, slot_frac: np.ndarray, abc_A: np.ndarray,
                 spec: GridSpec, tol_A: float) -> Sites:
    """The readout's slots (elements (n,) at fractional positions (n, 3)) as Sites: each on the map site matched
    to it within ``tol_A`` (``icsg.segmentation.assign.place_slots``), else where the code puts it."""
    abc = np.asarray(abc_A, dtype=np.float64)
    frac = (np.mod(spec.index_to_cartesian(map_sites.centroids_vox, map_sites.abc_A) / map_sites.abc_A, 1.0)
            if map_sites is not None and len(map_sites.z) else np.zeros((0, 3)))
    where = place_slots(frac, slot_frac, abc, tol_A)
    return Sites(abc, np.asarray(slot_Z, np.int64).copy(), spec.cartesian_to_index(where * abc, abc))


def candidates(read: Sites | None, slot_Z: np.ndarray, slot_frac: np.ndarray, abc_A: np.ndarray, spec: GridSpec,
               cfg: FastReadingConfig = FastReadingConfig()) -> list[Sites]:
    """Readings of one decoded map for the consistency choice: the map reading ``read`` (first), the other
    distinct orders of its elements over its sites, and the slot readings of ``cfg.slot_tols_A``."""
    out = []
    if read is not None:
        out.append(read)
        orders = distinct_arrangements(read.z, limit=cfg.max_arrangements)
        for order in orders if orders is not None else []:
            if not np.array_equal(order, read.z):
                out.append(Sites(read.abc_A, order, read.centroids_vox.copy()))
    if len(slot_Z) and np.all(np.asarray(abc_A) > 0):
        out += [slot_reading(read, slot_Z, slot_frac, abc_A, spec, tol) for tol in cfg.slot_tols_A]
    return out


def _site_distances_A(s: Sites, spec: GridSpec) -> np.ndarray:
    """(n, n) minimum-image distances (Å) between the sites of ``s`` (an orthogonal cell)."""
    abc = np.asarray(s.abc_A, dtype=np.float64)
    frac = spec.index_to_cartesian(np.asarray(s.centroids_vox, dtype=np.float64), abc) / abc
    return periodic_distances_A(frac, frac, abc)


def min_separation_A(s: Sites, spec: GridSpec) -> float:
    """Smallest periodic distance (Å) between two sites of an orthogonal cell; inf for fewer than two."""
    if len(s.z) < 2:
        return float("inf")
    return float(_site_distances_A(s, spec)[np.triu_indices(len(s.z), 1)].min())


@lru_cache(maxsize=65536)
def _signs(z_counts: tuple) -> dict | None:
    from pymatgen.core import Composition, Element

    comp = Composition({Element.from_Z(int(z)): n for z, n in z_counts})
    # the ICSD's common states first; then every known state (BaFeO3 needs Fe4+, which the ICSD list lacks)
    guesses = comp.oxi_state_guesses(max_sites=-50) or comp.oxi_state_guesses(max_sites=-50, all_oxi_states=True)
    if not guesses:
        return None
    return {Element(el).Z: int(np.sign(q)) for el, q in guesses[0].items()}


def ion_signs(z: np.ndarray) -> dict | None:
    """{Z: +1 cation, -1 anion, 0} of the most probable charge-balanced oxidation states of the elements ``z``
    (pymatgen's ``oxi_state_guesses``); None when no assignment balances."""
    zz, n = np.unique(np.asarray(z, dtype=np.int64), return_counts=True)
    return _signs(tuple(zip(zz.tolist(), n.tolist())))


def ionic_contacts(s: Sites, spec: GridSpec, signs: dict | None, tol: float = 1.1) -> bool:
    """True when every atom's nearest neighbours (within ``tol`` × its nearest distance, periodic images of an
    orthogonal cell included) carry the opposite charge sign, as in an ionic crystal: a reading that puts an
    anion on a cation's site breaks it. True when the signs are unknown (``signs`` None)."""
    if signs is None or len(s.z) < 2:
        return True
    dist = _site_distances_A(s, spec)
    np.fill_diagonal(dist, np.min(s.abc_A))  # the atom's own image one cell away
    sign = np.array([signs.get(int(z), 0) for z in s.z])
    near = dist <= tol * dist.min(1, keepdims=True)
    same = near & (sign[:, None] * sign[None, :] >= 0)
    return not same.any()


@lru_cache(maxsize=None)
def _atomic_radius_A(z: int) -> float:
    from pymatgen.core import Element

    r = Element.from_Z(int(z)).atomic_radius  # empirical (Slater) radius, Å
    return float(r) if r is not None else 1.5


def contact_ratio(s: Sites, spec: GridSpec) -> float:
    """Smallest periodic distance between two atoms of ``s`` (an atom and its own image one cell away included)
    over the sum of their atomic radii (pymatgen's empirical radii); inf for an empty crystal."""
    if len(s.z) == 0:
        return float("inf")
    dist = _site_distances_A(s, spec)
    np.fill_diagonal(dist, np.min(s.abc_A))
    r = np.array([_atomic_radius_A(int(z)) for z in s.z])
    return float((dist / (r[:, None] + r[None, :])).min())


def choose(misfit: np.ndarray, separation_A: np.ndarray, min_separation_A: float, *preferences) -> int:
    """Index of the candidate with the smallest finite misfit among those whose atoms stay ``min_separation_A``
    apart and that meet every one of ``preferences`` (boolean masks, most important first; None = all meet it);
    the preferences are given up from the last while no candidate meets them, then the separation; -1 when no
    misfit is finite."""
    misfit = np.asarray(misfit, dtype=np.float64)
    finite = np.isfinite(misfit)
    apart = finite & (np.asarray(separation_A) >= min_separation_A)
    prefs = [np.asarray(p, bool) for p in preferences if p is not None]
    pools = [apart & np.logical_and.reduce(prefs[:k], initial=True) for k in range(len(prefs), -1, -1)]
    for pool in pools + [finite]:
        if pool.any():
            return int(np.argmin(np.where(pool, misfit, np.inf)))
    return -1


def _read(args):
    try:
        return read_one(*args), None
    except ValueError as exc:
        return None, str(exc)


def read_batch(density: np.ndarray, species: np.ndarray, occupancy: np.ndarray, class_probs: np.ndarray,
               classes_Z: np.ndarray, counts: np.ndarray, elements_Z, cell_A: np.ndarray, spec: GridSpec,
               cfg: FastReadingConfig = FastReadingConfig(), workers: int = 1) -> list[tuple]:
    """[(Sites or None, reason)] for a batch (B, ...) of decoded maps with the heads' counts (B, E) and cells (B, 3)."""
    items = [(density[i], species[i], occupancy[i], class_probs[i], classes_Z, counts[i], elements_Z, cell_A[i], spec,
              cfg) for i in range(len(density))]
    return list(pmap(_read, items, workers=workers, total=len(items), progress=False, chunksize=4))

