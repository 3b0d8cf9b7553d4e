"""``icsg train-unet`` and ``icsg train-vae``: wiring of data, model, loss and the shared loop."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


import icsg  # noqa: F401
import keras

from icsg.data.dataset import VoxelDataset
from icsg.models.losses import NonzeroRecall, WeightedSpeciesCrossEntropy, class_weights
from icsg.models.unet import UNetConfig, build_unet
from icsg.training import fit, voxel_class_counts


@dataclass(frozen=True)
class TrainConfig:
    """Args:
        epochs: maximum epochs.
        batch_size: crystals per step.
        lr: Adam learning rate.
        steps_per_epoch: cap on steps per epoch (a random subset each epoch), so
            checkpoints come often on a CPU; None = the whole split.
        val_limit: validation crystals evaluated per epoch (None = all).
        patience: early-stopping patience in epochs (validation loss).
        seed: seeds weights, shuffling and augmentation.
    """

    epochs: int = 20
    batch_size: int = 8
    lr: float = 1e-3
    steps_per_epoch: int | None = 200
    val_limit: int | None = 256
    patience: int = 5
    seed: int = 0


def train_unet(data_dir, out_dir, model_cfg: dict | None = None, cfg: TrainConfig = TrainConfig(),
               resume: bool = False, limit: int | None = None, verbose: int = 2, crop: int | None = None,
               init_weights=None, occupancy_weight: float = 1.0, resume_lr: float | None = None) -> dict:
    """UNet on whole maps (default) or random ``crop``^3 windows; validation always on whole maps.

    Whole maps are the default: a 16^3 window of a perovskite holds about one atom, so a UNet trained on
    windows learns species with little context and BatchNorm statistics of windows, at no less cost per voxel.
    """
    train = VoxelDataset(data_dir, "train", "unet", cfg.batch_size, augment=True, seed=cfg.seed, limit=limit,
                         crop=crop)
    val = VoxelDataset(data_dir, "val", "unet", cfg.batch_size, augment=False, shuffle=False, limit=cfg.val_limit)
    ucfg = UNetConfig(n_classes=train.n_classes, grid_size=train.grid.size, **(model_cfg or {}))
    counts = voxel_class_counts(train.arrays["species"], train.classes, train.n_classes)
    weights = class_weights(counts)
    man = train.arrays["manifest"]
    meta = {"kind": "unet", "config": ucfg.to_dict(), "elements_Z": man["elements_Z"], "grid": man["grid"],
            "class_weights": weights.tolist(), "data": str(data_dir), "train": cfg.__dict__,
            "n_train": train.n, "n_val": val.n, "crop": crop,
            "occupancy_weight": occupancy_weight}

    def factory():
        model = build_unet(ucfg)
        model.compile(
            optimizer=keras.optimizers.Adam(cfg.lr),
            loss={"species": WeightedSpeciesCrossEntropy(weights), "occupancy": keras.losses.BinaryCrossentropy()},
            loss_weights={"species": 1.0, "occupancy": occupancy_weight},
            metrics={"species": [NonzeroRecall()]},
        )
        return model

    return fit(factory, train, val, out_dir, epochs=cfg.epochs, steps_per_epoch=cfg.steps_per_epoch,
               resume=resume, patience=cfg.patience, meta=meta, seed=cfg.seed, verbose=verbose,
               init_weights=init_weights, resume_lr=resume_lr)


def train_vae(data_dir, out_dir, unet_location, vae_cfg: dict | None = None, cfg: TrainConfig = TrainConfig(),
              resume: bool = False, limit: int | None = None, verbose: int = 2, init_weights=None,
              resume_lr: float | None = None) -> dict:
    """Cond-DFC-VAE on a prepared dataset; ``unet_location`` = trained UNet (run folder or weights/).

    ``unet_location=None`` trains without the perceptual term (the plain β-VAE ablation).
    """
    from icsg.models.unet import feature_extractor
    from icsg.models.vae import VAEConfig, build_vae
    from icsg.pretrained import load_unet

    train = VoxelDataset(data_dir, "train", "vae", cfg.batch_size, augment=True, seed=cfg.seed, limit=limit)
    val = VoxelDataset(data_dir, "val", "vae", cfg.batch_size, augment=False, shuffle=False, limit=cfg.val_limit)
    vcfg = VAEConfig(grid_size=train.grid.size, n_cond=train.condition["n_bins"], **(vae_cfg or {}))
    features = None
    if unet_location is not None and vcfg.alpha > 0:
        unet, _ = load_unet(unet_location)
        features = feature_extractor(unet)
    man = train.arrays["manifest"]
    meta = {"kind": "vae", "config": vcfg.to_dict(), "grid": man["grid"], "condition": man["condition"],
            "elements_Z": man["elements_Z"], "data": str(data_dir), "unet": str(unet_location),
            "train_source": (man.get("sources") or [None])[0],
            "train": cfg.__dict__, "n_train": train.n, "n_val": val.n}

    def factory():
        model = build_vae(vcfg, features)
        model.compile(optimizer=keras.optimizers.Adam(cfg.lr))
        return model

    return fit(factory, train, val, out_dir, epochs=cfg.epochs, steps_per_epoch=cfg.steps_per_epoch,
               resume=resume, patience=cfg.patience, meta=meta, seed=cfg.seed, verbose=verbose,
               init_weights=init_weights, resume_lr=resume_lr)


def train_readout(data_dir, out_dir, readout_cfg: dict | None = None, cfg: TrainConfig = TrainConfig(),
                  resume: bool = False, limit: int | None = None, verbose: int = 2, init_weights=None,
                  resume_lr: float | None = None) -> dict:
    """Readout encoder + heads (``icsg.models.readout``) on a prepared dataset's site lists, cells and property
    (no maps). The cell and property are standardised with the training split's statistics, stored in the config."""
    import numpy as np

    from icsg.models.readout import ReadoutConfig, build_readout

    train = VoxelDataset(data_dir, "train", "readout", cfg.batch_size, augment=True, seed=cfg.seed, limit=limit)
    val = VoxelDataset(data_dir, "val", "readout", cfg.batch_size, augment=False, shuffle=False, limit=cfg.val_limit)
    man = train.arrays["manifest"]
    prop = train.arrays["prop"][np.isfinite(train.arrays["prop"])]
    stats = {"abc_mean_A": float(train.arrays["abc_A"].mean()), "abc_std_A": float(train.arrays["abc_A"].std() + 1e-6),
             "property_mean": float(prop.mean()) if prop.size else 0.0,
             "property_std": float(prop.std() + 1e-6) if prop.size else 1.0}
    rcfg = ReadoutConfig(elements_Z=tuple(man["elements_Z"]), max_count=int(max(train.counts.max(), 1)),
                         max_sites=int(train.arrays["site_Z"].shape[1]), **stats, **(readout_cfg or {}))
    meta = {"kind": "readout", "config": rcfg.to_dict(), "grid": man["grid"], "condition": man["condition"],
            "elements_Z": man["elements_Z"], "data": str(data_dir), "train": cfg.__dict__,
            "n_train": train.n, "n_val": val.n}

    def factory():
        model = build_readout(rcfg)
        model.compile(optimizer=keras.optimizers.Adam(cfg.lr))
        return model

    return fit(factory, train, val, out_dir, epochs=cfg.epochs, steps_per_epoch=cfg.steps_per_epoch,
               resume=resume, patience=cfg.patience, meta=meta, seed=cfg.seed, verbose=verbose,
               init_weights=init_weights, resume_lr=resume_lr)


def register_cli(sub) -> None:
    def add_common(p):
        p.add_argument("data", help="dataset folder from 'icsg prepare'")
        p.add_argument("--out", required=True, help="run folder (checkpoints, log.csv, loss.png)")
        p.add_argument("--epochs", type=int, default=TrainConfig.epochs)
        p.add_argument("--batch", type=int, default=TrainConfig.batch_size)
        p.add_argument("--lr", type=float, default=None,
                       help="Adam learning rate (default 1e-3); with --resume it replaces the rate the run saved "
                            "(without --lr a resumed run keeps its own)")
        p.add_argument("--steps-per-epoch", type=int, default=TrainConfig.steps_per_epoch,
                       help="steps per epoch (0 = whole split); default 200 so a CPU checkpoints every few minutes")
        p.add_argument("--val-limit", type=int, default=TrainConfig.val_limit)
        p.add_argument("--patience", type=int, default=TrainConfig.patience)
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--resume", action="store_true", help="continue from OUT/last.weights.h5 (+ Adam state)")
        p.add_argument("--init-weights", default=None,
                       help="start from these weights (e.g. weights/unet.weights.h5) instead of random ones")
        p.add_argument("--limit", type=int, default=None, help="use only the first N training crystals")
        p.add_argument("--quiet", action="store_true")

    p = sub.add_parser("train-unet", help="train the 3-D UNet segmenter on a prepared dataset",
                       description="Train the UNet (class-weighted CE + occupancy BCE, paper eq. 7). "
                                   "Cost on 2 CPU cores at the default size: ~0.09 s per 32^3 map per step "
                                   "(batch 4: 0.37 s per step), ~0.02 s per 16^3 window (--crop 16, batch 16: "
                                   "0.28 s per step).")
    add_common(p)
    p.add_argument("--base-filters", type=int, default=UNetConfig.base_filters)
    p.add_argument("--depth", type=int, default=UNetConfig.depth)
    p.add_argument("--occupancy-weight", type=float, default=1.0,
                   help="weight of the occupancy BCE against the species CE (eq. 7 uses 1); the occupancy "
                        "mask places the sites, so raise it when species come from the density fit")
    p.add_argument("--crop", type=int, default=0,
                   help="train on random CROP^3 windows instead of whole maps (0, default); 16^3 windows are 8x "
                        "cheaper per map but cut the context around each atom (weights/MODEL_CARD.md, step 11)")
    p.set_defaults(func=_cmd_train_unet)

    p = sub.add_parser("train-vae", help="train the conditional DFC-VAE on a prepared dataset",
                       description="Train the Cond-DFC-VAE (MSE + β·KL + α·DFC over the frozen UNet's encoder "
                                   "layers, paper eq. 5). The dataset must have been prepared with --property.")
    add_common(p)
    p.add_argument("--unet", default=None, help="trained UNet (run folder or weights folder); omit for no DFC term")
    p.add_argument("--latent", type=int, default=256)
    p.add_argument("--filters", default="16,32,64,128", help="encoder filters per level")
    p.add_argument("--beta", type=float, default=5e-4)
    p.add_argument("--alpha", type=float, default=1.0)
    p.add_argument("--coord-weight", type=float, default=1.0,
                   help="weight of the coordinate channels in the MSE (1 = paper, default); values above 1 "
                        "starve the density channel (benchmarks/vae_settings.py)")
    p.add_argument("--density-asinh", type=float, default=0.0, metavar="K",
                   help="compare asinh(K·M) instead of M in the density error (0 = plain MSE, the paper's); "
                        "K > 0 makes the light anions' low, broad peaks count (see icsg/models/vae.py)")
    p.set_defaults(func=_cmd_train_vae)

    p = sub.add_parser("train-readout", help="train the readout encoder (composition, cell, property heads)",
                       description="Train the readout part of the code (icsg/models/readout.py): a small variational "
                                   "encoder of a crystal's sites and cell whose heads give each element's count, the "
                                   "cell lengths and the property, so decoding does not have to guess them from the "
                                   "density. Seconds per epoch on a CPU (no maps).")
    add_common(p)
    p.add_argument("--latent", type=int, default=32, help="size of the readout code (default 32)")
    p.add_argument("--beta", type=float, default=1e-3, help="KL weight (default 1e-3)")
    p.add_argument("--cell-weight", type=float, default=30.0, help="weight of the standardised cell MSE (default 30)")
    p.add_argument("--position-weight", type=float, default=100.0,
                   help="weight of the position head's squared error in Å² (default 100)")
    p.set_defaults(func=_cmd_train_readout)


def _train_cfg(a, default_lr: float) -> TrainConfig:
    return TrainConfig(epochs=a.epochs, batch_size=a.batch, lr=a.lr or default_lr,
                       steps_per_epoch=a.steps_per_epoch or None, val_limit=a.val_limit,
                       patience=a.patience, seed=a.seed)


def _cmd_train_unet(a) -> int:
    state = train_unet(a.data, a.out, {"base_filters": a.base_filters, "depth": a.depth},
                       _train_cfg(a, 1e-3), resume=a.resume, limit=a.limit, verbose=0 if a.quiet else 2,
                       crop=a.crop or None, init_weights=a.init_weights,
                       occupancy_weight=a.occupancy_weight, resume_lr=a.lr if a.resume else None)
    print(f"best val_loss {state.get('best'):.4f} at epoch {state.get('best_epoch')}; weights in "
          f"{Path(a.out) / 'best.weights.h5'}")
    return 0


def _cmd_train_vae(a) -> int:
    vcfg = {"latent_dim": a.latent, "filters": tuple(int(f) for f in a.filters.split(",")), "beta": a.beta,
            "alpha": a.alpha if a.unet else 0.0, "coord_weight": a.coord_weight,
            "density_asinh_k": a.density_asinh}
    state = train_vae(a.data, a.out, a.unet, vcfg, _train_cfg(a, 1e-3), resume=a.resume, limit=a.limit,
                      verbose=0 if a.quiet else 2, init_weights=a.init_weights,
                      resume_lr=a.lr if a.resume else None)
    print(f"best val_loss {state.get('best'):.4f} at epoch {state.get('best_epoch')}; weights in "
          f"{Path(a.out) / 'best.weights.h5'}")
    return 0


def _cmd_train_readout(a) -> int:
    rcfg = {"latent_dim": a.latent, "beta": a.beta, "cell_weight": a.cell_weight, "position_weight": a.position_weight}
    state = train_readout(a.data, a.out, rcfg, _train_cfg(a, 1e-3), resume=a.resume, limit=a.limit,
                          verbose=0 if a.quiet else 2, init_weights=a.init_weights,
                          resume_lr=a.lr if a.resume else None)
    print(f"best val_loss {state.get('best'):.4f} at epoch {state.get('best_epoch')}; weights in "
          f"{Path(a.out) / 'best.weights.h5'}")
    return 0
