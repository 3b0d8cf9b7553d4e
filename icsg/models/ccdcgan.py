"""CCDCGAN-style latent GAN with a property constraint (Long et al., npj Comput. Mater. 2021).

The generator and discriminator work on the *crystal code* of the iMatGen-style
autoencoders (``icsg.generation.crystal_code``): the stacked cell and per-element basis
latents, which is what CCDCGAN calls the latent crystal graph (its autoencoders are
iMatGen's image autoencoders). This project's Cond-DFC-VAE latent would tie the GAN to a
property-conditioned decoder that needs a condition bin per sample; the crystal code
decodes unconditionally, as in the paper.

A frozen property regressor R on the code constrains the generator (paper eq., ω = 0.1):

    L_G = BCE(D(G(n)), 1) + ω · mean(exp(R(G(n))))      (R in eV/atom: favours low formation energy)
    L_D = BCE(D(x), 1) + BCE(D(G(n)), 0)

Training uses ``train_on_batch`` on two compiled models (the discriminator, and the
generator through an untracked, frozen D and R), so it runs on every Keras backend.
"""

from __future__ import annotations

import csv
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

import icsg  # noqa: F401
import keras
from keras import layers, ops

from icsg.errors import WeightsError
from icsg.io import atomic_path, atomic_write_json


@dataclass(frozen=True)
class CCDCGANConfig:
    code_dim: int = 188
    noise_dim: int = 32
    hidden: int = 256
    omega: float = 0.1
    lr: float = 2e-4
    batch_size: int = 64
    steps: int = 4000
    regressor_epochs: int = 60

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "CCDCGANConfig":
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


def build_generator(cfg: CCDCGANConfig) -> keras.Model:
    n = keras.Input((cfg.noise_dim,), name="noise")
    h = layers.Dense(cfg.hidden, name="g_h0")(n)
    h = layers.LeakyReLU(0.2)(h)
    h = layers.Dense(cfg.hidden, name="g_h1")(h)
    h = layers.LeakyReLU(0.2)(h)
    return keras.Model(n, layers.Dense(cfg.code_dim, name="g_code")(h), name="generator")


def build_discriminator(cfg: CCDCGANConfig) -> keras.Model:
    x = keras.Input((cfg.code_dim,), name="code")
    h = layers.Dense(cfg.hidden, name="d_h0")(x)
    h = layers.LeakyReLU(0.2)(h)
    h = layers.Dense(cfg.hidden // 2, name="d_h1")(h)
    h = layers.LeakyReLU(0.2)(h)
    return keras.Model(x, layers.Dense(1, name="d_logit")(h), name="discriminator")


def build_regressor(cfg: CCDCGANConfig) -> keras.Model:
    x = keras.Input((cfg.code_dim,), name="code")
    h = layers.Dense(128, activation="relu", name="r_h0")(x)
    h = layers.Dense(64, activation="relu", name="r_h1")(h)
    return keras.Model(x, layers.Dense(1, name="r_property")(h), name="regressor")


@keras.saving.register_keras_serializable(package="icsg")
class ConstrainedGenerator(keras.Model):
    """G with the frozen D and R attached untracked, so only G's weights train."""

    def __init__(self, generator, discriminator, regressor, omega: float, **kwargs):
        super().__init__(**kwargs)
        self.generator = generator
        object.__setattr__(self, "_d", discriminator)
        object.__setattr__(self, "_r", regressor)
        self.omega = omega
        self.adv_tracker = keras.metrics.Mean(name="adv")
        self.prop_tracker = keras.metrics.Mean(name="property")

    def call(self, noise, training=False):
        code = self.generator(noise, training=training)
        return {"logit": self._d(code, training=False), "property": self._r(code, training=False)}

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        logit = y_pred["logit"]
        adv = ops.mean(ops.binary_crossentropy(ops.ones_like(logit), logit, from_logits=True))
        prop = ops.mean(ops.exp(y_pred["property"]))
        self.adv_tracker.update_state(adv)
        self.prop_tracker.update_state(ops.mean(y_pred["property"]))
        return adv + self.omega * prop

    @property
    def metrics(self):
        return super().metrics + [self.adv_tracker, self.prop_tracker]


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


def _scalar(v):
    return v[0] if isinstance(v, (list, tuple)) else v


def load_ccdcgan(location):
    """(generator, regressor, meta) from a run or weights folder (ccdcgan.json + two weight files)."""
    from icsg.pretrained import load_weights_file, read_description

    loc = Path(location)
    meta = read_description(loc / "ccdcgan.json", "train with 'icsg train-ccdcgan'")
    cfg = CCDCGANConfig.from_dict(meta["config"])
    gen, reg = build_generator(cfg), build_regressor(cfg)
    for name, model in (("ccdcgan_generator", gen), ("ccdcgan_regressor", reg)):
        load_weights_file(model, loc / f"{name}.weights.h5")
    return gen, reg, meta


def register_cli(sub) -> None:
    p = sub.add_parser("train-ccdcgan", help="train the CCDCGAN-style latent GAN on an iMatGen run's crystal codes",
                       description="Train a property regressor on the crystal codes of a trained iMatGen-style "
                                   "model, then a GAN on the codes with the loss BCE + ω·mean(exp(E_f)) "
                                   "(Long et al. 2021). Checkpoints every 200 steps; --resume continues. "
                                   "~2 min for 4000 steps on one CPU core.")
    p.add_argument("--imatgen", required=True, help="iMatGen run or weights folder (imatgen.json, codes)")
    p.add_argument("--codes", default=None, help="codes.npz of the iMatGen run (default: IMATGEN/codes.npz)")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--steps", type=int, default=CCDCGANConfig.steps)
    p.add_argument("--omega", type=float, default=CCDCGANConfig.omega, help="property-constraint weight (paper 0.1)")
    p.add_argument("--batch", type=int, default=CCDCGANConfig.batch_size)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--ship", default=None, help="copy ccdcgan.json + weights into this folder")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd)


def _cmd(a) -> int:
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
