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


def test_slots_take_the_nearest_map_site_within_the_tolerance_and_keep_their_own_otherwise():
    from icsg.segmentation.assign import place_slots

    abc = np.array([4.0, 4.0, 4.0])
    slots = np.array([[0.0, 0.0, 0.0], [0.5, 0.5, 0.5]])
    near = np.array([[0.98, 0.01, 0.0], [0.5, 0.5, 0.3]])  # first 0.1 Å away (across the boundary), second 0.8 Å
    out = place_slots(near, slots, abc, tol_A=0.3)
    assert np.allclose(out[0], [0.98, 0.01, 0.0]) and np.allclose(out[1], [0.5, 0.5, 0.5])
    assert np.allclose(place_slots(near, slots, abc, tol_A=0.0), slots)
    assert np.allclose(place_slots(np.zeros((0, 3)), slots, abc, tol_A=0.3), slots)


def test_runner_up_compositions_change_the_least_certain_count_first():
    from icsg.generation.composition import runner_up_counts

    lp = np.log(np.array([[0.1, 0.9, 0.0001, 1e-9],     # element 0: 1 (sure)
                          [0.001, 0.6, 0.39, 0.009],  # element 1: 1, 2 a close second
                          [1e-9, 0.01, 0.01, 0.98]]))  # element 2: 3
    alts = runner_up_counts(lp, 2)
    assert alts[0].tolist() == [1, 2, 3] and alts[1].tolist() == [0, 1, 3]


def test_candidates_hold_the_map_reading_its_orders_and_the_slot_readings(perovskite):
    from icsg.generation.consistency import Sites
    from icsg.generation.reading import FastReadingConfig, candidates

    spec, _, vox = _true_map(perovskite)
    abc = np.array(perovskite.lattice.abc)
    read = Sites(abc, np.array([38, 22, 8, 8, 8]), vox.astype(float))
    frac = perovskite.frac_coords + 0.02  # the code's positions, 0.08 Å off the map's
    cands = candidates(read, read.z, frac, abc, spec, FastReadingConfig(slot_tols_A=(0.0, 0.3)))
    assert cands[0] is read and len(cands) == 20 + 2  # 20 distinct orders of SrTiO3 (the first is the map's), 2 slots
    code_only, on_map = cands[-2], cands[-1]
    assert np.allclose(code_only.centroids_vox, spec.cartesian_to_index(np.mod(frac, 1) * abc, abc))
    assert np.allclose(on_map.centroids_vox, vox, atol=1e-6)
    assert candidates(None, np.zeros(0, int), np.zeros((0, 3)), abc, spec) == []


def test_the_consistent_reading_repairs_a_map_reading_with_two_elements_swapped(perovskite):
    """Shipped weights: SrTiO3's code, its map read with Sr and Ti swapped; the readout encoder's misfit picks the
    right order back."""
    from icsg.data.dataset import condition_onehot
    from icsg.generation.codec import DensityCodec
    from icsg.generation.consistency import Sites
    from icsg.generation.reading import FastReadingConfig

    codec = DensityCodec(fast=FastReadingConfig())
    cond = condition_onehot([1.0], codec.condition)
    z = codec.encode([perovskite], cond)
    z_read = codec.split(z)[1]
    counts, logp, cell, _ = codec.heads(z_read)
    spec, abc = codec.spec, np.array(perovskite.lattice.abc)
    vox = spec.cartesian_to_index(perovskite.cart_coords, abc)
    swapped = Sites(abc, np.array([22, 38, 8, 8, 8]), vox)
    right = Sites(abc, np.array([38, 22, 8, 8, 8]), vox.copy())
    d = codec.misfit(np.repeat(z_read, 2, 0), [swapped, right])
    assert d[1] < d[0]
    (chosen, why), = codec.consistent(z_read, [(swapped, None)], counts, logp, cell)
    assert why is None and chosen.z.tolist() == [38, 22, 8, 8, 8]


def test_min_separation_is_periodic_and_in_angstrom():
    from icsg.generation.consistency import Sites
    from icsg.generation.reading import min_separation_A

    spec, abc = GridSpec(), np.array([4.0, 4.0, 4.0])
    frac = np.array([[0.02, 0.5, 0.5], [0.97, 0.5, 0.5], [0.5, 0.0, 0.0]])
    s = Sites(abc, np.array([8, 8, 38]), spec.cartesian_to_index(frac * abc, abc))
    assert min_separation_A(s, spec) == pytest.approx(0.2, abs=1e-6)  # 0.05 of 4 Å across the boundary
    one = Sites(abc, np.array([8]), spec.cartesian_to_index(frac[:1] * abc, abc))
    assert min_separation_A(one, spec) == float("inf")


def test_choice_skips_readings_with_atoms_on_top_of_each_other_unless_all_have_them():
    from icsg.generation.reading import choose

    misfit = np.array([0.1, 0.5, np.inf, 0.9])
    assert choose(misfit, np.array([0.01, 1.9, 2.0, 2.0]), 0.5) == 1  # the closest code has a 0.01 Å pair
    assert choose(misfit, np.array([0.01, 0.02, 2.0, 0.03]), 0.5) == 0  # none apart (inf misfit never chosen)
    assert choose(np.array([np.inf]), np.array([2.0]), 0.5) == -1


def test_choice_gives_up_the_least_important_preference_first():
    from icsg.generation.reading import choose

    misfit, sep = np.array([0.1, 0.2, 0.3, 0.4]), np.full(4, 2.0)
    ionic, roomy = np.array([False, True, True, False]), np.array([True, False, True, True])
    assert choose(misfit, sep, 0.5, ionic, roomy) == 2  # the only one meeting both
    assert choose(misfit, sep, 0.5, ionic, np.array([True, False, False, True])) == 1  # roomy given up
    assert choose(misfit, sep, 0.5, np.zeros(4, bool), roomy) == 0  # both given up: misfit alone
    assert choose(misfit, sep, 0.5, None, roomy) == 0  # None: no preference


def test_contact_ratio_flags_overlapping_atoms(perovskite):
    from icsg.generation.consistency import Sites
    from icsg.generation.reading import contact_ratio

    spec, abc = GridSpec(), np.array(perovskite.lattice.abc)
    z = np.array([s.specie.Z for s in perovskite])
    frac = perovskite.frac_coords.copy()
    ideal = contact_ratio(Sites(abc, z, spec.cartesian_to_index(frac * abc, abc)), spec)
    assert 0.8 < ideal < 1.2  # Ti-O at a/2 = 1.95 Å against radii 1.40 + 0.60 Å
    o = int(np.flatnonzero(z == 8)[0])
    ti = frac[int(np.flatnonzero(z == 22)[0])]
    frac[o] = ti + (frac[o] - ti) * 0.5  # an O halfway to the Ti: 0.98 Å
    assert contact_ratio(Sites(abc, z, spec.cartesian_to_index(frac * abc, abc)), spec) < 0.65


def test_composition_with_a_given_number_of_sites_is_the_most_probable_one():
    import itertools

    from icsg.generation.composition import composition_with_total

    rng = np.random.default_rng(0)
    lp = np.log(rng.dirichlet(np.ones(4), size=5))  # 5 elements, counts 0..3
    for total in (0, 3, 5, 7):
        brute = max((lp[np.arange(5), c].sum(), c) for c in itertools.product(range(4), repeat=5) if sum(c) == total)
        counts, score = composition_with_total(lp, total)
        assert counts.sum() == total and score == pytest.approx(brute[0])
        assert np.array_equal(counts, brute[1])
    assert composition_with_total(lp, 16)[0] is None  # 5 elements hold at most 15 sites


def test_site_prior_keeps_a_four_site_reading_to_the_five_sites_the_data_has():
    from icsg.generation.composition import counts_with_site_prior

    # heads: Sr 1, Ti 1 certain; O 2 (p 0.55) or 3 (p 0.45): the independent argmax has 4 sites
    lp = np.log(np.array([[1e-6, 1, 1e-6, 1e-6], [1e-6, 1, 1e-6, 1e-6], [1e-6, 1e-6, 0.55, 0.45]]))
    assert lp.argmax(-1).sum() == 4
    hist = np.array([0, 0, 0, 0, 0, 100])
    assert counts_with_site_prior(lp[None], hist)[0].tolist() == [1, 1, 3]
    both = np.array([0, 0, 0, 0, 100, 100])
    assert counts_with_site_prior(lp[None], both)[0].tolist() == [1, 1, 2]  # 4 sites allowed and likelier


def test_runner_ups_that_keep_the_number_of_sites_move_one_count_between_elements():
    from icsg.generation.composition import runner_up_counts

    lp = np.log(np.array([[0.1, 0.6, 0.3, 1e-9], [0.05, 0.5, 0.45, 1e-9], [1e-9, 0.1, 0.2, 0.7]]))
    alts = runner_up_counts(lp, 3, keep_total=True)
    best = lp.argmax(-1)
    assert alts and all(a.sum() == best.sum() and np.abs(a - best).sum() == 2 for a in alts)
    assert alts[0].tolist() == [1, 2, 2]  # the cheapest move: element 1 up (0.45/0.5), element 2 down (0.2/0.7)


def test_ionic_contacts_reject_an_anion_on_the_cations_site(perovskite):
    from icsg.generation.consistency import Sites
    from icsg.generation.reading import ion_signs, ionic_contacts

    spec, abc = GridSpec(), np.array(perovskite.lattice.abc)
    z = np.array([s.specie.Z for s in perovskite])
    vox = spec.cartesian_to_index(perovskite.cart_coords, abc)
    signs = ion_signs(z)
    assert ionic_contacts(Sites(abc, z, vox), spec, signs)
    swapped = z.copy()
    o, b = int(np.flatnonzero(z == 8)[0]), int(np.flatnonzero(z == 22)[0])
    swapped[[o, b]] = swapped[[b, o]]  # O on the body centre, Ti on a face
    assert not ionic_contacts(Sites(abc, swapped, vox), spec, signs)
    assert ionic_contacts(Sites(abc, swapped, vox), spec, None)  # unknown signs: no preference


def test_ion_signs_fall_back_to_every_oxidation_state():
    from icsg.generation.reading import ion_signs

    # BaFeO3 balances only with Fe4+, which the ICSD's common states lack
    assert ion_signs(np.array([56, 26, 8, 8, 8])) == {8: -1, 26: 1, 56: 1}
    assert ion_signs(np.array([3, 9, 9])) is None  # LiF2: Li is only ever +1, F -1


def test_formula_prior_reads_abx3_where_the_independent_heads_say_a2x3():
    from icsg.generation.composition import (CompositionPrior, anonymous_formula, composition_with_formula,
                                           formula_histogram)

    # elements Sr, Ti, O; heads: Sr 2 (p 0.5) or 1 (0.45), Ti 0 (0.5) or 1 (0.45), O 3 certain: argmax Sr2O3
    lp = np.log(np.array([[0.05, 0.45, 0.5, 1e-6], [0.5, 0.45, 0.05, 1e-6], [1e-6, 1e-6, 1e-6, 1]]))
    site_Z = np.array([[38, 22, 8, 8, 8]] * 98 + [[38, 38, 8, 8, 8]] * 2)  # 98 ABX3, 2 A2X3
    formulas, counts = formula_histogram(site_Z)
    assert {tuple(f[f > 0]): c for f, c in zip(formulas, counts)} == {(3, 1, 1): 98, (3, 2): 2}
    assert composition_with_formula(lp, np.array([3, 2]))[0].tolist() == [2, 0, 3]
    assert composition_with_formula(lp, np.array([4, 1]))[0] is None  # O cannot take 4
    prior = CompositionPrior(np.bincount([5] * 100), formulas, counts)
    assert prior.counts(lp[None])[0].tolist() == [1, 1, 3]
    assert CompositionPrior(np.bincount([5] * 100)).counts(lp[None])[0].tolist() == [2, 0, 3]  # sites alone
    assert prior.typical_formulas(0.95) == {(3, 1, 1)} and prior.typical_formulas(0.99) == {(3, 1, 1), (3, 2)}
    assert anonymous_formula([8, 38, 8, 22, 8]) == (3, 1, 1)


def test_ionic_formula_tells_two_cations_from_one_cation_on_both_sites():
    from pymatgen.core import Composition

    from icsg.generation.composition import CompositionPrior, commonest, ionic_formula, ionic_formula_histogram

    assert ionic_formula(Composition("SrTiO3")) == "1,1|3"
    assert ionic_formula(Composition("KGeO2F")) == "1,1|2,1"
    assert ionic_formula(Composition("Mn2NOF")) == "2|1,1,1"  # same anonymous formula as KGeO2F
    assert ionic_formula(Composition("NaO3")) is None  # no charge-balanced assignment
    site_Z = np.array([[38, 22, 8, 8, 8]] * 6 + [[19, 32, 8, 8, 9]] * 3 + [[25, 25, 7, 8, 9]] + [[11, 8, 8, 8, 0]])
    forms, counts = ionic_formula_histogram(site_Z)
    assert dict(zip(forms.tolist(), counts.tolist())) == {"1,1|3": 6, "1,1|2,1": 3, "2|1,1,1": 1}  # NaO3 left out
    prior = CompositionPrior(np.bincount([5] * 11), ionic_formulas=forms, ionic_counts=counts)
    assert prior.typical_ionic_formulas(0.9) == {"1,1|3", "1,1|2,1"}
    assert prior.typical_ionic_formulas(0.95) == {"1,1|3", "1,1|2,1", "2|1,1,1"}
    assert CompositionPrior(np.bincount([5] * 11)).typical_ionic_formulas() is None
    assert commonest({"a": 1, "b": 8, "c": 1}, 0.8) == {"b"} and commonest({}, 0.9) == set()
