"""Training of the CCDCGAN-style latent GAN (``icsg.models.ccdcgan``): the property regressor on the crystal
codes, then the generator against the discriminator with the property constraint; checkpoints, resume."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import numpy as np

import icsg  # noqa: F401
import keras

from icsg.errors import WeightsError
from icsg.io import atomic_path, atomic_write_json
from icsg.models.ccdcgan import (CCDCGANConfig, ConstrainedGenerator, _scalar, build_discriminator, build_generator,
                                 build_regressor)


def train_ccdcgan(codes: np.ndarray, prop: np.ndarray, out_dir, cfg: CCDCGANConfig, resume: bool = False,
                  seed: int = 0, log_every: int = 200, progress: bool = True) -> dict:
    """Regressor on (code, property), then the GAN; checkpoints every ``log_every`` steps, resumable."""
    from tqdm.auto import tqdm

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    ok = np.isfinite(prop)
    codes, prop = codes[ok].astype(np.float32), prop[ok].astype(np.float32)
    state_path = out / "state.json"
    state = json.loads(state_path.read_text()) if resume and state_path.exists() else {"step": 0, "seconds": 0.0}
    if not resume and (out / "ccdcgan_generator.weights.h5").exists():
        raise FileExistsError(f"{out} already holds a run; pass --resume to continue it or choose another --out")

    reg = build_regressor(cfg)
    reg.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse", metrics=["mae"])
    if resume and (out / "ccdcgan_regressor.weights.h5").exists():
        reg.load_weights(out / "ccdcgan_regressor.weights.h5")
    else:
        t0 = time.perf_counter()
        val = rng.random(len(codes)) < 0.1
        h = reg.fit(codes[~val], prop[~val], validation_data=(codes[val], prop[val]), epochs=cfg.regressor_epochs,
                    batch_size=128, verbose=0,
                    callbacks=[keras.callbacks.EarlyStopping(patience=8, restore_best_weights=True)])
        state["regressor_val_mae"] = float(min(h.history["val_mae"]))
        state["regressor_seconds"] = time.perf_counter() - t0
        with atomic_path(out / "ccdcgan_regressor.weights.h5", suffix=".weights.h5") as tmp:
            reg.save_weights(tmp)
    reg.trainable = False

    gen, disc = build_generator(cfg), build_discriminator(cfg)
    disc.compile(optimizer=keras.optimizers.Adam(cfg.lr, beta_1=0.5),
                 loss=keras.losses.BinaryCrossentropy(from_logits=True))
    combined = ConstrainedGenerator(gen, disc, reg, cfg.omega, name="constrained_generator")
    combined.compile(optimizer=keras.optimizers.Adam(cfg.lr, beta_1=0.5))
    if resume and (out / "last_generator.weights.h5").exists():
        gen.load_weights(out / "last_generator.weights.h5")
        disc.load_weights(out / "last_discriminator.weights.h5")
    log_path = out / "log.csv"
    if state["step"] == 0:
        log_path.unlink(missing_ok=True)
    b = cfg.batch_size
    ones, zeros = np.ones((b, 1), np.float32), np.zeros((b, 1), np.float32)
    d_hist, g_hist = [], []
    t0 = time.perf_counter()
    bar = tqdm(range(state["step"], cfg.steps), desc="ccdcgan", disable=not progress)
    for step in bar:
        real = codes[rng.integers(0, len(codes), b)]
        noise = rng.standard_normal((b, cfg.noise_dim)).astype(np.float32)
        fake = np.asarray(gen.predict_on_batch(noise))
        d_loss = 0.5 * (float(_scalar(disc.train_on_batch(real, ones)))
                        + float(_scalar(disc.train_on_batch(fake, zeros))))
        g_logs = combined.train_on_batch(rng.standard_normal((b, cfg.noise_dim)).astype(np.float32), zeros,
                                         return_dict=True)
        d_hist.append(d_loss)
        g_hist.append((g_logs["adv"], g_logs["property"]))
        if (step + 1) % log_every == 0 or step + 1 == cfg.steps:
            state["step"] = step + 1
            state["seconds"] += time.perf_counter() - t0
            t0 = time.perf_counter()
            for name, model in (("last_generator", gen), ("last_discriminator", disc)):
                with atomic_path(out / f"{name}.weights.h5", suffix=".weights.h5") as tmp:
                    model.save_weights(tmp)
            g_arr = np.array(g_hist)
            row = [step + 1, float(np.mean(d_hist)), float(g_arr[:, 0].mean()), float(g_arr[:, 1].mean())]
            new = not log_path.exists()
            with open(log_path, "a", newline="") as f:
                w = csv.writer(f)
                if new:
                    w.writerow(["step", "d_loss", "g_adv", "g_property_eV_atom"])
                w.writerow(row)
            d_hist, g_hist = [], []
            bar.set_postfix(d=f"{row[1]:.3f}", g=f"{row[2]:.3f}", prop=f"{row[3]:.3f}")
            atomic_write_json(state_path, state)
    with atomic_path(out / "ccdcgan_generator.weights.h5", suffix=".weights.h5") as tmp:
        gen.save_weights(tmp)
    return state


def run_cli(a) -> int:
    from icsg.io import atomic_copy

    imatgen = Path(a.imatgen)
    meta_i = json.loads((imatgen / "imatgen.json").read_text())
    codes_path = Path(a.codes) if a.codes else imatgen / "codes.npz"
    if not codes_path.exists():
        raise WeightsError(f"{codes_path}: crystal codes missing (they are written by 'icsg train-imatgen')")
    data = np.load(codes_path)
    cfg = CCDCGANConfig(code_dim=int(data["train"].shape[1]), omega=a.omega, steps=a.steps, batch_size=a.batch)
    state = train_ccdcgan(data["train"], data["prop_train"], a.out, cfg, a.resume, a.seed, progress=not a.quiet)
    meta = {"kind": "ccdcgan", "config": cfg.to_dict(), "property": meta_i["property"],
            "imatgen": str(imatgen), "train_source": meta_i.get("train_source"), "state": state}
    atomic_write_json(Path(a.out) / "ccdcgan.json", meta)
    print(f"CCDCGAN in {a.out}: {state['step']} steps, regressor val MAE {state.get('regressor_val_mae', float('nan')):.3f}")
    if a.ship:
        for f in ("ccdcgan.json", "ccdcgan_generator.weights.h5", "ccdcgan_regressor.weights.h5"):
            atomic_copy(Path(a.out) / f, Path(a.ship) / f)
        print("shipped to", a.ship)
    return 0
