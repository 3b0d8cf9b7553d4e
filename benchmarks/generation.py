"""Generation with the shipped models: random per decile and around base compounds (paper Table 2).

    python benchmarks/generation.py            # 100 per decile + 100 around each of 10 perov_5 val bases
    python benchmarks/generation.py --quick    # 10 per decile, 10 around each of 3 bases

Reports validity, the filter funnel, novelty against the perov_5 training split,
uniqueness, the predicted conditioning property per requested decile (Spearman
correlation of decile and prediction), crystals per second and peak memory.
Random codes come from the generator's default prior (--prior to choose), read with the default fast
reading. Writes benchmarks/results/generation.json, results/generation_deciles.png and the generation
section of benchmarks/RESULTS.md.
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

from icsg.data.sources import iter_source  # noqa: E402
from icsg.generation.generator import Generator, apply_filters, load_training_set  # noqa: E402

DATA = HERE.parent.parent / "shared" / "data" / "perov_5"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--per-decile", type=int, default=None, help="random samples per decile (default 100, quick 10)")
    ap.add_argument("--bases", type=int, default=None, help="base compounds for 'around' (default 10, quick 3)")
    ap.add_argument("--per-base", type=int, default=None, help="samples around each base (default 100, quick 10)")
    ap.add_argument("--standard-per-decile", type=int, default=None,
                    help="random samples per decile under the paper's N(0, I) prior, for comparison "
                         "(default: a third of --per-decile)")
    ap.add_argument("--weights", default=str(HERE.parent / "weights"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--prior", choices=("flow", "fitted"), default="flow", help="prior of random sampling")
    a = ap.parse_args(argv)
    per_decile, n_bases, per_base = (10, 3, 10) if a.quick else (100, 10, 100)
    per_decile, n_bases, per_base = (a.per_decile or per_decile, a.bases or n_bases, a.per_base or per_base)
    gen = Generator(a.weights, seed=a.seed, prior=a.prior)
    prop = gen.condition_property
    t0 = time.perf_counter()
    training = load_training_set(DATA / "train.csv.gz")
    t_train = time.perf_counter() - t0

    # random sampling, every decile
    t0 = time.perf_counter()
    frames = []
    for k in range(gen.n_bins):
        df = gen.sample(per_decile, condition=k)
        df["requested"] = k
        frames.append(df)
    import pandas as pd

    rnd = pd.concat(frames, ignore_index=True)
    t_rnd = time.perf_counter() - t0
    funnel_rnd = apply_filters(rnd, None, prop, None, training)
    per_bin = []
    for k in range(gen.n_bins):
        v = rnd.loc[(rnd["requested"] == k) & rnd["valid"], prop].dropna().to_numpy()
        per_bin.append({"decile": k, "n_valid": int(len(v)), "median": float(np.median(v)) if len(v) else None,
                        "q25": float(np.quantile(v, 0.25)) if len(v) else None,
                        "q75": float(np.quantile(v, 0.75)) if len(v) else None,
                        "bin_low": ([gen.cond["train_min"]] + gen.cond["edges"])[k],
                        "bin_high": (gen.cond["edges"] + [gen.cond["train_max"]])[k]})
    from scipy.stats import spearmanr

    ok = rnd["valid"] & rnd[prop].notna()
    rho = spearmanr(rnd.loc[ok, "requested"], rnd.loc[ok, prop])
    medians = [b["median"] for b in per_bin if b["median"] is not None]
    monotone = bool(np.all(np.diff(medians) > 0)) if len(medians) == gen.n_bins else False

    # the same random sampling under the paper's N(0, I) prior (the generator above uses the fitted prior)
    per_std = a.standard_per_decile or max(1, per_decile // 3)
    gen_std = Generator(a.weights, seed=a.seed, prior="standard", predict=False)
    t0 = time.perf_counter()
    std = pd.concat([gen_std.sample(per_std, condition=k) for k in range(gen.n_bins)], ignore_index=True)
    t_std = time.perf_counter() - t0
    del gen_std

    # targeted sampling around base compounds of the validation split
    bases = [r for r in iter_source(str(DATA / "val.csv.gz"), limit=400) if r.structure is not None]
    rng = np.random.default_rng(a.seed)
    chosen = [bases[i] for i in rng.choice(len(bases), n_bases, replace=False)]
    t0 = time.perf_counter()
    tgt_frames, funnels = [], []
    for r in chosen:
        df = gen.around(r.structure, per_base, 0.5)
        f = apply_filters(df, r.properties.get(prop), prop, r.structure, training)
        df["base"] = r.id
        tgt_frames.append(df)
        funnels.append(f)
    tgt = pd.concat(tgt_frames, ignore_index=True)
    t_tgt = time.perf_counter() - t0
    funnel_tgt = {k: int(sum(f.get(k, 0) for f in funnels)) for k in funnels[0]}
    funnel_tgt = {k.split(" within")[0] + (" within 20% of base" if "within" in k else ""): v
                  for k, v in funnel_tgt.items()}

    res = {
        "command": "python benchmarks/generation.py" + (" --quick" if a.quick else "")
                   + "".join(f" --{k.replace('_', '-')} {v}" for k, v in (("per_decile", a.per_decile),
                                                                        ("bases", a.bases), ("per_base", a.per_base),
                                                                        ("standard_per_decile", a.standard_per_decile))
                             if v) + (f" --prior {a.prior}" if a.prior != "flow" else ""),
        "reading": "fast",
        "condition_property": prop,
        "random": {"n": len(rnd), "validity": float(rnd["valid"].mean()),
                   "decoded": float(rnd["structure"].notna().mean()),
                   "novel_of_valid": float(rnd.loc[rnd["valid"], "novel"].mean()) if "novel" in rnd else None,
                   "unique_of_valid_novel": funnel_rnd["unique"] / max(1, funnel_rnd.get("not in training set", 1)),
                   "charge_neutral": float(rnd["charge_neutral"].mean()), "funnel": funnel_rnd,
                   "per_decile": per_bin, "spearman_decile_vs_predicted": float(rho.statistic),
                   "spearman_p": float(rho.pvalue), "median_monotonic": monotone,
                   "seconds": t_rnd, "crystals_per_s": len(rnd) / t_rnd, **_content(rnd)},
        "random_standard_prior": {"n": len(std), "validity": float(std["valid"].mean()),
                                  "decoded": float(std["structure"].notna().mean()),
                                  "charge_neutral": float(std["charge_neutral"].mean()),
                                  "crystals_per_s": len(std) / t_std, **_content(std)},
        "prior": {"kind": a.prior, "bins": gen.latent_prior.n_bins},
        "around": {"n": len(tgt), "bases": [r.id for r in chosen], "validity": float(tgt["valid"].mean()),
                   "funnel": funnel_tgt, "seconds": t_tgt, "crystals_per_s": len(tgt) / t_tgt, **_content(tgt)},
        "training_set_load_seconds": t_train,
        "peak_rss_MiB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    name = "generation" + ("_fitted_prior" if a.prior == "fitted" else "")
    (out / f"{name}.json").write_text(json.dumps(res, indent=2, default=float))
    _plot(rnd, prop, gen, out / f"{name}_deciles.png")
    update_section(HERE / "RESULTS.md", name, render(res, name))
    print(json.dumps({k: res[k] for k in ("random", "around")}, indent=1, default=float)[:3000])
    return 0


def _plot(rnd, prop, gen, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    data = [rnd.loc[(rnd["requested"] == k) & rnd["valid"], prop].dropna().to_numpy() for k in range(gen.n_bins)]
    ax.boxplot([d if len(d) else [np.nan] for d in data], positions=range(gen.n_bins), showfliers=False)
    edges = [gen.cond["train_min"]] + gen.cond["edges"] + [gen.cond["train_max"]]
    for k in range(gen.n_bins):
        ax.plot([k - 0.4, k + 0.4], [edges[k], edges[k]], color="tab:red", lw=0.8)
        ax.plot([k - 0.4, k + 0.4], [edges[k + 1], edges[k + 1]], color="tab:red", lw=0.8)
    ax.set_xlabel("requested decile")
    ax.set_ylabel(f"CGCNN-predicted {prop}")
    ax.set_title("predicted property of valid random samples (red: decile bounds)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _content(df) -> dict:
    """What the decoded crystals hold: validity alone passes a one-atom cell."""
    structs = [st for st in df["structure"] if st is not None]
    forms = df.loc[df["structure"].notna(), "formula"].value_counts().head(5)
    return {"mean_sites": float(np.mean([len(st) for st in structs])) if structs else float("nan"),
            "top_formulas": {str(k): int(v) for k, v in forms.items()}}


def _forms(mode: dict) -> str:
    return ", ".join(f"{k} ({v})" for k, v in mode["top_formulas"].items())


def _prior_label(prior: dict) -> str:
    return {"flow": "the flow-matching prior (weights/flow_prior.*)",
            "fitted": "the per-bin Gaussians (weights/vae_prior.npz)"}.get(prior.get("kind"), "N(0, I)")


def render(res: dict, name: str = "generation") -> str:
    r, t, sd = res["random"], res["around"], res.get("random_standard_prior")
    title = "Generation (shipped weights, fast reading)" + (
        ", per-bin Gaussian prior" if res.get("prior", {}).get("kind") == "fitted" else "")
    lines = [f"## {title}", "",
             f"Command: `{res['command']}` (results/{name}.json, plot results/{name}_deciles.png)"
             + (f", measured {res['measured_at']}" if res.get("measured_at") else "") + ". "
             f"Condition: deciles of `{res['condition_property']}` (perov_5 training split). Properties are CGCNN "
             "predictions, not DFT. Novelty: pymatgen StructureMatcher(ltol=0.3, stol=0.5, angle_tol=10) against the "
             "perov_5 training split.", "",
             "| mode | n | validity (distances > 0.5 Å) | mean sites | most common formulas | crystals/s | "
             "paper validity |", "|---|---|---|---|---|---|---|",
             f"| random, 10 deciles, z from {_prior_label(res.get('prior', {}))} | {r['n']} | "
             f"{r['validity']:.3f} | {r['mean_sites']:.2f} | {_forms(r)} | {r['crystals_per_s']:.3f} | 0.76 |"]
    if sd:
        lines.append(f"| random, 10 deciles, z ~ N(0, I) (paper) | {sd['n']} | {sd['validity']:.3f} | "
                     f"{sd['mean_sites']:.2f} | {_forms(sd)} | {sd['crystals_per_s']:.3f} | 0.76 |")
    lines += [f"| around {len(t['bases'])} perov_5 val bases, σ² = 0.5 | {t['n']} | {t['validity']:.3f} | "
              f"{t['mean_sites']:.2f} | {_forms(t)} | {t['crystals_per_s']:.3f} | 0.89 |",
              "", "Filter funnel (paper Table 2 order):", "", "| stage | random | around bases |", "|---|---|---|"]
    keys = list(dict.fromkeys(list(r["funnel"]) + list(t["funnel"])))
    for k in keys:
        lines.append(f"| {k} | {r['funnel'].get(k, '-')} | {t['funnel'].get(k, '-')} |")
    lines += ["", f"Does the condition steer? Spearman ρ(requested decile, predicted property) = "
              f"{r['spearman_decile_vs_predicted']:.3f} (p = {r['spearman_p']:.2g}); median rises monotonically: "
              f"{r['median_monotonic']}.", "",
              "| decile | bin (train) | valid | median predicted | IQR |", "|---|---|---|---|---|"]
    for b in r["per_decile"]:
        med = "-" if b["median"] is None else f"{b['median']:.3f}"
        iqr = "-" if b["q25"] is None else f"{b['q25']:.3f} – {b['q75']:.3f}"
        lines.append(f"| {b['decile']} | {b['bin_low']:.3f} – {b['bin_high']:.3f} | {b['n_valid']} | {med} | {iqr} |")
    lines += ["", f"Novel among valid random samples: {r['novel_of_valid']:.3f}; charge-neutral (pymatgen "
              f"oxidation-state guess) among all random samples: {r['charge_neutral']:.3f}. "
              f"Peak RSS {res['peak_rss_MiB']:.0f} MiB.",
              "", f"![deciles](results/{name}_deciles.png)", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
