"""Keras models: a few training steps reduce the loss; save/load is bit-exact; both backends run."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import icsg  # noqa: F401
import keras

from icsg.grid import GridSpec
from icsg.models.losses import NonzeroRecall, WeightedSpeciesCrossEntropy, class_weights
from icsg.models.unet import UNetConfig, build_unet, feature_extractor
from icsg.models.vae import VAEConfig, build_vae
from icsg.representation.density import encode


def _maps(perovskite, rocksalt, n=16):
    spec = GridSpec(size=n)
    encs = [encode(perovskite, spec), encode(rocksalt, spec)]
    zs = sorted({8, 11, 17, 22, 38})
    table = np.zeros(256, dtype=int)
    for k, z in enumerate(zs, 1):
        table[z] = k
    m = np.stack([e.density for e in encs])[..., None]
    s = np.stack([table[e.species] for e in encs])
    occ = np.stack([e.occupancy for e in encs])[..., None].astype("float32")
    x = np.concatenate([m, np.stack([e.coords for e in encs])], -1)
    return m, s, occ, x, len(zs) + 1


def test_class_weights_background_zero():
    w = class_weights(np.array([1000, 10, 30, 0]))
    assert w[0] == 0 and w[3] == 0 and w[1] == pytest.approx(3 * w[2])


def test_weighted_ce_ignores_background():
    loss = WeightedSpeciesCrossEntropy([0.0, 1.0, 1.0])
    y = np.array([[0, 1, 2]])
    good = np.array([[[0.0, 0.5, 0.5], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]], dtype="float32") * 0.98 + 0.01 / 3
    bad_bg = good.copy()
    bad_bg[0, 0] = [0.01, 0.98, 0.01]  # background mispredicted: no cost (weight 0)
    assert float(loss(y, good)) == pytest.approx(float(loss(y, bad_bg)), rel=1e-6)


def test_unet_trains_and_roundtrips(tmp_path, perovskite, rocksalt):
    keras.utils.set_random_seed(0)
    m, s, occ, _, k = _maps(perovskite, rocksalt)
    model = build_unet(UNetConfig(n_classes=k, grid_size=16, base_filters=4, depth=2))
    model.compile(keras.optimizers.Adam(3e-3),
                  loss={"species": WeightedSpeciesCrossEntropy(class_weights(np.bincount(s.ravel(), minlength=k))),
                        "occupancy": "binary_crossentropy"},
                  metrics={"species": [NonzeroRecall()]})
    hist = model.fit(m, {"species": s, "occupancy": occ}, epochs=25, verbose=0).history["loss"]
    assert hist[-1] < 0.8 * hist[0]  # training loss (BN statistics need far more steps for eval mode)
    path = tmp_path / "u.weights.h5"
    model.save_weights(path)
    clone = build_unet(UNetConfig(n_classes=k, grid_size=16, base_filters=4, depth=2))
    clone.load_weights(path)
    for a, b in zip(model.get_weights(), clone.get_weights()):
        assert np.array_equal(a, b)
    assert np.array_equal(model.predict(m, verbose=0)["species"], clone.predict(m, verbose=0)["species"])


def test_vae_dfc_trains_and_roundtrips(tmp_path, perovskite, rocksalt):
    keras.utils.set_random_seed(0)
    _, _, _, x, k = _maps(perovskite, rocksalt)
    unet = build_unet(UNetConfig(n_classes=k, grid_size=16, base_filters=4, depth=2))
    cfg = VAEConfig(grid_size=16, latent_dim=8, filters=(4, 8), n_cond=10)
    vae = build_vae(cfg, feature_extractor(unet))
    vae.compile(keras.optimizers.Adam(3e-3))
    cond = np.eye(10, dtype="float32")[[2, 7]]
    h = vae.fit((x, cond), x, epochs=20, verbose=0).history
    assert h["loss"][-1] < 0.8 * h["loss"][0] and h["mse"][-1] < h["mse"][0] and h["dfc"][-1] >= 0
    path = tmp_path / "v.weights.h5"
    vae.save_weights(path)
    clone = build_vae(cfg, feature_extractor(unet))
    clone.load_weights(path)
    for a, b in zip(vae.get_weights(), clone.get_weights()):
        assert np.array_equal(a, b)
    mu_a, _ = vae.encoder.predict([x, cond], verbose=0)
    mu_b, _ = clone.encoder.predict([x, cond], verbose=0)
    assert np.array_equal(mu_a, mu_b)
    bare = build_vae(cfg)  # inference model without the UNet: same weights file
    bare.load_weights(path)
    assert np.array_equal(bare.encoder.predict([x, cond], verbose=0)[0], mu_a)
    # and the other way: shipped (bare) weights warm-start a DFC training model (--init-weights)
    bare.save_weights(tmp_path / "bare.weights.h5")
    warm = build_vae(cfg, feature_extractor(unet))
    warm.load_weights(tmp_path / "bare.weights.h5")
    assert np.array_equal(warm.encoder.predict([x, cond], verbose=0)[0], mu_a)


def test_asinh_density_loss_counts_a_missing_anion(perovskite):
    """With k > 0 a decoded map without an O costs a sizeable fraction of one without Ti; with the
    plain MSE the O is nearly free (the failure it was introduced for)."""
    spec = GridSpec(size=16)
    full = encode(perovskite, spec)
    x = np.concatenate([full.density[..., None], full.coords], -1)[None]

    def without(i):
        s = perovskite.copy()
        s.remove_sites([i])
        return np.concatenate([encode(s, spec).density[..., None], full.coords], -1)[None]

    no_ti, no_o = without(1), without(2)
    cond = np.eye(10, dtype="float32")[[0]]
    ratios = {}
    for k in (0.0, 10.0):
        vae = build_vae(VAEConfig(grid_size=16, latent_dim=4, filters=(2,), alpha=0.0, beta=0.0, density_asinh_k=k))
        zero = keras.ops.zeros((1, 4))
        loss = {name: float(vae.compute_loss(x=(x, cond), y=x, y_pred={"recon": keras.ops.convert_to_tensor(r),
                                                                     "mu": zero, "logvar": zero}))
                for name, r in (("ti", no_ti), ("o", no_o), ("none", x))}
        assert loss["none"] == pytest.approx(0.0, abs=1e-7)
        ratios[k] = loss["o"] / loss["ti"]
    assert ratios[0.0] < 0.05 and ratios[10.0] > 2.5 * ratios[0.0]


BACKEND_SCRIPT = textwrap.dedent("""
    import numpy as np, keras
    from icsg.models.unet import UNetConfig, build_unet, feature_extractor
    from icsg.models.vae import VAEConfig, build_vae
    from icsg.models.losses import WeightedSpeciesCrossEntropy
    assert keras.backend.backend() == "{backend}"
    u = build_unet(UNetConfig(n_classes=3, grid_size=8, base_filters=2, depth=1))
    u.compile("adam", loss={{"species": WeightedSpeciesCrossEntropy([0, 1, 1]), "occupancy": "binary_crossentropy"}})
    x = np.random.rand(2, 8, 8, 8, 1).astype("float32")
    y = {{"species": np.random.randint(0, 3, (2, 8, 8, 8)), "occupancy": np.random.rand(2, 8, 8, 8, 1).astype("float32")}}
    u.train_on_batch(x, y)
    v = build_vae(VAEConfig(grid_size=8, latent_dim=4, filters=(2,), density_asinh_k=10.0), feature_extractor(u))
    v.compile("adam")
    xv = np.random.rand(2, 8, 8, 8, 4).astype("float32")
    c = np.eye(10, dtype="float32")[[0, 1]]
    r = v.train_on_batch((xv, c), xv, return_dict=True)
    assert np.isfinite(r["loss"])
    from icsg.models.readout import ReadoutConfig, build_readout
    rc = ReadoutConfig(elements_Z=(8, 30), max_count=4, max_sites=4, latent_dim=2 + 24, hidden=8, angles=True,
                       count_features=True, slot_matching=True, ordinal_counts=True, site_features=True)
    m = build_readout(rc)
    m.compile("adam")
    zs, fr = np.array([[30, 8, 8, 0]], np.int32), np.random.rand(1, 4, 3).astype("float32")
    cell = np.array([[5.1, 4.3, 6.7, 90, 103, 90]], np.float32)
    back = m.slots.predict([m.encoder.predict([zs, fr, cell], verbose=0)[0], zs], verbose=0)[0, :3] - fr[0, :3]
    assert np.abs(back - np.round(back)).max() < 1e-5
    y = {{"counts": np.array([[2, 1]], np.int32), "abc_A": cell[:, :3], "angles_deg": cell[:, 3:],
          "property": np.array([1.0], np.float32)}}
    assert np.isfinite(m.train_on_batch((zs, fr, cell), y, return_dict=True)["loss"])
    print("ok", keras.backend.backend())
""")


@pytest.mark.parametrize("backend", ["torch", "tensorflow"])
def test_models_on_each_backend(backend):
    if backend == "tensorflow":
        pytest.importorskip("tensorflow", reason="tensorflow not installed (pip install 'icsg[tensorflow]')")
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
    r = subprocess.run([sys.executable, "-c", BACKEND_SCRIPT.format(backend=backend)], env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"ok {backend}" in r.stdout


def test_training_command_checkpoints_and_resumes(tmp_path, tiny_dataset):
    from icsg.training.maps import TrainConfig, train_unet

    ds = tiny_dataset(8)
    cfg = TrainConfig(epochs=1, batch_size=2, steps_per_epoch=2, val_limit=2)
    run = tmp_path / "run"
    train_unet(ds, run, {"base_filters": 2, "depth": 1}, cfg, verbose=0)
    for f in ("best.weights.h5", "last.weights.h5", "last_optimizer.npz", "log.csv", "loss.png", "model.json"):
        assert (run / f).exists(), f
    with pytest.raises(FileExistsError):
        train_unet(ds, run, {"base_filters": 2, "depth": 1}, cfg, verbose=0)
    state = train_unet(ds, run, {"base_filters": 2, "depth": 1},
                       TrainConfig(epochs=2, batch_size=2, steps_per_epoch=2, val_limit=2), resume=True, verbose=0)
    assert state["epochs_done"] == 2
    assert len(open(run / "log.csv").read().strip().splitlines()) == 3  # header + 2 epochs

    from icsg.errors import WeightsError
    from icsg.pretrained import load_unet

    model, meta = load_unet(run)
    assert meta["kind"] == "unet"
    (run / "best.weights.h5").write_bytes(b"not an hdf5 file")
    with pytest.raises(WeightsError, match="best.weights.h5"):
        load_unet(run)


def test_resuming_keeps_the_warm_start_and_takes_a_new_learning_rate(tmp_path, tiny_dataset):
    import json

    from icsg.training.maps import TrainConfig, train_unet
    from icsg.pretrained import sha256

    ds = tiny_dataset(8)
    small = {"base_filters": 2, "depth": 1}
    cfg = TrainConfig(epochs=1, batch_size=2, steps_per_epoch=2, val_limit=2, lr=1e-3)
    train_unet(ds, tmp_path / "first", small, cfg, verbose=0)
    start = tmp_path / "first" / "best.weights.h5"
    run = tmp_path / "second"
    train_unet(ds, run, small, cfg, verbose=0, init_weights=start)
    # resumed without a new rate: the saved one (1e-3) goes on
    train_unet(ds, run, small, TrainConfig(epochs=2, batch_size=2, steps_per_epoch=2, val_limit=2, lr=5e-2),
               resume=True, verbose=0)
    meta = json.loads((run / "model.json").read_text())
    assert meta["resumed"][-1]["lr"] == pytest.approx(1e-3)
    train_unet(ds, run, small, TrainConfig(epochs=3, batch_size=2, steps_per_epoch=2, val_limit=2),
               resume=True, verbose=0, resume_lr=1e-4)
    meta = json.loads((run / "model.json").read_text())
    assert meta["init_weights"] == str(start) and meta["init_weights_sha256"] == sha256(start)
    assert [r["at_epoch"] for r in meta["resumed"]] == [1, 2]
    assert meta["resumed"][-1]["lr"] == pytest.approx(1e-4)
    saved = np.load(run / "last_optimizer.npz")
    assert any(v.shape == () and float(v) == pytest.approx(1e-4) for v in (saved[k] for k in saved.files))


def test_batchnorm_recalibration_matches_batch_statistics():
    from icsg.models.batchnorm import recalibrate

    keras.utils.set_random_seed(0)
    inp = keras.Input((6, 6, 6, 1))
    h = keras.layers.Conv3D(3, 3, padding="same")(inp)
    out = keras.layers.BatchNormalization(epsilon=1e-6)(h)
    model = keras.Model(inp, out)
    x = (np.random.default_rng(0).random((8, 6, 6, 6, 1)) * 5 + 2).astype("float32")
    before = model.predict(x, verbose=0)
    train_mode = keras.ops.convert_to_numpy(model(keras.ops.convert_to_tensor(x), training=True))
    assert not np.allclose(before, train_mode, atol=1e-3)
    assert recalibrate(model, [x]) == 1
    after = model.predict(x, verbose=0)
    assert np.allclose(after, train_mode, atol=1e-3)


def test_decoded_dataset_holds_vae_reconstructions_with_true_labels(tmp_path, tiny_dataset):
    from icsg.data.dataset import VoxelDataset, load_arrays, load_manifest
    from icsg.training.decoded import decode_dataset, decode_maps

    ds = tiny_dataset(6, nan_at=3, shard_size=4)
    spec = GridSpec(size=16)
    man = load_manifest(ds)
    keras.utils.set_random_seed(0)
    vae = build_vae(VAEConfig(grid_size=16, latent_dim=8, filters=(4, 8), n_cond=10))
    meta = {"grid": man["grid"], "condition": man["condition"]}
    out = decode_dataset(ds, tmp_path / "dec", vae, meta, progress=False)
    assert [m["file"] for m in out["shards"]] == ["decoded_00000.npz", "decoded_00001.npz",
                                                   "shard_00000.npz", "shard_00001.npz"]
    true, dec = load_arrays(ds), load_arrays(tmp_path / "dec")
    n = len(true["ids"])
    assert len(dec["ids"]) == 2 * n
    for key in ("species", "abc_A", "ids", "split"):
        assert np.array_equal(dec[key][:n], true[key]) and np.array_equal(dec[key][n:], true[key])
    assert np.array_equal(dec["density"][n:], true["density"])
    expect = decode_maps(vae, true["density"], true["abc_A"], true["prop"], man["condition"], spec)
    assert np.allclose(dec["density"][:n], expect, atol=1e-6)
    assert not np.allclose(dec["density"][:n], true["density"], atol=1e-3)  # an untrained VAE does not copy
    # a rerun skips the shards on disk; the UNet dataset reads the result
    stamp = (tmp_path / "dec" / "shards" / "decoded_00000.npz").stat().st_mtime_ns
    decode_dataset(ds, tmp_path / "dec", vae, meta, progress=False)
    assert (tmp_path / "dec" / "shards" / "decoded_00000.npz").stat().st_mtime_ns == stamp
    x, y = VoxelDataset(tmp_path / "dec", "train", task="unet", batch_size=2)[0]
    assert x.shape == (2, 16, 16, 16, 1) and y["species"].shape == (2, 16, 16, 16)
    with pytest.raises(ValueError, match="grid"):
        decode_dataset(ds, tmp_path / "dec2", vae, {**meta, "grid": GridSpec(size=32).to_dict()}, progress=False)


def test_shipping_a_warm_started_run_carries_the_cost_of_the_model_it_replaces(tmp_path):
    from icsg.pretrained import warm_start

    dest = tmp_path / "vae.weights.h5"
    prev = {"source_run": "runs/vae7", "training": {"epoch_seconds": [100.0, 200.0]},
            "warm_start_seconds": 50.0,
            "warm_start_note": "wall time of the earlier runs (--init-weights chain: vae, vae2)"}
    meta = {"init_weights": str(dest)}
    out = warm_start(meta, prev, tmp_path / "runs" / "vae8", dest)
    assert out["warm_start_seconds"] == 350.0
    assert out["warm_start_note"].endswith("(--init-weights chain: vae, vae2, vae7)")
    # the same run shipped again keeps its record; a run from scratch has none
    assert warm_start(meta, {**prev, "source_run": "runs/vae8", **out}, tmp_path / "vae8", dest) == out
    assert out["warm_start_chain"] == ["vae", "vae2", "vae7"]
    assert warm_start({}, prev, tmp_path / "vae9", dest) == {}


def test_warm_start_is_recognised_by_checksum_wherever_training_and_shipping_ran(tmp_path):
    from icsg.pretrained import warm_start

    prev = {"source_run": "/elsewhere/runs/vae8", "sha256": "ab" * 32, "training": {"epoch_seconds": [10.0]},
            "warm_start_seconds": 5.0, "warm_start_chain": ["vae", "vae7"]}
    # --init-weights named relative to another directory, shipping into a copy of the weights folder
    meta = {"init_weights": "../main/weights/vae.weights.h5", "init_weights_sha256": "ab" * 32}
    out = warm_start(meta, prev, tmp_path / "vae9", tmp_path / "copy" / "vae.weights.h5")
    assert out["warm_start_seconds"] == 15.0 and out["warm_start_chain"] == ["vae", "vae7", "vae8"]
    # a run started from other weights (same path, different file) inherits nothing
    assert warm_start({**meta, "init_weights_sha256": "cd" * 32}, prev, tmp_path / "vae9",
                      tmp_path / "copy" / "vae.weights.h5") == {}
