"""The training commands' parsers: ``icsg train-unet | train-vae | train-readout | train-cgcnn | train-imatgen |
train-ccdcgan``. Nothing heavy is imported here; the command's own module is imported when it runs."""

from __future__ import annotations

import importlib

from icsg.models.config import CCDCGANConfig, ImatgenModelConfig, UNetConfig
from icsg.properties import PROPERTIES
from icsg.training.config import CGCNNTrainConfig, TrainConfig


def runner(module: str, name: str):
    """A command function that imports ``module`` only when the command runs and calls its ``name``."""

    def run(a) -> int:
        return getattr(importlib.import_module(module), name)(a)

    return run


def _add_common(p) -> None:
    """Options every map-model training command takes."""
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


def _add_train_unet(sub) -> None:
    p = sub.add_parser("train-unet", help="train the 3-D UNet segmenter on a prepared dataset",
                       description="Train the UNet (class-weighted CE + occupancy BCE, paper eq. 7). "
                                   "Cost on 2 CPU cores at the default size: ~0.09 s per 32^3 map per step "
                                   "(batch 4: 0.37 s per step), ~0.02 s per 16^3 window (--crop 16, batch 16: "
                                   "0.28 s per step).")
    _add_common(p)
    p.add_argument("--base-filters", type=int, default=UNetConfig.base_filters)
    p.add_argument("--depth", type=int, default=UNetConfig.depth)
    p.add_argument("--occupancy-weight", type=float, default=1.0,
                   help="weight of the occupancy BCE against the species CE (eq. 7 uses 1); the occupancy "
                        "mask places the sites, so raise it when species come from the density fit")
    p.add_argument("--crop", type=int, default=0,
                   help="train on random CROP^3 windows instead of whole maps (0, default); 16^3 windows are 8x "
                        "cheaper per map but cut the context around each atom ")
    p.set_defaults(func=runner("icsg.training.maps", "run_train_unet"))


def _add_train_vae(sub) -> None:
    p = sub.add_parser("train-vae", help="train the conditional DFC-VAE on a prepared dataset",
                       description="Train the Cond-DFC-VAE (MSE + β·KL + α·DFC over the frozen UNet's encoder "
                                   "layers, paper eq. 5). The dataset must have been prepared with --property.")
    _add_common(p)
    p.add_argument("--unet", default=None, help="trained UNet (run folder or weights folder); omit for no DFC term")
    p.add_argument("--latent", type=int, default=256)
    p.add_argument("--filters", default="16,32,64,128", help="encoder filters per level")
    p.add_argument("--beta", type=float, default=5e-4)
    p.add_argument("--alpha", type=float, default=1.0)
    p.add_argument("--coord-weight", type=float, default=1.0,
                   help="weight of the coordinate channels in the MSE (1 = paper, default); values above 1 "
                        "starve the density channel")
    p.add_argument("--density-asinh", type=float, default=0.0, metavar="K",
                   help="compare asinh(K·M) instead of M in the density error (0 = plain MSE, the paper's); "
                        "K > 0 makes the light anions' low, broad peaks count (see icsg/models/vae.py)")
    p.set_defaults(func=runner("icsg.training.maps", "run_train_vae"))


def _add_train_readout(sub) -> None:
    p = sub.add_parser("train-readout", help="train the readout encoder (composition, cell, property heads)",
                       description="Train the readout part of the code (icsg/models/readout.py): a small variational "
                                   "encoder of a crystal's sites and cell whose heads give each element's count, the "
                                   "cell lengths and the property, so decoding does not have to guess them from the "
                                   "density. Seconds per epoch on a CPU (no maps).")
    _add_common(p)
    p.add_argument("--latent", type=int, default=None,
                   help="size of the readout code (default 32; on a periodic dataset 32 + elements + 6 × max sites, "
                        "the room its count and site paths need)")
    p.add_argument("--hidden", type=int, default=256, help="width of the dense layers (default 256)")
    p.add_argument("--beta", type=float, default=1e-3, help="KL weight (default 1e-3)")
    p.add_argument("--cell-weight", type=float, default=30.0, help="weight of the standardised cell MSE (default 30)")
    p.add_argument("--position-weight", type=float, default=100.0,
                   help="weight of the position head's squared error in Å² (default 100)")
    p.add_argument("--slot-weight", type=float, default=100.0,
                   help="weight of the slot head's squared error in Å² (default 100)")
    p.add_argument("--train-only", default=None, metavar="PARTS",
                   help="comma list of the parts that learn (encoder, heads, positions, slots); the rest keep "
                        "--init-weights, e.g. '--train-only slots' adds the slot head to a shipped readout")
    p.set_defaults(func=runner("icsg.training.maps", "run_train_readout"))


def _add_train_cgcnn(sub) -> None:
    p = sub.add_parser("train-cgcnn", help="train CGCNN property models on ../shared/data",
                       description="Train CGCNN regressors. --property all trains formation energy first, then "
                                   "every other property from scratch and fine-tuned from it, keeping the better "
                                   "on validation. ~1-5 min per property on 2 CPU cores.")
    p.add_argument("--property", default="all",
                   help="all, or a comma-separated list of: " + ", ".join(PROPERTIES))
    p.add_argument("--out", default="runs/cgcnn", help="run folder (one subfolder per property)")
    p.add_argument("--data-root", default=None, help="folder with the shared CSVs (default ../shared/data)")
    p.add_argument("--finetune-from", default=None, help="formation-energy run to fine-tune from (single property)")
    p.add_argument("--epochs", type=int, default=CGCNNTrainConfig.epochs)
    p.add_argument("--batch", type=int, default=CGCNNTrainConfig.batch_size)
    p.add_argument("--lr", type=float, default=CGCNNTrainConfig.lr)
    p.add_argument("--patience", type=int, default=CGCNNTrainConfig.patience)
    p.add_argument("--n-conv", type=int, default=CGCNNTrainConfig.n_conv, help="graph convolutions (paper: 1)")
    p.add_argument("--loss", choices=("mse", "l1"), default="mse",
                   help="training loss on the standardised target (l1 optimises the reported MAE directly)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--ship", default=None, help="write the chosen models to this weights folder")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default 1: small graphs gain little from more, and a UNet/VAE "
                        "run usually shares the machine)")
    p.set_defaults(func=runner("icsg.training.cgcnn", "run_cli"))


def _add_train_imatgen(sub) -> None:
    p = sub.add_parser("train-imatgen", help="train the iMatGen-style generator (cell/basis AEs + materials VAE)",
                       description="Encode crystals as iMatGen images, train the cell and the shared basis "
                                   "autoencoders, then the materials VAE over the stacked codes with a "
                                   "below-median-property head. Checkpoints per stage; rerun with --resume. "
                                   "Cost on one shared CPU core at the defaults: ~18 min for 6000 crystals.")
    p.add_argument("train", help="training source (CSV with a cif column, CIF folder)")
    p.add_argument("--val", required=True, help="validation source")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--property", default="heat_ref", help="property column for the classification head")
    p.add_argument("--limit", type=int, default=None, help="use only the first N training crystals")
    p.add_argument("--val-limit", type=int, default=1000)
    p.add_argument("--epochs-ae", type=int, default=6)
    p.add_argument("--epochs-vae", type=int, default=200)
    p.add_argument("--steps-per-epoch", type=int, default=200)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--box", type=float, default=ImatgenModelConfig.box_A, help="basis box side (Å)")
    p.add_argument("--latent", type=int, default=ImatgenModelConfig.latent_dim, help="materials-VAE latent size")
    p.add_argument("--beta", type=float, default=ImatgenModelConfig.beta, help="KL weight of the materials VAE")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--ship", default=None, help="copy the trained model into this weights folder")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=runner("icsg.training.imatgen", "run_cli"))


def _add_train_ccdcgan(sub) -> None:
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
    p.set_defaults(func=runner("icsg.training.ccdcgan", "run_cli"))


def register_cli(sub) -> None:
    _add_train_unet(sub)
    _add_train_vae(sub)
    _add_train_readout(sub)
    _add_train_cgcnn(sub)
    _add_train_imatgen(sub)
    _add_train_ccdcgan(sub)
