"""Which VAE settings learn the density fastest on this machine? Short, equal-budget runs at 16^3.

    python benchmarks/vae_settings.py                 # 4 settings x 400 steps, ~6 min on one core
    python benchmarks/vae_settings.py --steps 200     # quicker look

Each setting trains a fresh plain VAE (no DFC term, same seed, batch 16, rotations) on the
16^3 perov_5 dataset that ``benchmarks/ablation.py`` prepares, and every 100 steps reports,
with BatchNorm recalibrated as at ship time, the posterior-mean reconstruction error of the
density channel on 256 validation maps next to the *mean-map baseline* (predicting the
average training-set map for every crystal). A VAE whose density error is above that
baseline has learned nothing about the individual crystal. Also reports the coordinate-
channel error, which the cell lengths are read from. Writes benchmarks/results/vae_settings.json
and the vae-settings section of RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from results_md import update_section  # noqa: E402

import icsg  # noqa: E402,F401
import keras  # noqa: E402

from icsg.data.dataset import VoxelDataset  # noqa: E402
from icsg.models import batchnorm  # noqa: E402
from icsg.models.vae import VAEConfig, build_vae  # noqa: E402

SETTINGS = {  # name -> (coordinate weight, learning rate)
    "coord weight 20, lr 3e-4 (session-2 run)": (20.0, 3e-4),
    "coord weight 5, lr 1e-3": (5.0, 1e-3),
    "coord weight 1, lr 3e-4": (1.0, 3e-4),
    "coord weight 1, lr 1e-3 (adopted)": (1.0, 1e-3),
}


def run_setting(data: Path, coord_weight: float, lr: float, steps: int, x_val, c_val, x_cal, c_cal,
                seed: int = 0) -> list[dict]:
    keras.utils.set_random_seed(seed)
    train = VoxelDataset(data, "train", "vae", 16, augment=True, seed=seed)
    train.epoch_steps = 100
    cfg = VAEConfig(grid_size=train.grid.size, n_cond=train.condition["n_bins"], filters=(16, 32, 64),
                    beta=1e-5, alpha=0.0, coord_weight=coord_weight)
    vae = build_vae(cfg)
    vae.compile(keras.optimizers.Adam(lr))
    rows, t0 = [], time.perf_counter()
    for k in range(steps // 100):
        vae.fit(train, epochs=1, verbose=0)
        trained = vae.get_weights()
        batchnorm.recalibrate_vae(vae, x_cal, c_cal)
        mu, _ = vae.encoder.predict([x_val, c_val], verbose=0)
        rec = np.asarray(vae.decoder.predict([mu, c_val], verbose=0))
        vae.set_weights(trained)  # training continues from the un-recalibrated statistics
        rows.append({"steps": (k + 1) * 100, "density_mse": float(np.mean((rec[..., 0] - x_val[..., 0]) ** 2)),
                     "coords_mse": float(np.mean((rec[..., 1:] - x_val[..., 1:]) ** 2)),
                     "seconds": time.perf_counter() - t0})
        print(rows[-1], flush=True)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(HERE.parent / "runs" / "ablation" / "data_ri"),
                    help="16^3 dataset from benchmarks/ablation.py (or icsg prepare --grid-size 16)")
    ap.add_argument("--steps", type=int, default=400)
    a = ap.parse_args(argv)
    data = Path(a.data)
    if not (data / "manifest.json").exists():
        raise SystemExit(f"{data}: no prepared dataset; run `python benchmarks/ablation.py` first or "
                         f"`icsg prepare ../shared/data/perov_5/train.csv.gz --out {data} --property heat_ref "
                         "--limit 4000 --grid-size 16`")
    val = VoxelDataset(data, "val", "vae", 16, augment=False, shuffle=False, limit=256)
    batches = [val[i] for i in range(len(val))]
    x_val = np.concatenate([b[0][0] for b in batches])
    c_val = np.concatenate([b[0][1] for b in batches])
    train = VoxelDataset(data, "train", "vae", 16, augment=False, shuffle=False)
    train_mean = train.arrays["density"].mean(0)
    # BatchNorm statistics from training maps, as `icsg ship-weights --recalibrate` does (128 of them)
    cal = [train[i] for i in np.random.default_rng(0).permutation(len(train))[:8]]
    x_cal, c_cal = np.concatenate([b[0][0] for b in cal]), np.concatenate([b[0][1] for b in cal])
    baseline = float(np.mean((x_val[..., 0] - train_mean) ** 2))
    res = {"command": "python benchmarks/vae_settings.py" + (f" --steps {a.steps}" if a.steps != 400 else ""),
           "mean_map_density_mse": baseline, "settings": {}}
    for name, (cw, lr) in SETTINGS.items():
        print(name, flush=True)
        res["settings"][name] = run_setting(data, cw, lr, a.steps, x_val, c_val, x_cal, c_cal)
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "vae_settings.json").write_text(json.dumps(res, indent=2))
    update_section(HERE / "RESULTS.md", "vae-settings", render(res))
    print(render(res))
    return 0


def render(res: dict) -> str:
    steps = [r["steps"] for r in next(iter(res["settings"].values()))]
    lines = [
        "## VAE settings: does the density learn? (16^3, equal budgets)", "",
        "Plain VAE (no DFC) at 16^3 on the ablation's 4,000 perov_5 training crystals, batch 16, fresh weights, "
        "BatchNorm recalibrated on 128 training maps before each measurement; density-channel MSE of posterior-mean reconstructions "
        f"of 256 validation maps. Mean-map baseline (the average training map for every crystal): "
        f"**{res['mean_map_density_mse']:.4f}**. Coordinate-channel MSE after the last step in the last column.",
        "",
        f"Command: `{res['command']}`",
        "",
        "| setting | " + " | ".join(f"density MSE @ {s}" for s in steps) + " | coords MSE |",
        "|---|" + "---|" * (len(steps) + 1),
    ]
    for name, rows in res["settings"].items():
        lines.append(f"| {name} | " + " | ".join(f"{r['density_mse']:.4f}" for r in rows)
                     + f" | {rows[-1]['coords_mse']:.5f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
