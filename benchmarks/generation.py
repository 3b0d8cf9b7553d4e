"""Generation with the shipped models: random per decile and around base compounds (paper Table 2).

    python benchmarks/generation.py            # 100 per decile + 100 around each of 10 perov_5 val bases
    python benchmarks/generation.py --quick    # 10 per decile, 10 around each of 3 bases

Reports validity, the filter funnel, novelty against the perov_5 training split,
uniqueness, the predicted conditioning property per requested decile (Spearman
correlation of decile and prediction), crystals per second and peak memory.
Writes benchmarks/results/generation.json (generation_segmentation.json with --no-refine, a suffix _coords_cell
with --cell-from coords, _no_soft with --soft-steps 0),
results/generation_deciles.png and the
generation section of benchmarks/RESULTS.md.
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
from icsg.generation.cli import add_reading_options, reading_config  # noqa: E402
from icsg.generation.consistency import ConsistencyConfig  # noqa: E402
from icsg.generation.generator import Generator, apply_filters, load_training_set  # noqa: E402

DATA = HERE.parent.parent / "shared" / "data" / "perov_5"

POSITION_STEPS = ConsistencyConfig().position_steps


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
    ap.add_argument("--no-refine", action="store_true", help="segmentation only, no round-trip refinement")
    # --soft-steps, --position-steps, --restart-above, --cell-from, as in icsg generate
    add_reading_options(ap, generation=True)
    a = ap.parse_args(argv)
    per_decile, n_bases, per_base = (10, 3, 10) if a.quick else (100, 10, 100)
    per_decile, n_bases, per_base = (a.per_decile or per_decile, a.bases or n_bases, a.per_base or per_base)
    refine = reading_config(a) or False
    gen = Generator(a.weights, seed=a.seed, batch_size=32, refine=refine, cell_from=a.cell_from)
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
    gen_std = Generator(a.weights, seed=a.seed, batch_size=32, prior="standard", predict=False,
                        refine=refine, cell_from=a.cell_from)
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
                             if v) + (" --no-refine" if a.no_refine else "")
                   + (" --cell-from coords" if a.cell_from == "coords" else "")
                   + (f" --soft-steps {a.soft_steps}" if a.soft_steps != 60 and not a.no_refine else "")
                   + (f" --position-steps {a.position_steps}"
                      if a.position_steps != POSITION_STEPS and not a.no_refine else ""),
        "refine": not a.no_refine,
        "soft_steps": 0 if a.no_refine else a.soft_steps,
        "position_steps": 0 if a.no_refine else a.position_steps,
        "cell_from": a.cell_from,
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
        "prior": ({"kind": "fitted", "maps": gen.latent_prior.n_maps, "bins": gen.latent_prior.n_bins}
                  if gen.latent_prior is not None else {"kind": "standard"}),
        "around": {"n": len(tgt), "bases": [r.id for r in chosen], "validity": float(tgt["valid"].mean()),
                   "funnel": funnel_tgt, "seconds": t_tgt, "crystals_per_s": len(tgt) / t_tgt, **_content(tgt)},
        "training_set_load_seconds": t_train,
        "peak_rss_MiB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    # the segmentation-only run has its own files and section, so both stay on record
    name = ("generation_segmentation" if a.no_refine else "generation") + (
        "_coords_cell" if a.cell_from == "coords" else "")
    name += "_no_soft" if not a.soft_steps and not a.no_refine else ""
    name += "_no_position" if POSITION_STEPS and not a.position_steps and not a.no_refine else ""
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
    if prior.get("kind") != "fitted":
        return "N(0, I)"
    return (f"the fitted prior ({prior['bins']} Gaussians, one per property bin, over the codes of "
            f"{prior['maps']} training maps; weights/vae_prior.npz)")


def render(res: dict, name: str = "generation") -> str:
    r, t, sd = res["random"], res["around"], res.get("random_standard_prior")
    refine = res.get("refine", True)
    title = "Generation (shipped weights)" + ("" if refine else ", segmentation only (no round-trip refinement)")
    if res.get("cell_from") != "latent":
        title += ", cell from the decoded coordinates"
    if refine and not res.get("soft_steps"):
        title += ", no soft fit before the search"
    if refine and not res.get("position_steps"):
        title += ", no position rounds after the search"
    if res.get("weights_label"):  # a record kept from weights shipped before the present ones
        title += f", {res['weights_label']}"
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
