"""The fitted latent prior of random generation: fit, storage, loading errors, and its use by the CLI."""
import numpy as np
import pytest

from icsg.errors import WeightsError
from icsg.generation.latent_prior import (LatentPrior, fit_latent_prior, load_latent_prior, posterior_means,
                                          save_latent_prior)
from icsg.grid import GridSpec


def test_fit_recovers_mean_and_covariance():
    rng = np.random.default_rng(0)
    d = 6
    a = rng.standard_normal((d, d)) * 0.5
    cov = a @ a.T + 0.1 * np.eye(d)
    m = rng.standard_normal(d)
    mu = rng.multivariate_normal(m, cov, size=5000)
    prior = fit_latent_prior(mu, source="synthetic")
    assert prior.n_bins == 1 and np.allclose(prior.mean[0], m, atol=0.05)
    assert np.allclose(prior.chol[0] @ prior.chol[0].T, cov, atol=0.05)
    z = prior.sample(20000, np.random.default_rng(1))
    assert z.dtype == np.float32 and z.shape == (20000, d)
    assert np.allclose(np.cov(z.T), cov, atol=0.05)
    assert np.allclose(prior.sample(5, np.random.default_rng(2), temperature=0.0), prior.mean, atol=1e-6)
    with pytest.raises(ValueError, match="at least 2"):
        fit_latent_prior(mu[:1])


def test_one_gaussian_per_bin_and_the_pooled_fit_for_thin_bins():
    rng = np.random.default_rng(0)
    centres = np.array([[-3.0, 0.0], [0.0, 0.0], [3.0, 1.0]])
    bins = np.repeat([0, 1, 2], [400, 400, 10])
    mu = centres[bins] + 0.1 * rng.standard_normal((len(bins), 2))
    prior = fit_latent_prior(mu, bins, n_bins=3, min_per_bin=32)
    assert prior.counts.tolist() == [400, 400, 0]
    assert np.allclose(prior.mean[0], centres[0], atol=0.03) and np.allclose(prior.mean[1], centres[1], atol=0.03)
    assert np.allclose(prior.mean[2], mu.mean(0))  # too few maps: the pooled Gaussian stands in
    z = prior.sample(500, np.random.default_rng(1), condition=0)
    assert np.allclose(z.mean(0), centres[0], atol=0.05) and z.std(0).max() < 0.2
    with pytest.raises(ValueError, match="property bin 0..2"):
        prior.sample(2, rng)
    with pytest.raises(ValueError, match="bins must be"):
        fit_latent_prior(mu, bins, n_bins=2)


def test_storage_round_trips_and_bad_files_are_named(tmp_path):
    rng = np.random.default_rng(0)
    prior = fit_latent_prior(rng.standard_normal((50, 4)), source="x")
    path = tmp_path / "vae_prior.npz"
    save_latent_prior(prior, path)
    back = load_latent_prior(path, latent_dim=4)
    assert np.array_equal(back.mean, prior.mean) and np.array_equal(back.chol, prior.chol)
    assert (back.n_maps, back.source, back.counts.tolist()) == (50, "x", [50])
    assert np.array_equal(back.sample(3, np.random.default_rng(5)), prior.sample(3, np.random.default_rng(5)))
    assert back.site_counts is None  # a prior saved without the training crystals' numbers of sites
    from dataclasses import replace

    save_latent_prior(replace(prior, site_counts=np.array([0, 0, 3, 7]), formulas=np.array([[1, 1], [2, 0]]),
                              formula_counts=np.array([3, 7]), ionic_formulas=np.array(["1|1", "1,1|3"]),
                              ionic_counts=np.array([4, 6])), path)
    back = load_latent_prior(path)
    assert back.site_counts.tolist() == [0, 0, 3, 7] and back.formulas.tolist() == [[1, 1], [2, 0]]
    assert back.formula_counts.tolist() == [3, 7]
    assert back.ionic_formulas.tolist() == ["1|1", "1,1|3"] and back.ionic_counts.tolist() == [4, 6]
    with pytest.raises(WeightsError, match="latent space is 8"):
        load_latent_prior(path, latent_dim=8)
    with pytest.raises(WeightsError, match="missing"):
        load_latent_prior(tmp_path / "none.npz")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(path.read_bytes()[:100])
    with pytest.raises(WeightsError, match="bad.npz: cannot read"):
        load_latent_prior(bad)
    np.savez(bad, mean=np.zeros((1, 3)), chol=np.zeros((1, 2, 2)), counts=np.array([1]), n_maps=np.array(1),
             source=np.array(""))
    with pytest.raises(WeightsError, match="Cholesky"):
        load_latent_prior(bad)
    # object arrays would need pickle: refused
    np.savez(bad, mean=np.array([{"a": 1}], dtype=object), chol=np.zeros((1, 1, 1)), counts=np.array([1]),
             n_maps=np.array(1), source=np.array(""))
    with pytest.raises(WeightsError, match="cannot read"):
        load_latent_prior(bad)


def test_posterior_means_of_a_prepared_dataset(tiny_dataset):
    import keras

    from icsg.data.dataset import load_arrays, load_manifest, property_bin
    from icsg.models.vae import VAEConfig, build_vae

    ds = tiny_dataset(6)
    man = load_manifest(ds)
    keras.utils.set_random_seed(0)
    vae = build_vae(VAEConfig(grid_size=16, latent_dim=8, filters=(4, 8), n_cond=10))
    meta = {"grid": man["grid"], "condition": man["condition"]}
    mu, bins, onehot, abc, values, site_counts, (formulas, formula_counts), (ionic, ionic_counts) = posterior_means(
        vae, meta, ds, n_maps=100, batch_size=2)
    train = load_arrays(ds, "train")
    assert site_counts.tolist() == np.bincount((train["site_Z"] > 0).sum(1)).tolist()  # the whole split
    assert formula_counts.sum() == len(train["ids"]) and np.all(formulas.sum(1) > 0)
    assert 0 < ionic_counts.sum() <= len(train["ids"]) and all("|" in f for f in ionic)
    assert mu.shape == (len(train["ids"]), 8)  # every training map, none of the val split
    assert np.array_equal(bins, property_bin(train["prop"], np.array(man["condition"]["edges"])))
    assert np.array_equal(onehot.argmax(1), bins) and np.allclose(abc, train["abc_A"])
    assert np.allclose(values, train["prop"], equal_nan=True)
    again = posterior_means(vae, meta, ds, n_maps=100, batch_size=3)
    assert np.allclose(mu, again.mu, atol=1e-5)  # batching does not change the codes
    val = posterior_means(vae, meta, ds, split="val")
    assert len(val.mu) == len(load_arrays(ds, "val")["ids"])
    with pytest.raises(ValueError, match="the VAE takes 32"):
        posterior_means(vae, {**meta, "grid": GridSpec(size=32).to_dict()}, ds)


def test_latent_prior_type_is_plain_arrays():
    p = LatentPrior(np.zeros((1, 2)), np.eye(2)[None], np.array([3]), 3, "s")
    with pytest.raises(ValueError, match="temperature"):
        p.sample(1, np.random.default_rng(0), temperature=-1)
