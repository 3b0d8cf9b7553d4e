"""Random generation on the field's protocol (Xie et al. 2022 Table 3; Jiao et al. 2023 Table 4), perov_5.

    python benchmarks/generation.py                      # 10,000 samples (1,000 per decile), 3,787 references
    python benchmarks/generation.py --quick              # 1,000 samples (100 per decile), 1,000 references
    python benchmarks/generation.py --quick --model imatgen      # a baseline, same code (unconditioned)

Samples come from the model's default prior and reading (for icsg's Cond-DFC-VAE: the flow prior, the fast
reading), 1/10 of them per heat_ref decile. Metrics (``icsg.evaluation.generation_metrics``): structure and
composition validity over all samples; COV-R / COV-P, d_ρ, d_elem over the valid ones against the perov_5
validation split (the reference); d_prop, the Wasserstein distance between the samples' CGCNN-predicted
heat_ref and the reference's DFT values; novelty against the training split and uniqueness (StructureMatcher);
Spearman ρ(requested decile, predicted heat_ref) with the median per decile; SR5 / SR10 / SR15 of 100 samples
requested at the stable end (``--target`` = the training minimum of heat_ref). ``--guide K`` decodes K codes per
sample and keeps those the readout (not the CGCNN that judges) puts nearest the request. Writes results/generation_MODEL.json, results/generation_MODEL_deciles.png
and the generation section of RESULTS.md (every model measured so far beside the published rows).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from results_md import update_section  # noqa: E402

DATA = HERE.parent.parent / "shared" / "data" / "perov_5"
CACHE = HERE.parent / "runs" / "cache"
# structure validity, composition validity, COV-R, COV-P, d_ρ, d_elem (perov_5; Xie et al. 2022, Jiao et al. 2023)
PUBLISHED = {"CDVAE": (1.0, 0.9859, 0.9945, 0.9846, 0.126, 0.063),
             "DiffCSP": (1.0, 0.9885, 0.9974, 0.9827, 0.111, 0.013),
             "EquiCSP": (1.0, 0.9860, 0.9960, 0.9876, 0.111, 0.050),
             "Cond-DFC-VAE (as benchmarked by Xie et al.)": (0.7360, 0.8295, 0.7392, 0.1013, 2.268, 0.837)}
PUBLISHED_SR = {"DiffCSP": (1.00, 1.00, 1.00), "CDVAE": (0.52, 0.65, 0.79), "Cond-DFC-VAE": (0.55, 0.64, 0.69)}


def reference(limit: int | None, workers: int):
    """Fingerprints and heat_ref of the perov_5 validation crystals (cached in runs/cache)."""
    from icsg.data.sources import iter_source
    from icsg.evaluation.generation_metrics import Fingerprints, fingerprints

    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"perov5_val_fingerprints_{limit or 'all'}.npz"
    if path.exists():
        d = np.load(path)
        return Fingerprints(*(d[k] for k in Fingerprints.__dataclass_fields__)), d["heat_ref"]
    recs = [r for r in iter_source(str(DATA / "val.csv.gz"), limit=limit) if r.structure is not None]
    fp = fingerprints([r.structure for r in recs], workers=workers, desc="reference fingerprints")
    heat = np.array([r.properties.get("heat_ref", np.nan) for r in recs], float)
    np.savez(path, heat_ref=heat, **{k: getattr(fp, k) for k in Fingerprints.__dataclass_fields__})
    return fp, heat


ANIONS = ("O", "N", "S", "F")


def _abx3_key(formula) -> tuple | None:
    """(cations, anions) of a formula A B X3 (A = B allowed; X3 a multiset of O, N, S, F), else None."""
    from pymatgen.core import Composition

    c = Composition(formula)
    an = tuple(sorted((str(e), int(n)) for e, n in c.items() if str(e) in ANIONS))
    cat = tuple(sorted(str(e) for e, n in c.items() if str(e) not in ANIONS for _ in range(int(n))))
    if any(n != int(n) for n in c.values()) or sum(n for _, n in an) != 3 or len(cat) != 2:
        return None
    return cat, an


def enumeration_novelty(structures: list, novel: np.ndarray) -> dict:
    """perov_5 is a complete enumeration: every A, B of its cations over every one of its anion sets
    (52 x 52 x 7 = 18,928 crystals, Castelli et al. 2012), of which the training split holds 60 %. A sampler
    that draws from the data's distribution without copying it therefore lands on a training crystal with
    that probability. Returns the enumeration's size and training share, the share of the samples inside
    it, and the novelty of those."""
    import pandas as pd

    keys = [_abx3_key(f) for split in ("train", "val")
            for f in pd.read_csv(DATA / f"{split}.csv.gz", usecols=["formula"])["formula"]]
    cations = {e for k in keys if k for e in k[0]}
    anion_sets = {k[1] for k in keys if k}
    n_train = len(pd.read_csv(DATA / "train.csv.gz", usecols=["formula"]))
    size = len(cations) ** 2 * len(anion_sets)
    inside = np.array([(k := _abx3_key(s.composition.formula)) is not None and set(k[0]) <= cations
                       and k[1] in anion_sets and len(s) == 5 for s in structures], bool)
    novel = np.asarray(novel, bool)
    return {"enumeration_size": size, "enumeration_training_share": n_train / size,
            "novelty_of_data_distribution": 1 - n_train / size,
            "share_in_enumeration": float(inside.mean()) if inside.size else float("nan"),
            "novel_of_enumerated": float(novel[inside].mean()) if inside.any() else float("nan")}


def sample(model: str, n: int, seed: int, prior: str | None, guide: int, sr_guide: int):
    """(DataFrame of n samples with 'requested' decile (-1 when the model is unconditioned), seconds,
    generator, predicted property of 100 samples requested at the stable end (None unconditioned))."""
    import pandas as pd

    from icsg.generation.baselines import make_generator

    kw = {"prior": prior} if prior and model == "cond-dfc-vae" else {}
    if model == "cond-dfc-vae":
        kw["guide"] = guide
    gen = make_generator(model, seed=seed, **kw)
    t0 = time.perf_counter()
    stable = None
    if model == "cond-dfc-vae":
        per = n // gen.n_bins
        frames = [gen.sample(per, condition=k).assign(requested=k) for k in range(gen.n_bins)]
        df = pd.concat(frames, ignore_index=True)
        gen.guide = sr_guide  # the optimisation task's budget: codes decoded per sample kept
        low = gen.sample(100, target=float(gen.cond["train_min"]))
        gen.guide = guide
        stable = low[gen.condition_property].to_numpy(float)
    else:
        df = gen.sample(n).assign(requested=-1)
    return df, time.perf_counter() - t0, gen, stable


def property_steering(df, prop: str, train_heat: np.ndarray, n_bins: int, stable: np.ndarray) -> dict:
    """Spearman ρ of requested decile and predicted property, medians and IQR per decile, and the success rates
    of the 100 samples ``stable`` requested at the training minimum (the stable end)."""
    from scipy.stats import spearmanr

    from icsg.evaluation.generation_metrics import success_rates

    ok = df["valid"] & df[prop].notna() & (df["requested"] >= 0)
    if not ok.any():
        return {}
    rho = spearmanr(df.loc[ok, "requested"], df.loc[ok, prop])
    medians = [float(df.loc[ok & (df["requested"] == k), prop].median()) for k in range(n_bins)]
    spread = [[float(q) for q in df.loc[ok & (df["requested"] == k), prop].quantile([0.25, 0.75])]
              for k in range(n_bins)]
    low = stable[np.isfinite(stable)]
    return {"spearman_decile_vs_predicted": float(rho.statistic), "median_per_decile": medians,
            "iqr_per_decile": spread, "median_monotonic": bool(np.all(np.diff(medians) > 0)),
            **success_rates(low, train_heat), "sr_samples": int(len(low))}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", choices=("cond-dfc-vae", "imatgen", "ccdcgan"), default="cond-dfc-vae")
    ap.add_argument("--quick", action="store_true", help="1,000 samples against 1,000 references")
    ap.add_argument("--n", type=int, default=None, help="samples (default 10,000; --quick 1,000)")
    ap.add_argument("--prior", choices=("flow", "fitted", "standard"), default=None,
                    help="prior of the Cond-DFC-VAE's codes (default: the generator's, flow)")
    ap.add_argument("--guide", type=int, default=1,
                    help="Cond-DFC-VAE: codes decoded per sample kept (icsg.Generator guide; default 1, none)")
    ap.add_argument("--sr-guide", type=int, default=None,
                    help="guide of the 100 samples requested at the stable end (default: --guide)")
    ap.add_argument("--workers", type=int, default=2, help="processes for the fingerprints")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    import pandas as pd

    from icsg.evaluation.generation_metrics import fingerprints, generation_metrics
    from icsg.generation.generator import apply_filters, load_training_set

    n = a.n or (1000 if a.quick else 10000)
    ref_fp, ref_heat = reference(1000 if a.quick else None, a.workers)
    df, t_sample, gen, stable = sample(a.model, n, a.seed, a.prior, a.guide, a.sr_guide or a.guide)
    prop = gen.condition_property
    structs = list(df["structure"])
    decoded = [s for s in structs if s is not None]
    t0 = time.perf_counter()
    full = fingerprints(structs, workers=a.workers, desc="sample fingerprints")
    t_fp = time.perf_counter() - t0
    metrics = generation_metrics(full, ref_fp)
    valid = full.struct_valid & full.comp_valid
    from scipy.stats import wasserstein_distance

    pred = df[prop].to_numpy(float) if prop in df else np.full(len(df), np.nan)
    pv = pred[valid & np.isfinite(pred)]
    metrics["d_property"] = float(wasserstein_distance(pv, ref_heat[np.isfinite(ref_heat)])) if pv.size else None
    training = load_training_set(DATA / "train.csv.gz")
    sub = df[valid].copy()
    funnel = apply_filters(sub, None, prop, None, training)
    metrics["novel_of_valid"] = funnel.get("not in training set", 0) / max(1, int(valid.sum()))
    metrics["novel_unique_of_valid"] = funnel.get("unique", 0) / max(1, int(valid.sum()))
    metrics.update(enumeration_novelty(list(sub["structure"]), sub["novel"].to_numpy(bool)))
    train_heat = pd.read_csv(DATA / "train.csv.gz", usecols=["heat_ref"])["heat_ref"].to_numpy(float)
    res = {"command": "python benchmarks/generation.py" + (" --quick" if a.quick else "")
                      + (f" --n {a.n}" if a.n else "") + (f" --model {a.model}" if a.model != "cond-dfc-vae" else "")
                      + (f" --prior {a.prior}" if a.prior else "") + (f" --guide {a.guide}" if a.guide > 1 else "")
                      + (f" --sr-guide {a.sr_guide}" if a.sr_guide else ""),
           "model": a.model, "prior": a.prior or ("flow" if a.model == "cond-dfc-vae" else None),
           "guide": a.guide if a.model == "cond-dfc-vae" else None,
           "sr_guide": (a.sr_guide or a.guide) if a.model == "cond-dfc-vae" else None,
           "reference": f"perov_5 val, {len(ref_heat)} crystals", **metrics,
           "property": property_steering(df, prop, train_heat, getattr(gen, "n_bins", 10), stable)
                        if stable is not None else {},
           "mean_sites_decoded": float(np.mean([len(s) for s in decoded])) if decoded else float("nan"),
           "sample_seconds": t_sample, "samples_per_second": n / t_sample, "fingerprint_seconds": t_fp,
           "peak_rss_MiB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
           "load_average_after": float(Path("/proc/loadavg").read_text().split()[0])}
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / f"generation_{a.model}.json").write_text(json.dumps(res, indent=1, default=float))
    if res["property"]:
        _plot(df, prop, gen, out / f"generation_{a.model}_deciles.png")
    update_section(HERE / "RESULTS.md", "generation", render(out))
    print(json.dumps({k: v for k, v in res.items() if k != "property"}, indent=1, default=float))
    return 0


def _plot(df, prop, gen, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    data = [df.loc[(df["requested"] == k) & df["valid"], prop].dropna().to_numpy() for k in range(gen.n_bins)]
    ax.boxplot([d if len(d) else [np.nan] for d in data], positions=range(gen.n_bins), showfliers=False)
    edges = [gen.cond["train_min"]] + gen.cond["edges"] + [gen.cond["train_max"]]
    for k in range(gen.n_bins):
        ax.plot([k - 0.4, k + 0.4], [edges[k], edges[k]], color="tab:red", lw=0.8)
        ax.plot([k - 0.4, k + 0.4], [edges[k + 1], edges[k + 1]], color="tab:red", lw=0.8)
    ax.set_xlabel("requested decile")
    ax.set_ylabel(f"CGCNN-predicted {prop} (eV)")
    ax.set_title("predicted property of valid random samples (red: decile bounds)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _f(v, fmt="{:.3f}"):
    return "–" if v is None or (isinstance(v, float) and not np.isfinite(v)) else fmt.format(v)


def render(results_dir: Path) -> str:
    rows = []
    for m in ("cond-dfc-vae", "imatgen", "ccdcgan"):
        p = results_dir / f"generation_{m}.json"
        if p.exists():
            rows.append(json.loads(p.read_text()))
    lines = ["## Generation on the CDVAE protocol (perov_5)", "",
             "Written by `python benchmarks/generation.py` (one run per model, `--model`); reference: the perov_5 "
             "validation split. Validity over all samples; coverage (cut-offs 0.2 / 4.0) and distances over the "
             "valid ones. Properties are CGCNN predictions of heat_ref, not DFT.", "",
             "| model | command | samples | struct. valid | comp. valid | COV-R | COV-P | d_ρ (g/cm³) | d_elem | "
             "d_prop (eV) | novel & unique of valid | mean sites | samples/s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| icsg {r['model']}" + (f" ({r['prior']} prior" + (f", guide {r['guide']}" if (r.get("guide") or 1) > 1
                                                                     else "") + ")" if r.get("prior") else "")
                     + f" | `{r['command']}` | {r['n_samples']} | {_f(r['structure_validity'])} | "
                     f"{_f(r['composition_validity'])} | {_f(r['cov_recall'])} | {_f(r['cov_precision'])} | "
                     f"{_f(r['d_density_g_cm3'])} | {_f(r['d_n_elements'])} | {_f(r.get('d_property'))} | "
                     f"{_f(r['novel_unique_of_valid'])} | {_f(r['mean_sites_decoded'], '{:.2f}')} | "
                     f"{_f(r['samples_per_second'], '{:.2f}')} |")
    for name, v in PUBLISHED.items():
        lines.append(f"| {name}, published | – | 10,000 | " + " | ".join(_f(x) for x in v) + " | – | – | – | – |")
    for r in rows:
        p = r.get("property") or {}
        if not p:
            continue
        med = ", ".join(_f(x, "{:.2f}") for x in p["median_per_decile"])
        lines += ["", f"Property steering, icsg {r['model']}: Spearman ρ(requested decile, predicted heat_ref) = "
                  f"{_f(p['spearman_decile_vs_predicted'])}; median predicted heat_ref per requested decile: {med} "
                  f"(monotonic: {p['median_monotonic']}); of {p['sr_samples']} samples requested at the training "
                  f"minimum (guide {r.get('sr_guide') or 1}) SR5 / SR10 / SR15 = {_f(p['SR5'], '{:.2f}')} / {_f(p['SR10'], '{:.2f}')} / "
                  f"{_f(p['SR15'], '{:.2f}')} (published: "
                  + "; ".join(f"{k} {' / '.join(f'{x:.2f}' for x in v)}" for k, v in PUBLISHED_SR.items()) + ").",
                  "", f"![deciles](results/generation_{r['model']}_deciles.png)"]

    notes = [f"icsg {r['model']}: {r['note']}" for r in rows if r.get("note")]
    if notes:
        lines += ["", "Notes on the runs: " + "; ".join(notes) + "."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
