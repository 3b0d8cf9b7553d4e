"""The readout part of the code (z_read) and the flow-matching prior, on tiny hand-built data."""
import json

import numpy as np
import pytest


def test_prepared_shards_list_each_crystal_s_sites(tiny_dataset, perovskite):
    from icsg.data.dataset import load_arrays, site_counts

    ds = tiny_dataset(4)
    a = load_arrays(ds)
    man = a["manifest"]
    counts = site_counts(a["site_Z"], man["elements_Z"])
    by_id = dict(zip(a["ids"], counts))
    els = man["elements_Z"]
    # m1 is a perovskite (SrTiO3), m0 rock salt (Na4Cl4)
    assert {els[i]: int(c) for i, c in enumerate(by_id["m1"]) if c} == {38: 1, 22: 1, 8: 3}
    assert {els[i]: int(c) for i, c in enumerate(by_id["m0"]) if c} == {11: 4, 17: 4}
    k = list(a["ids"]).index("m1")
    assert a["site_Z"][k][:5].tolist() == [38, 22, 8, 8, 8] and a["site_Z"][k][5:].sum() == 0
    assert np.allclose(np.sort(a["site_frac"][k][:5], axis=0), np.sort(np.mod(perovskite.frac_coords, 1), axis=0))


def test_readout_trains_resumes_and_reads_back(tiny_dataset, tmp_path, perovskite):
    from icsg.models.readout import ReadoutConfig, read_heads, site_arrays
    from icsg.training.maps import TrainConfig, train_readout
    from icsg.pretrained import load_readout

    ds = tiny_dataset(8)
    cfg = TrainConfig(epochs=2, batch_size=4, lr=3e-3, steps_per_epoch=5, val_limit=None, patience=5)
    state = train_readout(ds, tmp_path / "run", {"latent_dim": 8, "hidden": 32}, cfg, verbose=0)
    logs = state["last_logs"]
    assert state["epochs_done"] == 2 and np.isfinite(logs["loss"]) and 0 <= logs["composition_acc"] <= 1
    state = train_readout(ds, tmp_path / "run", {"latent_dim": 8, "hidden": 32},
                          TrainConfig(**{**cfg.__dict__, "epochs": 3}), resume=True, verbose=0)
    assert state["epochs_done"] == 3
    model, meta = load_readout(tmp_path / "run")
    rc = ReadoutConfig.from_dict(meta["config"])
    assert rc.elements_Z == (8, 11, 17, 22, 38) and rc.max_count == 4
    zs, fr = site_arrays([perovskite], rc.max_sites)
    mu, _ = model.encoder.predict([zs, fr, np.array([perovskite.lattice.abc], np.float32)], verbose=0)
    counts, logp, cell, prop = read_heads(model.heads.predict(mu, verbose=0), rc)
    assert counts.shape == (1, 5) and logp.shape == (1, 5, 5) and cell.shape == (1, 3) and prop.shape == (1,)
    assert np.allclose(np.exp(logp).sum(-1), 1.0)
    with pytest.raises(ValueError, match="at most 2"):
        site_arrays([perovskite], 2)


def test_readout_learns_a_composition_it_is_shown():
    """A few hundred steps on two crystals: the heads give back each one's element counts and cell."""
    import keras

    from icsg.models.readout import ReadoutConfig, build_readout, read_heads

    keras.utils.set_random_seed(0)
    rc = ReadoutConfig(elements_Z=(8, 22, 38, 11, 17), max_count=4, max_sites=8, latent_dim=4, hidden=64,
                       abc_mean_A=4.5, abc_std_A=1.0)
    model = build_readout(rc)
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    zs = np.array([[38, 22, 8, 8, 8, 0, 0, 0], [11, 11, 17, 17, 0, 0, 0, 0]], np.int32)
    fr = np.random.default_rng(0).random((2, 8, 3)).astype(np.float32)
    abc = np.array([[3.9] * 3, [5.6] * 3], np.float32)
    y = {"counts": np.array([[3, 1, 1, 0, 0], [0, 0, 0, 2, 2]], np.int32), "abc_A": abc,
         "property": np.array([1.0, np.nan], np.float32)}
    model.fit((zs, fr, abc), y, epochs=300, batch_size=2, verbose=0)
    mu, _ = model.encoder.predict([zs, fr, abc], verbose=0)
    counts, _, cell, _ = read_heads(model.heads.predict(mu, verbose=0), rc)
    assert counts.tolist() == y["counts"].tolist()
    assert np.abs(cell - abc).max() < 0.1


def test_flow_prior_learns_two_conditioned_clusters_and_round_trips(tmp_path):
    from icsg.errors import WeightsError
    from icsg.generation.flow_prior import FlowPriorConfig, load_flow_prior, save_flow_prior, train_flow_prior

    rng = np.random.default_rng(0)
    bins = np.repeat([0, 1], 300)
    codes = np.where(bins[:, None] == 0, -2.0, 2.0) + 0.1 * rng.standard_normal((600, 4))
    cfg = FlowPriorConfig(dim=4, n_bins=2, hidden=64, depth=2, steps=1500, batch_size=128, guidance=1.0,
                          sample_steps=20, pca_dims=0)
    prior, info = train_flow_prior(codes, bins, bins.astype(float), [0.5], cfg, progress=False)
    a = prior.sample(200, np.random.default_rng(1), condition=0)
    b = prior.sample(200, np.random.default_rng(1), condition=1)
    assert a.shape == (200, 4) and np.all(np.abs(a.mean(0) + 2) < 0.3) and np.all(np.abs(b.mean(0) - 2) < 0.3)
    assert np.all(prior.sample(50, np.random.default_rng(2), value=0.9).mean(0) > 1.0)  # a value in bin 1
    save_flow_prior(prior, tmp_path, {"data": "synthetic"})
    back = load_flow_prior(tmp_path, dim=4)
    assert np.allclose(back.sample(5, np.random.default_rng(3), condition=1),
                       prior.sample(5, np.random.default_rng(3), condition=1), atol=1e-5)
    assert json.loads((tmp_path / "flow_prior.json").read_text())["data"] == "synthetic"
    with pytest.raises(WeightsError, match="4-dimensional codes"):
        load_flow_prior(tmp_path, dim=8)
    with pytest.raises(ValueError, match="property bin"):
        prior.sample(2, rng, condition=5)


def test_flow_prior_on_principal_components_keeps_samples_in_the_codes_subspace(tmp_path):
    from icsg.generation.flow_prior import FlowPriorConfig, load_flow_prior, save_flow_prior, train_flow_prior

    rng = np.random.default_rng(0)
    bins = np.repeat([0, 1], 300)
    basis = rng.standard_normal((2, 12))  # codes of rank 2 in 12 dimensions, one cluster per bin
    latent = np.where(bins[:, None] == 0, -2.0, 2.0) + 0.3 * rng.standard_normal((600, 2))
    codes = latent @ basis + 5.0
    cfg = FlowPriorConfig(dim=12, n_bins=2, hidden=64, depth=2, steps=1500, batch_size=128, guidance=1.0,
                          sample_steps=20, pca_dims=2)
    prior, _ = train_flow_prior(codes, bins, bins.astype(float), [0.5], cfg, progress=False)
    assert np.allclose((prior.to_flow(codes) @ prior.axes) * prior.std + prior.mean, codes, atol=1e-3)
    a = prior.sample(200, np.random.default_rng(1), condition=1)
    coef, *_ = np.linalg.lstsq(basis.T, (a - 5.0).T, rcond=None)
    assert np.abs(coef.T @ basis + 5.0 - a).max() < 1e-3  # on the codes' plane, nothing off it
    assert np.abs(coef.mean(1) - 2.0).max() < 0.4  # the bin's cluster
    save_flow_prior(prior, tmp_path)
    assert np.allclose(load_flow_prior(tmp_path, dim=12).sample(5, np.random.default_rng(3), condition=0),
                       prior.sample(5, np.random.default_rng(3), condition=0), atol=1e-5)
    with pytest.raises(ValueError, match="pca_dims must lie in 0..12"):
        train_flow_prior(codes, bins, bins.astype(float), [0.5], FlowPriorConfig(dim=12, n_bins=2, pca_dims=13))


def test_canonical_order_names_each_site_by_element_then_position():
    from icsg.representation.sites import canonical_order, canonical_sites

    z = np.array([8, 38, 8, 22, 8])
    frac = np.array([[0.5, 0.5, 0.0], [0.0, 0.0, 0.0], [0.0, 0.5, 0.5], [0.5, 0.5, 0.5], [0.5, 0.0, 0.5]])
    o = canonical_order(z, frac)
    assert z[o].tolist() == [38, 22, 8, 8, 8]
    assert frac[o][2:].tolist() == [[0.5, 0.5, 0.0], [0.5, 0.0, 0.5], [0.0, 0.5, 0.5]]  # by z, then y, then x
    # any listing of the same crystal comes out in the same order; padding stays last
    perm = np.array([3, 0, 4, 2, 1])
    zs, fs = canonical_sites(np.pad(z[perm], (0, 2))[None], np.pad(frac[perm], ((0, 2), (0, 0)))[None])
    assert zs[0].tolist() == [38, 22, 8, 8, 8, 0, 0] and np.allclose(fs[0, :5], frac[o])


def test_slot_head_learns_where_each_site_of_an_element_sits():
    """Two crystals, the sites of one element told apart by their rank: after training on them the slot head
    places every site within 0.2 Å."""
    import keras

    from icsg.models.readout import ReadoutConfig, build_readout
    from icsg.representation.sites import canonical_sites

    keras.utils.set_random_seed(0)
    rc = ReadoutConfig(elements_Z=(8, 22, 38), max_count=3, max_sites=6, latent_dim=4, hidden=64, beta=1e-6,
                       abc_mean_A=4.0, abc_std_A=1.0, position_weight=0.0, slot_weight=10.0)
    model = build_readout(rc)
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    zs = np.array([[38, 22, 8, 8, 8, 0], [38, 22, 8, 8, 8, 0]], np.int32)
    fr = np.array([[[0, 0, 0], [.5, .5, .5], [.5, .5, 0], [.5, 0, .5], [0, .5, .5], [0, 0, 0]],
                   [[.1, 0, 0], [.6, .5, .5], [.55, .5, 0], [.55, 0, .5], [.05, .5, .5], [0, 0, 0]]], np.float32)
    zs, fr = canonical_sites(zs, fr)
    abc = np.full((2, 3), 4.0, np.float32)
    y = {"counts": np.array([[3, 1, 1], [3, 1, 1]], np.int32), "abc_A": abc, "property": np.full(2, np.nan, np.float32)}
    model.fit((zs, fr, abc), y, epochs=400, batch_size=2, verbose=0)
    mu, _ = model.encoder.predict([zs, fr, abc], verbose=0)
    pred = np.asarray(model.slots.predict([mu, zs], verbose=0))
    d = pred - fr
    d -= np.round(d)
    assert np.abs(d[:, :5] * 4.0).max() < 0.2
