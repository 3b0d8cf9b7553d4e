"""The cell readout of decoding: fit, storage, loading errors, and its use by the pipeline."""
import numpy as np
import pytest

from icsg.errors import WeightsError
from icsg.generation.latent_cell import (LatentCell, cell_readout, fit_latent_cell, load_latent_cell,
                                         save_latent_cell)


def _codes(n=400, d=12, k=4, seed=0):
    rng = np.random.default_rng(seed)
    mu = rng.standard_normal((n, d))
    cond = np.eye(k)[rng.integers(0, k, n)]
    w = np.random.default_rng(99).standard_normal(d) * 0.1  # one relation for every draw of codes
    a = 4.0 + mu @ w + cond @ np.linspace(-0.2, 0.2, k)
    return mu, cond, np.stack([a, a, a * 1.01], 1)


def test_fit_recovers_a_linear_cell():
    mu, cond, abc = _codes()
    cell = fit_latent_cell(mu, cond, abc, source="synthetic")
    mu2, cond2, abc2 = _codes(seed=1)  # unseen codes from the same relation
    assert np.abs(cell.predict(mu2, cond2) - abc2).max() < 0.01
    assert cell.n_maps == 400 and cell.alpha in (0.01, 0.1, 1.0, 10.0, 100.0)
    # a cell that does not depend on the code is read as its mean
    flat = fit_latent_cell(mu, cond, np.full((400, 3), 4.2))
    assert np.allclose(flat.predict(mu2, cond2), 4.2, atol=1e-6)
    with pytest.raises(ValueError, match="three lengths"):
        fit_latent_cell(mu, cond, abc[:, :2])
    with pytest.raises(ValueError, match="features"):
        cell.predict(mu2[:, :5], cond2)


def test_readout_storage_and_bad_files(tmp_path):
    mu, cond, abc = _codes()
    cell = fit_latent_cell(mu, cond, abc, source="s")
    path = tmp_path / "vae_cell.npz"
    save_latent_cell(cell, path)
    back = load_latent_cell(path, n_features=16)
    assert np.array_equal(back.coef, cell.coef) and back.source == "s" and back.alpha == cell.alpha
    with pytest.raises(WeightsError, match="takes 16 features, the VAE gives 20"):
        load_latent_cell(path, n_features=20)
    with pytest.raises(WeightsError, match="latent cell readout missing"):
        load_latent_cell(tmp_path / "none.npz")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(path.read_bytes()[:100])
    with pytest.raises(WeightsError, match="bad.npz: cannot read latent cell readout"):
        load_latent_cell(bad)
    np.savez(bad, coef=np.zeros((16, 2)), intercept=np.zeros(3), alpha=1.0, n_maps=1, source="x")
    with pytest.raises(WeightsError, match="coefficients"):
        load_latent_cell(bad)
    meta = {"config": {"latent_dim": 12}, "condition": {"n_bins": 4}}
    assert cell_readout(tmp_path, "coords", meta) is None
    assert np.array_equal(cell_readout(tmp_path, "latent", meta).coef, cell.coef)
    with pytest.raises(ValueError, match="cell_from must be one of"):
        cell_readout(tmp_path, "guess", meta)


def test_pipeline_reads_the_cell_from_the_batch_when_given(perovskite):
    from icsg.data.filters import FilterConfig, standardise
    from icsg.generation.pipeline import DecodedBatch, batch_to_sites
    from icsg.grid import GridSpec
    from icsg.representation.density import encode

    spec = GridSpec()
    e = encode(standardise(perovskite, "p", FilterConfig()), spec)
    b = DecodedBatch(e.density[None], e.coords[None], e.species[None], e.occupancy[None].astype(np.float32))
    (s, _), = batch_to_sites(b, spec)
    assert np.allclose(s.abc_A, perovskite.lattice.abc, atol=0.02)  # from the coordinate channels
    (s, _), = batch_to_sites(DecodedBatch(**{**b.__dict__, "cell_A": np.array([[4.5, 4.5, 4.6]])}), spec)
    assert np.allclose(s.abc_A, [4.5, 4.5, 4.6])
    (s, why), = batch_to_sites(DecodedBatch(**{**b.__dict__, "cell_A": np.array([[0.1, 4.5, 4.6]])}), spec)
    assert s is None and "not physical" in why


def test_latent_cell_type_is_plain_arrays():
    c = LatentCell(np.zeros((3, 3)), np.array([4.0, 4.0, 4.0]), 1.0, 3, "s")
    assert np.allclose(c.predict(np.zeros((2, 1)), np.zeros((2, 2))), 4.0)
