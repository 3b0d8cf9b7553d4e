"""The fast reading: a known composition put on segmented sites, on hand-built crystals."""
import numpy as np
import pytest

from icsg.grid import GridSpec
from icsg.segmentation.assign import (assign_elements, distinct_arrangements, element_slots, periodic_clusters,
                                      profile_arrangement)


def test_element_slots_repeat_each_element_by_its_count():
    assert element_slots([1, 0, 3], [38, 20, 8]).tolist() == [38, 8, 8, 8]
    assert element_slots([0, 0], [1, 2]).size == 0


def test_assignment_drops_spurious_sites_and_uses_spares_only_when_short():
    cost = np.array([[0.1, 5.0], [5.0, 0.2], [3.0, 3.0]])  # 3 sites, 2 slots: the third is dropped
    rows, slots = assign_elements(cost)
    assert sorted(zip(slots.tolist(), rows.tolist())) == [(0, 0), (1, 1)]
    rows, slots = assign_elements(cost[:1], spare_cost=np.array([[9.0, 0.0]]), spare_penalty=2.0)
    assert dict(zip(slots.tolist(), rows.tolist())) == {0: 0, 1: 1}  # slot 1 goes to the spare (row 1)


def test_periodic_duplicates_cluster_across_the_cell_boundary():
    frac = np.array([[0.01, 0.5, 0.5], [0.99, 0.5, 0.5], [0.5, 0.5, 0.5]])
    lab = periodic_clusters(frac, np.array([4.0, 4.0, 4.0]), tol_A=0.5)
    assert lab[0] == lab[1] != lab[2]


def test_distinct_arrangements_of_a_multiset():
    a = distinct_arrangements(np.array([38, 22, 8, 8, 8]))
    assert a.shape == (20, 5) and len({tuple(r) for r in a}) == 20
    assert distinct_arrangements(np.arange(10), limit=100) is None


def _true_map(structure):
    from icsg.representation.density import encode

    spec = GridSpec()
    e = encode(structure, spec)
    vox = spec.cartesian_to_index(structure.cart_coords, np.array(structure.lattice.abc))
    return spec, e, vox


def test_profile_fit_puts_a_known_composition_right_on_an_ambiguous_map(perovskite):
    """The classifier says nothing (uniform class probabilities), the sites are known: the eq.-1 profile decides
    which site is Sr, which Ti and which O, from a start with Sr and Ti swapped."""
    spec, e, vox = _true_map(perovskite)
    classes = np.array([0, 8, 22, 38])
    uniform = np.full((len(vox), len(classes)), np.log(0.25))
    start = np.array([22, 38, 8, 8, 8])  # Sr and Ti swapped
    z = profile_arrangement(e.density, vox, np.array(perovskite.lattice.abc), start, uniform, classes, spec)
    assert z.tolist() == [site.specie.Z for site in perovskite]


def test_read_one_recovers_the_perovskite_from_its_map_and_composition(perovskite):
    from icsg.generation.reading import FastReadingConfig, read_one
    from icsg.segmentation.watershed import sites_to_structure

    spec, e, vox = _true_map(perovskite)
    classes = np.array([0, 8, 22, 38])
    probs = np.full(e.density.shape + (4,), 0.25, dtype=np.float32)  # an ambiguous classifier
    probs[..., 0] = np.where(e.occupancy > 0, 0.0, 1.0)
    s = read_one(e.density, e.species, e.occupancy.astype(np.float32), probs, classes, np.array([3, 1, 1]),
                 [8, 22, 38], np.array(perovskite.lattice.abc), spec, FastReadingConfig())
    got = sites_to_structure(s.z, s.centroids_vox, s.abc_A, spec)
    from pymatgen.analysis.structure_matcher import StructureMatcher

    assert got.composition.reduced_formula == "SrTiO3" and len(got) == 5
    assert StructureMatcher(ltol=0.3, stol=0.5, angle_tol=10).fit(perovskite, got)
    with pytest.raises(ValueError, match="empty composition"):
        read_one(e.density, e.species, e.occupancy.astype(np.float32), probs, classes, np.zeros(3, int),
                 [8, 22, 38], np.array(perovskite.lattice.abc), spec)
