"""The ``icsg`` command. Every subcommand has ``--help``; errors print one line and exit non-zero."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import warnings
from pathlib import Path

import icsg  # noqa: F401  (sets KERAS_BACKEND)
from icsg.errors import CrystalError, SourceError, WeightsError
from icsg.training.cli import runner


def _records(sources: list[str], limit: int | None):
    from icsg.data.sources import iter_source

    recs = []
    for src in sources:
        left = None if limit is None else limit - len(recs)
        if left is not None and left <= 0:
            break
        recs.extend(iter_source(src, limit=left))
    return recs


def _grid_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("representation")
    g.add_argument("--grid-size", type=int, default=32, help="voxels per axis (default 32)")
    g.add_argument("--label-radius-scale", type=float, default=None,
                   help="label sphere radius as a multiple of the ionic radius (default: GridSpec's, 0.8)")
    g.add_argument("--sigma-fixed", type=float, default=None,
                   help="use one Gaussian width (Å) for every element instead of the ionic radius")
    g.add_argument("--max-atoms", type=int, default=40, help="reject cells with more sites (default 40)")


def _grid_from(a):
    from icsg.grid import GridSpec

    kw = {"size": a.grid_size, "sigma_fixed_A": a.sigma_fixed}
    if a.label_radius_scale is not None:
        kw["label_radius_scale"] = a.label_radius_scale
    return GridSpec(**kw)


def cmd_prepare(a) -> int:
    from icsg.data.dataset import PrepareConfig, prepare
    from icsg.data.filters import FilterConfig

    recs = _records(a.sources, a.limit)
    if a.fill_property:
        from icsg.predict import fill_property

        if not a.property:
            raise SystemExit("icsg prepare: error: --fill-property needs --property")
        n = fill_property(recs, a.property)
        print(f"icsg prepare: {n} crystals without '{a.property}' get the shipped CGCNN's prediction", file=sys.stderr)
    if a.encoding == "periodic":
        from icsg.representation.periodic import PeriodicGrid

        spec = PeriodicGrid(size=a.grid_size, max_sites=a.max_sites)
    else:
        spec = _grid_from(a)
    man = prepare(recs, a.out, spec, FilterConfig(max_atoms=a.max_atoms),
                  PrepareConfig(property=a.property, bins=a.bins, val_fraction=a.val_fraction, seed=a.seed,
                                shard_size=a.shard_size),
                  workers=a.workers, sources=a.sources)
    print(json.dumps({k: man[k] for k in ("n_records", "n_encoded", "n_train", "n_val")}
                     | {"rejected": man["rejected"]["counts"]}, indent=2))
    return 0


def cmd_roundtrip(a) -> int:
    from icsg.data.filters import FilterConfig
    from icsg.evaluation.roundtrip import RoundtripConfig, run_roundtrip

    from icsg.representation.periodic import PeriodicGrid

    recs = _records(a.sources, a.limit)
    cfg = RoundtripConfig(encoding=a.encoding, grid=_grid_from(a), filters=FilterConfig(max_atoms=a.max_atoms),
                          periodic=PeriodicGrid(size=a.grid_size, max_sites=a.max_atoms))
    return _report(run_roundtrip(recs, cfg, workers=a.workers), a)


def _report(res: dict, a) -> int:
    """Write the full result to --json (atomically) and print it with long failure and crystal lists shortened."""
    from icsg.io import atomic_write_json

    res["sources"] = a.sources
    if a.json:
        atomic_write_json(a.json, res)
    shown = dict(res)
    shown["failures"] = f"{len(res['failures'])} (see --json)" if len(res["failures"]) > 10 else res["failures"]
    if len(res.get("crystals", [])) > 10:
        shown["crystals"] = f"{len(res['crystals'])} (see --json)"
    print(json.dumps(shown, indent=2, default=str))
    return 0


def cmd_reconstruct(a) -> int:
    from icsg.pretrained import WEIGHTS_DIR, has_readout, is_periodic

    recs = _records(a.sources, a.limit)
    weights = Path(a.weights or WEIGHTS_DIR)
    if is_periodic(weights):
        from icsg.evaluation.reconstruct_periodic import reconstruct_codes_periodic, reconstruct_periodic

        if has_readout(weights):  # the code reading; without a readout, the map's
            from icsg.generation.periodic_codec import PeriodicCodec

            return _report(reconstruct_codes_periodic(recs, PeriodicCodec(weights)), a)
        return _report(reconstruct_periodic(recs, weights, weights, batch_size=a.batch, workers=a.workers), a)
    from icsg.evaluation.reconstruct import reconstruct_codes
    from icsg.generation.codec import DensityCodec

    codec = DensityCodec(a.weights, batch_size=a.batch, workers=a.workers)
    return _report(reconstruct_codes(recs, codec, reading=a.reading), a)


def _add_prepare(sub) -> None:
    sp = sub.add_parser("prepare", help="encode crystals into an on-disk voxel dataset",
                        description="Encode crystals (CSV with a 'cif' column, CIF folders, mp:CLASS) into "
                                    "shards with a manifest. Resumes after interruption.")
    sp.add_argument("sources", nargs="+", help="CSV(.gz) files, CIF files or folders, or mp:binary|perovskite|heusler")
    sp.add_argument("--out", required=True, help="dataset folder to write")
    sp.add_argument("--property", default=None, help="property column to condition on (deciles from the train split)")
    sp.add_argument("--bins", type=int, default=10, help="number of property bins (default 10)")
    sp.add_argument("--val-fraction", type=float, default=0.1, help="share of materials held out (default 0.1)")
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--shard-size", type=int, default=512)
    sp.add_argument("--limit", type=int, default=None, help="read at most N crystals")
    sp.add_argument("--workers", type=int, default=None, help="worker processes (default: all cores)")
    sp.add_argument("--encoding", choices=["density", "periodic"], default="density",
                    help="density: the paper's cubic box (cubic cells); periodic: any lattice, a grid over the "
                         "Niggli-reduced unit cell")
    sp.add_argument("--max-sites", type=int, default=20,
                    help="periodic: largest reduced cell taken (default 20, as mp_20)")
    sp.add_argument("--fill-property", action="store_true",
                    help="crystals without --property get the shipped CGCNN's prediction, marked as predicted")
    _grid_args(sp)
    sp.set_defaults(func=cmd_prepare)


def _add_roundtrip(sub) -> None:
    rt = sub.add_parser("roundtrip", help="encode and decode crystals without a network; report the error",
                        description="Encode each crystal, decode it from the ground-truth arrays and report "
                                    "cell MAE, site EMD, |Δ n_sites|, species accuracy and match rate.")
    rt.add_argument("sources", nargs="+", help="CSV(.gz) files, CIF files or folders, or mp:CLASS")
    rt.add_argument("--encoding", choices=["density", "periodic", "imatgen"], default="density",
                    help="density: the paper's cubic box; periodic: any lattice, a grid over the unit cell; imatgen")
    rt.add_argument("--limit", type=int, default=None, help="use at most N crystals")
    rt.add_argument("--json", default=None, help="write the full result (with every failure) here")
    rt.add_argument("--workers", type=int, default=None, help="worker processes (default: all cores)")
    _grid_args(rt)
    rt.set_defaults(func=cmd_roundtrip)


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The ``icsg`` parser; of the commands in ``_COMMANDS`` only the one named in ``argv`` is built in full."""
    p = argparse.ArgumentParser(prog="icsg", description="icsg: 3-D crystal structure generation (Cond-DFC-VAE + UNet) and property prediction (CGCNN).")
    p.add_argument("--version", action="version", version=f"icsg {icsg.__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    _add_prepare(sub)
    _add_roundtrip(sub)

    rc = sub.add_parser("reconstruct", help="encode crystals, decode their codes and compare",
                        description="Crystal -> code (Cond-DFC-VAE and readout encoder, posterior means) -> decoded "
                                    "map -> reading -> crystal; reports match rate, cell MAE, site EMD, |Δn|, the "
                                    "readout's composition accuracy, crystals per second and peak memory.")
    rc.add_argument("sources", nargs="+", help="CSV(.gz) files, CIF files or folders, or mp:CLASS")
    rc.add_argument("--limit", type=int, default=None)
    rc.add_argument("--json", default=None)
    rc.add_argument("--weights", default=None,
                    help="folder with vae.*, readout.* and unet.* (default: the shipped weights/); a folder of "
                         "periodic models (icsg prepare --encoding periodic) reconstructs any lattice")
    rc.add_argument("--batch", type=int, default=16, help="maps per decoder and UNet batch (default 16)")
    rc.add_argument("--workers", type=int, default=1, help="reading worker processes")
    from icsg.generation.cli import add_reading_options

    add_reading_options(rc)
    rc.set_defaults(func=cmd_reconstruct)

    pr = sub.add_parser("predict", help="predict the eight properties of crystals (CIF files, folders, CSVs)",
                       description="Predict formation energy, energy per atom, band gap, bulk and shear modulus, "
                                   "Poisson ratio, refractive index and dielectric constant with the shipped CGCNNs.")
    pr.add_argument("sources", nargs="+", help="CIF files, folders of CIFs, or CSV files with a 'cif' column")
    pr.add_argument("--json", default=None, help="write the predictions here")
    pr.add_argument("--weights", default=None, help="weights folder (default: the shipped weights)")
    pr.add_argument("--limit", type=int, default=None)
    pr.set_defaults(func=runner("icsg.predict", "run_cli"))
    dd = sub.add_parser("decode-dataset", help="copy a prepared dataset with the VAE's reconstructed density maps",
                       description="Pass every map of a prepared dataset through the VAE (posterior mean) and "
                                   "write a dataset of the decoded maps with the true labels, for training the "
                                   "UNet on what it segments at generation time. ~0.04 s per map on 2 cores "
                                   "(11,356 perov_5 maps: 8 min).")
    dd.add_argument("data", help="dataset folder from 'icsg prepare'")
    dd.add_argument("--out", required=True, help="dataset folder to write (resumable)")
    dd.add_argument("--vae", default=None, help="VAE weights or run folder (default: the shipped weights/)")
    dd.add_argument("--decoded-only", action="store_true", help="do not list the true maps beside the decoded ones")
    dd.add_argument("--batch", type=int, default=16)
    dd.set_defaults(func=runner("icsg.training.decoded", "run_cli"))

    wanted = next((x for x in (argv or []) if not x.startswith("-")), None)
    if wanted in _COMMANDS:  # import only the module of the command asked for: keras and torch load slowly
        importlib.import_module(_COMMANDS[wanted][0]).register_cli(sub)
    for name, (_, text) in _COMMANDS.items():
        if name not in sub.choices:  # listed in `icsg --help`; its own parser is built when it is asked for
            sub.add_parser(name, help=text, add_help=False)
    return p


# command -> (module whose register_cli builds its parser, one-line help)
_COMMANDS = {
    "generate": ("icsg.generation.cli", "generate property-conditioned crystals with the shipped models"),
    "validate": ("icsg.generation.validate", "relax generated candidates with CHGNet (ML potential, not DFT)"),
    "train-unet": ("icsg.training.cli", "train the 3-D UNet segmenter on a prepared dataset"),
    "train-vae": ("icsg.training.cli", "train the conditional DFC-VAE on a prepared dataset"),
    "train-readout": ("icsg.training.cli", "train the readout encoder (composition, cell, property, positions)"),
    "train-cgcnn": ("icsg.training.cli", "train CGCNN property models on ../shared/data"),
    "ship-weights": ("icsg.pretrained", "copy a training run's best weights into the weights folder"),
    "fit-latent-prior": ("icsg.generation.latent_prior", "fit the priors that random generation samples codes from"),
    "train-imatgen": ("icsg.training.cli", "train the iMatGen-style generator (cell/basis AEs + materials VAE)"),
    "train-ccdcgan": ("icsg.training.cli", "train the CCDCGAN-style latent GAN on an iMatGen run's crystal codes"),
}


def main(argv: list[str] | None = None) -> int:
    warnings.filterwarnings("ignore", module="pymatgen")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(argv).parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (SourceError, CrystalError, WeightsError, FileNotFoundError, PermissionError, ValueError) as exc:
        print(f"icsg {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"icsg {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
