"""Generators of this family on the same data, judged by the same metrics (issue: literature baselines).

    python benchmarks/compare.py            # 200 validation crystals reconstructed, 300 samples per model
    python benchmarks/compare.py --quick    # 24 and 48: a smoke run, < 10 min on 2 CPU cores

Models: the Cond-DFC-VAE (+ UNet, this project's main model), the iMatGen-style materials
VAE and the CCDCGAN-style latent GAN (both decode through the same iMatGen-style
autoencoders; the GAN has no encoder, so its reconstruction row is those autoencoders alone).
All trained on the perov_5 training split; weights from weights/ (see MODEL_CARD.md).

Per model: reconstruction of perov_5 validation crystals (cell MAE, site EMD, match rate),
random generation (validity = all distances > 0.5 Å, uniqueness among valid, novelty against
the perov_5 training split, charge neutrality, the earth mover's distance between the
CGCNN-predicted heat_ref of valid samples and the training set's DFT heat_ref), training
wall time (from the weights' descriptions) and generation throughput (sample -> decode ->
properties, crystals/s in this process). Writes results/compare{_quick}.json and .png; the
full run also rewrites the "compare" section of RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from results_md import update_section  # noqa: E402

import icsg  # noqa: E402,F401
from icsg.data.sources import iter_source  # noqa: E402
from icsg.metrics import compare as compare_structures, summarise  # noqa: E402
from icsg.generation import filters as F  # noqa: E402
from icsg.generation.baselines import MODELS, make_generator  # noqa: E402
from icsg.generation.generator import load_training_set  # noqa: E402

DATA = HERE.parent.parent / "shared" / "data" / "perov_5"


def reconstruction(model: str, gen, records, refine: bool = True) -> dict:
    t0 = time.perf_counter()
    if model == "cond-dfc-vae":
        from icsg.evaluation.reconstruct import reconstruct_codes

        res = reconstruct_codes(records, gen.codec, reading="exact" if refine else "fast", progress=False)
    else:
        pairs, failures = [], []
        ok = []
        for r in records:
            try:
                ok.append((r, gen.codec.encode_structures([r.structure], [r.id])))
            except Exception as exc:  # CrystalError: too many elements, box too small...
                failures.append({"id": r.id, "reason": getattr(exc, "reason", "encode_failed"), "detail": str(exc)})
        if ok:
            codes = np.concatenate([c for _, c in ok])
            if model == "imatgen":  # through the materials VAE's posterior mean
                mu, _ = gen.mvae.encoder.predict(codes, verbose=0)
                codes = np.asarray(gen.mvae.decoder.predict(np.asarray(mu), verbose=0))
            decoded, _ = gen.codec.decode(codes)
            for (r, _), (s, why) in zip(ok, decoded):
                if s is None:
                    failures.append({"id": r.id, "reason": "decode_failed", "detail": why})
                else:
                    pairs.append(compare_structures(r.structure, s))
        res = summarise(pairs, failures, len(records))
    res["seconds"] = time.perf_counter() - t0
    return {k: res[k] for k in ("n", "n_decoded", "cell_mae_A", "site_emd_A", "dn_sites", "match_rate", "seconds")
            if k in res}


def generation(model: str, gen, n: int, training, train_prop: np.ndarray) -> tuple[dict, pd.DataFrame]:
    from scipy.stats import wasserstein_distance

    t0 = time.perf_counter()
    df = gen.sample(n, condition=None) if model != "cond-dfc-vae" else _sample_all_deciles(gen, n)
    seconds = time.perf_counter() - t0
    valid = df["valid"].to_numpy(bool)
    structs = list(df["structure"])
    uniq = np.array(F.unique_mask(structs, list(valid)))
    novel = np.array([v and not training.contains(s) for s, v in zip(structs, valid)]) if training else valid
    prop = gen.condition_property
    pred = df.loc[valid, prop].dropna().to_numpy() if prop in df else np.zeros(0)
    return {"n": int(n), "decoded": float(df["structure"].notna().mean()), "validity": float(valid.mean()),
            "uniqueness_of_valid": float(uniq.sum() / max(1, valid.sum())),
            "novelty_of_valid": float(novel.sum() / max(1, valid.sum())),
            "charge_neutral": float(df["charge_neutral"].mean()),
            "property_emd": float(wasserstein_distance(pred, train_prop)) if len(pred) else None,
            "property_median_pred": float(np.median(pred)) if len(pred) else None,
            "seconds": seconds, "crystals_per_s": n / seconds}, df.assign(model=model)


def _sample_all_deciles(gen, n: int) -> pd.DataFrame:
    """The conditional model sampled evenly over its deciles, so its property target is the training spread."""
    per = [n // gen.n_bins + (1 if k < n % gen.n_bins else 0) for k in range(gen.n_bins)]
    return pd.concat([gen.sample(m, condition=k) for k, m in enumerate(per) if m], ignore_index=True)


def training_seconds(model: str, weights: Path) -> float | None:
    def load(name):
        p = weights / name
        return json.loads(p.read_text()) if p.exists() else {}

    if model == "cond-dfc-vae":
        total = 0.0
        for name in ("unet.json", "vae.json"):
            meta = load(name)
            # epochs of the shipped run, plus those of runs it was warm-started from (--init-weights)
            total += sum(meta.get("training", {}).get("epoch_seconds", [])) + float(meta.get("warm_start_seconds", 0.0))
        return total or None
    meta = load("imatgen.json")
    t = sum((meta.get("train_seconds") or {}).values()) + float(meta.get("images_seconds", 0.0))
    if model == "ccdcgan":
        st = load("ccdcgan.json").get("state", {})
        t += float(st.get("seconds", 0.0)) + float(st.get("regressor_seconds", 0.0))
    return t or None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="24 reconstructions and 48 samples per model")
    ap.add_argument("--weights", default=str(HERE.parent / "weights"))
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--exact", action="store_true",
                    help="cond-dfc-vae: read with the exact per-crystal search (default: the fast reading)")
    a = ap.parse_args(argv)
    n_rec, n_gen = (24, 48) if a.quick else (200, 300)
    weights = Path(a.weights)
    t_all = time.perf_counter()
    records = [r for r in iter_source(str(DATA / "val.csv.gz"), limit=n_rec) if r.structure is not None]
    training = load_training_set(DATA / "train.csv.gz")
    train_df = pd.read_csv(DATA / "train.csv.gz", usecols=["heat_ref"])
    train_prop = train_df["heat_ref"].dropna().to_numpy()
    rows, frames = [], []
    for model in a.models.split(","):
        t_load = time.perf_counter()
        gen = make_generator(model, weights, seed=a.seed)
        load_s = time.perf_counter() - t_load
        rec = reconstruction(model, gen, records, refine=a.exact)
        g, df = generation(model, gen, n_gen, training, train_prop)
        frames.append(df)
        rows.append({"model": model, "reconstruction": rec, "generation": g, "load_seconds": load_s,
                     "training_seconds": training_seconds(model, weights)})
        print(json.dumps(rows[-1], default=float), flush=True)
    res = {"command": "python benchmarks/compare.py" + (" --quick" if a.quick else "")
           + (" --exact" if a.exact else ""), "rows": rows,
           "data": "perov_5 (train for training/novelty, val for reconstruction)", "property": "heat_ref",
           "wall_seconds": time.perf_counter() - t_all,
           "peak_rss_MiB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    stem = "compare_quick" if a.quick else "compare"
    (out / f"{stem}.json").write_text(json.dumps(res, indent=2, default=float))
    _plot(pd.concat(frames, ignore_index=True), train_prop, out / f"{stem}.png")
    table = render(res, f"results/{stem}.png")
    (out / f"{stem}.md").write_text(table + "\n")
    if not a.quick:
        update_section(HERE / "RESULTS.md", "compare", table)
    print(table)
    return 0


def _plot(df: pd.DataFrame, train_prop: np.ndarray, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    bins = np.linspace(np.quantile(train_prop, 0.005), np.quantile(train_prop, 0.995), 40)
    axes[0].hist(train_prop, bins=bins, density=True, histtype="stepfilled", alpha=0.3, color="gray",
                 label="training set (DFT)")
    for model, g in df.groupby("model", sort=False):
        v = g.loc[g["valid"], "heat_ref"].dropna() if "heat_ref" in g else []
        if len(v):
            axes[0].hist(v, bins=bins, density=True, histtype="step", lw=1.5, label=f"{model} (CGCNN, n={len(v)})")
    axes[0].set_xlabel("heat_ref (eV/atom)")
    axes[0].set_ylabel("density")
    axes[0].legend(fontsize=7)
    models = list(dict.fromkeys(df["model"]))
    rates = {"decoded": [df.loc[df.model == m, "structure"].notna().mean() for m in models],
             "valid": [df.loc[df.model == m, "valid"].mean() for m in models],
             "charge neutral": [df.loc[df.model == m, "charge_neutral"].mean() for m in models]}
    x = np.arange(len(models))
    for i, (k, v) in enumerate(rates.items()):
        axes[1].bar(x + 0.25 * (i - 1), v, 0.25, label=k)
    axes[1].set_xticks(x, models)
    axes[1].set_ylim(0, 1)
    axes[1].legend(fontsize=7)
    axes[1].set_title("random samples", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _f(v, fmt="{:.3f}"):
    return "-" if v is None or (isinstance(v, float) and not np.isfinite(v)) else fmt.format(v)


def render(res: dict, png: str) -> str:
    lines = ["## Generator comparison (perov_5, same split, same metrics)", "",
             f"Command: `{res['command']}` (results/{Path(png).stem}.json). Reconstruction on the first "
             f"{res['rows'][0]['reconstruction']['n']} perov_5 validation crystals; "
             f"{res['rows'][0]['generation']['n']} random samples per model (the Cond-DFC-VAE spread evenly over "
             "its ten deciles); novelty against the perov_5 training split (StructureMatcher); property EMD = "
             "Wasserstein distance between CGCNN-predicted heat_ref of the valid samples and the training set's "
             "DFT heat_ref (eV/atom). CCDCGAN has no encoder: its reconstruction row is the shared iMatGen-style "
             "autoencoders alone. Throughput includes decoding and the nine CGCNN predictions; training time is "
             "what the weights' descriptions record (CPU shared with other jobs; the Cond-DFC-VAE row includes the "
             "UNet and the warm-start chain, the CCDCGAN row the shared autoencoders it decodes through).", "",
             "| model | rec. match | cell MAE (Å) | site EMD (Å) | Δn sites | validity | unique | novel | "
             "charge neutral | property EMD (eV/atom) | training (min) | crystals/s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        rec, g = r["reconstruction"], r["generation"]
        lines.append(f"| {r['model']} | {_f(rec.get('match_rate'))} | {_f(rec.get('cell_mae_A'))} | "
                     f"{_f(rec.get('site_emd_A'))} | {_f(rec.get('dn_sites'), '{:.2f}')} | {_f(g['validity'])} | "
                     f"{_f(g['uniqueness_of_valid'])} | {_f(g['novelty_of_valid'])} | {_f(g['charge_neutral'])} | "
                     f"{_f(g['property_emd'])} | "
                     f"{_f(r['training_seconds'] / 60 if r['training_seconds'] else None, '{:.0f}')} | "
                     f"{_f(g['crystals_per_s'], '{:.2f}')} |")
    lines += ["", f"Whole run: {res['wall_seconds'] / 60:.1f} min, peak RSS {res['peak_rss_MiB']:.0f} MiB.", "",
              f"![comparison]({png})"]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
