"""``icsg generate``: sample, decode, annotate, filter and write crystals (the main job)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from icsg.errors import SourceError
from icsg.generation.plots import slice_sheet
from icsg.io import atomic_path, atomic_save_npz, atomic_write_json, atomic_write_text
from icsg.pretrained import WEIGHTS_DIR
from icsg.properties import PROPERTIES

CSV_COLUMNS = ["file", "formula", "a_A", "b_A", "c_A", "n_sites", "condition", "valid", "charge_neutral",
               "novel", "pass_property", "kept", "readout_property"]


def _base_structure(spec: str, data_csv: str | None):
    """A CIF path, or an id looked up in the training/validation CSV."""
    from icsg.data.sources import iter_source, read_cif_file

    p = Path(spec)
    if p.suffix.lower() == ".cif" or p.exists():
        if not p.exists():
            raise SourceError(f"{p}: no such file")
        rec = read_cif_file(p)
        if rec.error:
            raise SourceError(str(rec.error))
        return rec.structure, rec.properties
    if data_csv is None or not Path(data_csv).exists():
        raise SourceError(f"'{spec}' is not a CIF file, and no --data CSV to look the id up in")
    for rec in iter_source(data_csv):
        if rec.id == spec:
            if rec.error:
                raise SourceError(str(rec.error))
            return rec.structure, rec.properties
    raise SourceError(f"id '{spec}' not found in {data_csv}")


# options of the voxel pipeline and their defaults: set away from the default for a model without one, an error
VOXEL_OPTIONS = {"workers": 1, "reading": "fast", "prior": "flow", "temperature": 1.0, "guide": 1}


def _voxel_options(a, conditional: bool) -> dict:
    if conditional:
        return {k: getattr(a, k) for k in VOXEL_OPTIONS}
    bad = [k for k, default in VOXEL_OPTIONS.items() if getattr(a, k) != default]
    if bad:
        raise ValueError(f"--{bad[0].replace('_', '-')} applies to --model cond-dfc-vae only, not {a.model}")
    return {}


def _draw(gen, a, conditional: bool):
    """(results table, base crystal or None, property target or None, mode) of the requested sampling mode."""
    prop = gen.condition_property
    base, target, mode = None, None, "random"
    if a.interpolate:
        mode = "interpolate"
        sa, _ = _base_structure(a.interpolate[0], a.data)
        sb, _ = _base_structure(a.interpolate[1], a.data)
        df = gen.interpolate(sa, sb, a.steps, a.method)
    elif a.around:
        mode = "around"
        base, props = _base_structure(a.around, a.data)
        if a.condition is not None:
            gen._onehot(a.condition, 1)
        df = gen.around(base, a.n or 100, a.variance, a.condition)
        target = props.get(prop)
        if target is None or not np.isfinite(target):
            target = float(gen.predictor.predict([base])[prop].iloc[0]) if gen.predictor else None
    elif conditional:
        if a.target is not None:
            target = a.target
            df = gen.sample(a.n or 100, target=a.target)
        else:
            k = gen.n_bins // 2 if a.condition is None else a.condition
            gen._onehot(k, 1)
            target = gen.bin_centre(k)
            df = gen.sample(a.n or 100, condition=k)
    else:
        target = a.target
        df = gen.sample(a.n or 100)
    return df, base, target, mode


def _training_set(train_csv):
    """The training crystals for the novelty filter, or None (with a warning) when the file is missing;
    a relative path is also looked up in the checkout."""
    from icsg.generation.generator import load_training_set

    if train_csv and not Path(train_csv).exists() and not Path(train_csv).is_absolute():
        repo_relative = Path(__file__).resolve().parents[2] / train_csv
        train_csv = str(repo_relative) if repo_relative.exists() else train_csv
    if train_csv and Path(train_csv).exists():
        return load_training_set(train_csv)
    print(f"icsg generate: novelty filter skipped (training set {train_csv!r} not found; pass --train)",
          file=sys.stderr)
    return None


def run_generate(a) -> dict:
    from icsg.generation.generator import apply_filters

    out = Path(a.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".icsg_write_test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise SourceError(f"{out}: output directory cannot be written ({exc.strerror})") from None
    if a.n is not None and a.n <= 0:
        raise ValueError(f"--n must be positive, got {a.n}")
    from icsg.pretrained import is_periodic

    if is_periodic(a.weights):  # any-lattice models: their own, simpler generator
        from icsg.generation.periodic import run_generate_periodic

        return run_generate_periodic(a, out)
    t0 = time.perf_counter()
    from icsg.generation.baselines import make_generator

    conditional = a.model == "cond-dfc-vae"
    if not conditional and a.condition is not None:
        raise ValueError(f"--condition needs --model cond-dfc-vae ({a.model} is not property-conditioned); "
                         "--target sets the property window only")
    gen = make_generator(a.model, a.weights, seed=a.seed, batch_size=a.batch,
                         **_voxel_options(a, conditional))
    prop = gen.condition_property
    df, base, target, mode = _draw(gen, a, conditional)
    training = None if a.no_novelty else _training_set(a.train or gen.train_source)
    funnel = apply_filters(df, target, prop, base, training, a.window)
    written = []
    for i, row in df.iterrows():
        if row["kept"] or (a.keep_all and row["structure"] is not None):
            name = f"gen_{i:05d}_{row['formula']}.cif"
            atomic_write_text(out / name, row["structure"].to(fmt="cif"))
            written.append((i, name))
    files = dict(written)

    table = df.drop(columns=["structure", "z"]).copy()
    table.insert(0, "file", [files.get(i, "") for i in df.index])
    cols = [c for c in CSV_COLUMNS if c in table] + [c for c in PROPERTIES if c in table] + ["failure"]
    with atomic_path(out / "candidates.csv", suffix=".csv") as tmp:
        table[cols].to_csv(tmp, index=False)
    atomic_save_npz(out / "latents.npz", z=np.stack(df["z"].to_list()), condition=np.asarray(df["condition"], dtype=float))
    slice_sheet(gen.last_density_slices, out / "density_slices.png", list(df["formula"]))
    seconds = time.perf_counter() - t0
    summary = {
        "model": a.model, "mode": mode, "n_requested": int(len(df)), "condition_property": prop,
        "target": target, "funnel": funnel,
        "rates": {"decoded": funnel["decoded"] / len(df), "valid": float(df["valid"].mean()),
                  "kept": funnel["unique"] / len(df), "charge_neutral": float(df["charge_neutral"].mean())},
        "novelty_checked": training is not None, "cif_files": len(written),
        "wall_seconds": seconds, "crystals_per_second": len(df) / seconds,
        "decode_seconds": df.attrs["seconds"], "seed": a.seed,
        "reading": a.reading if conditional else None,
        "prior": (f"{a.prior} (temperature {a.temperature}, guide {a.guide})" if mode == "random" and conditional
                  else None),
        "weights": str(a.weights), "note": "properties are CGCNN predictions, not DFT",
    }
    atomic_write_json(out / "summary.json", summary)
    return summary


def add_reading_options(p) -> None:
    """How decoded maps are read into crystals: the option `icsg generate` and `icsg reconstruct` share."""
    p.add_argument("--reading", choices=("fast", "exact"), default="fast",
                   help="fast (default): the composition and cell the code's readout heads give, put on the sites "
                        "of the segmented map; exact: the per-crystal search through the encoder (icsg.generation."
                        "consistency; tens of seconds per crystal)")


def register_cli(sub) -> None:
    p = sub.add_parser("generate", help="generate property-conditioned crystals with the shipped models",
                       description="Sample the Cond-DFC-VAE (random per condition, around a base crystal, or "
                                   "between two), decode with the UNet, predict properties with the CGCNNs, filter "
                                   "(distance, stoichiometry, novelty, property window, uniqueness) and write CIFs, "
                                   "candidates.csv, summary.json and density_slices.png to --out.")
    p.add_argument("--model", choices=("cond-dfc-vae", "imatgen", "ccdcgan"), default="cond-dfc-vae",
                   help="generator: the paper's Cond-DFC-VAE (default), the iMatGen-style VAE or the "
                        "CCDCGAN-style latent GAN (both decode through the iMatGen-style autoencoders)")
    p.add_argument("--n", type=int, default=None, help="crystals to sample (default 100)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--condition", type=int, default=None, help="property bin 0..9 (default: the middle bin)")
    g.add_argument("--target", type=float, default=None, help="target value of the condition property")
    p.add_argument("--around", default=None, help="base crystal: a CIF file or an id in --data")
    p.add_argument("--variance", type=float, default=0.5, help="σ² around the base (paper 0.5)")
    p.add_argument("--interpolate", nargs=2, metavar=("A", "B"), default=None, help="two CIFs or ids")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--method", choices=["linear", "slerp"], default="linear")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch", type=int, default=16, help="maps per decoder and UNet batch (16 keeps the peak memory under 2 GB)")
    p.add_argument("--workers", type=int, default=1, help="reading worker processes")
    add_reading_options(p)
    p.add_argument("--prior", choices=("flow", "fitted", "standard"), default="flow",
                   help="random mode: codes from the flow-matching model of the training codes (flow, default; "
                        "weights/flow_prior.*), the Gaussian fitted to the codes of the requested bin (fitted; "
                        "weights/vae_prior.npz) or N(0, I) (standard, paper)")
    p.add_argument("--temperature", type=float, default=1.0,
                   help="random mode: scale of the prior's noise (default 1)")
    p.add_argument("--guide", type=int, default=1,
                   help="random mode: decode this many codes per crystal and keep those the readout puts nearest "
                        "the requested property (default 1: no guidance; costs GUIDE times the decoding)")
    p.add_argument("--weights", default=str(WEIGHTS_DIR),
                   help="weights folder (default: the shipped perovskite models); a folder of periodic models "
                        "(any lattice) samples random codes per --condition")
    p.add_argument("--data", default=None, help="CSV to look base ids up in")
    p.add_argument("--train", default=None, help="training CSV for the novelty filter (default: the VAE's)")
    p.add_argument("--no-novelty", action="store_true", help="skip the training-set comparison")
    p.add_argument("--window", type=float, default=0.2, help="relative property window (default 0.2)")
    p.add_argument("--keep-all", action="store_true", help="write a CIF for every decoded crystal")
    p.set_defaults(func=_cmd)


def _cmd(a) -> int:
    s = run_generate(a)
    if s.get("model") == "periodic":
        print(json.dumps({k: s[k] for k in ("condition", "n_requested", "read", "wall_seconds")}, indent=2))
        return 0
    print(json.dumps({k: s[k] for k in ("mode", "n_requested", "funnel", "rates", "cif_files", "wall_seconds",
                                        "crystals_per_second")}, indent=2, default=float))
    return 0
