"""iMatGen-style autoencoders + materials VAE and the CCDCGAN-style GAN: training steps, save/load, codes."""

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

import icsg  # noqa: F401
import keras

from icsg.models.crystal_code import CodeStats, CrystalCodec, crystal_images, element_descriptor, slot_elements
from icsg.models.ccdcgan import CCDCGANConfig
from icsg.pretrained import load_ccdcgan
from icsg.training.ccdcgan import train_ccdcgan
from icsg.models.imatgen import (ImatgenModelConfig, build_basis_autoencoder, build_cell_autoencoder,
                                 build_materials_vae)

TINY = ImatgenModelConfig(cell_size=8, basis_size=16, box_A=8.0, cell_latent=4, basis_latent=6, filters=(4, 8),
                          n_slots=3, hidden=16, latent_dim=4)


def _images(perovskite, rocksalt):
    out = [crystal_images(s, TINY) for s in (perovskite, rocksalt)]
    return (np.stack([a for a, _, _ in out]), np.stack([b for _, b, _ in out]), np.stack([z for _, _, z in out]))


def test_slots_follow_electronegativity(perovskite):
    assert slot_elements(perovskite, 3) == ["Sr", "Ti", "O"]
    from icsg.errors import CrystalError

    with pytest.raises(CrystalError, match="3 elements"):
        slot_elements(perovskite, 2)
    cell, basis, slot_z = crystal_images(perovskite, TINY)
    assert slot_z.tolist() == [38, 22, 8]
    assert basis.shape == (3, 16, 16, 16) and cell.shape == (8, 8, 8)
    assert basis[2].max() > 0.5 and basis[0].max() > 0.5  # sites sampled, none cut off by the box


def test_basis_autoencoder_trains_and_roundtrips(tmp_path, perovskite, rocksalt):
    keras.utils.set_random_seed(0)
    _, basis, slot_z = _images(perovskite, rocksalt)
    x = basis[slot_z > 0][..., None]
    enc, dec, ae = build_basis_autoencoder(TINY)
    ae.compile(keras.optimizers.Adam(3e-3), loss="binary_crossentropy")
    hist = ae.fit(x, x, epochs=30, verbose=0).history["loss"]
    assert hist[-1] < 0.5 * hist[0]
    ae.save_weights(tmp_path / "b.weights.h5")
    clone = build_basis_autoencoder(TINY)[2]
    clone.load_weights(tmp_path / "b.weights.h5")
    np.testing.assert_array_equal(ae.predict(x, verbose=0), clone.predict(x, verbose=0))


def test_materials_vae_trains_and_roundtrips(tmp_path):
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    # codes on a 3-d subspace: a 4-d latent can learn them
    codes = (rng.standard_normal((64, 3)) @ rng.standard_normal((3, TINY.code_dim))).astype("float32")
    label = (codes[:, :1] > 0).astype("float32")
    m = build_materials_vae(TINY)
    m.compile(keras.optimizers.Adam(3e-3))
    hist = m.fit(codes, np.concatenate([codes, label], 1), epochs=30, batch_size=16, verbose=0).history
    assert hist["loss"][-1] < 0.5 * hist["loss"][0] and hist["acc"][-1] > 0.7
    m.save_weights(tmp_path / "m.weights.h5")
    clone = build_materials_vae(TINY)
    clone.load_weights(tmp_path / "m.weights.h5")
    np.testing.assert_array_equal(m.encoder.predict(codes, verbose=0)[0], clone.encoder.predict(codes, verbose=0)[0])


def test_codec_codes_and_element_lookup(perovskite, rocksalt):
    cells, bases, slot_z = _images(perovskite, rocksalt)
    codec = CrystalCodec(TINY, build_cell_autoencoder(TINY), build_basis_autoencoder(TINY),
                         CodeStats.for_elements(np.unique(slot_z)))
    raw = codec.raw_codes(cells, bases, slot_z)
    assert raw.shape == (2, TINY.code_dim)
    codec.fit_standardisation(raw)
    codes = codec.standardise(raw)
    assert np.allclose(codes.mean(0), 0, atol=1e-5)
    # NaCl uses two of three slots: the empty slot is all zeros (raw) with present = 0
    slot3 = raw[1, TINY.cell_latent + 2 * TINY.slot_dim:]
    assert np.all(slot3 == 0)
    for z in (8, 11, 17, 22, 38):
        d = (element_descriptor(z) - codec.stats.desc_mean) / codec.stats.desc_std
        assert codec.nearest_element(d) == z
    out, slices = codec.decode(codes)  # untrained decoders: a result or a reason per crystal, never an exception
    assert len(out) == 2 and slices.shape == (2, 16, 16)
    assert all((s is None) != (why is None) for s, why in out)


def test_ccdcgan_trains_resumes_and_loads(tmp_path):
    import json

    rng = np.random.default_rng(0)
    codes = rng.standard_normal((200, 12)).astype("float32")
    prop = (codes[:, 0] * 0.5 - 1).astype("float32")
    cfg = CCDCGANConfig(code_dim=12, noise_dim=4, hidden=16, steps=20, batch_size=16, regressor_epochs=5)
    run = tmp_path / "gan"
    st = train_ccdcgan(codes, prop, run, cfg, log_every=10, progress=False)
    assert st["step"] == 20 and np.isfinite(st["regressor_val_mae"])
    lines = (run / "log.csv").read_text().strip().splitlines()
    assert len(lines) == 3 and all(np.isfinite(float(v)) for v in lines[-1].split(","))
    with pytest.raises(FileExistsError):
        train_ccdcgan(codes, prop, run, cfg, progress=False)
    st = train_ccdcgan(codes, prop, run, CCDCGANConfig(**{**cfg.to_dict(), "steps": 30}), resume=True,
                       log_every=10, progress=False)
    assert st["step"] == 30
    (run / "ccdcgan.json").write_text(json.dumps({"config": cfg.to_dict(), "property": "heat_ref"}))
    gen, reg, meta = load_ccdcgan(run)
    noise = rng.standard_normal((3, 4)).astype("float32")
    assert gen.predict(noise, verbose=0).shape == (3, 12)
    from icsg.errors import WeightsError

    (run / "ccdcgan_generator.weights.h5").write_bytes(b"corrupt")
    with pytest.raises(WeightsError, match="ccdcgan_generator"):
        load_ccdcgan(run)


def test_constrained_generator_trains_only_the_generator():
    from icsg.models.ccdcgan import ConstrainedGenerator, build_discriminator, build_generator, build_regressor

    cfg = CCDCGANConfig(code_dim=6, noise_dim=3, hidden=8)
    g, d, r = build_generator(cfg), build_discriminator(cfg), build_regressor(cfg)
    c = ConstrainedGenerator(g, d, r, 0.1)
    c.compile(keras.optimizers.Adam(1e-2))
    before = [w.copy() for w in d.get_weights() + r.get_weights()]
    g0 = [w.copy() for w in g.get_weights()]
    c.train_on_batch(np.random.rand(8, 3).astype("float32"), np.zeros((8, 1), "float32"))
    after = d.get_weights() + r.get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(before, after))
    assert any(not np.array_equal(a, b) for a, b in zip(g0, g.get_weights()))


def test_imatgen_postprocessing_merges_boundary_duplicates():
    from icsg.representation.imatgen import ImatgenSpec, basis_images, cell_image, decode_imatgen

    spec = ImatgenSpec(cell_size=16, basis_size=32, box_A=8.0)
    s = Structure(Lattice.cubic(4.0), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    basis, els = basis_images(s, spec=spec)
    # a second Na peak one cell length away (the periodic image at x = a) must merge into one site
    shifted = Structure(Lattice.cubic(4.0), ["Na"], [[0.999, 0, 0]])
    extra, _ = basis_images(shifted, ["Na"], spec)
    basis[0] = np.maximum(basis[0], extra[0])
    out = decode_imatgen(cell_image(s.lattice, spec), basis, els, spec)
    assert len(out) == 2 and sorted(str(sp) for sp in out.species) == ["Cl", "Na"]


def test_train_imatgen_ships_its_training_record(tmp_path, perovskite, rocksalt):
    """The shipped description carries each stage's epochs and losses: the model card reads them from
    weights/, since runs/ is not kept between machines."""
    import json

    import pandas as pd

    from icsg.training.imatgen import ship_imatgen, train_imatgen

    crystals = [perovskite, rocksalt, perovskite.copy().scale_lattice(64.0), rocksalt.copy().scale_lattice(200.0)]
    csv = tmp_path / "c.csv"
    pd.DataFrame({"material_id": [f"m{i}" for i in range(4)], "cif": [s.to(fmt="cif") for s in crystals],
                  "heat_ref": [0.1, 0.5, 0.2, 0.9]}).to_csv(csv, index=False)
    meta = train_imatgen(str(csv), str(csv), tmp_path / "run", TINY, epochs_ae=1, epochs_vae=1, steps_per_epoch=1,
                         batch=2, workers=1, verbose=0)
    assert set(meta["training"]) == {"cell", "basis", "mvae"}
    assert all(meta["training"][p]["epochs_done"] == 1 and np.isfinite(meta["training"][p]["best"])
               for p in meta["training"])
    ship_imatgen(tmp_path / "run", tmp_path / "w")
    assert json.loads((tmp_path / "w" / "imatgen.json").read_text())["training"] == meta["training"]
