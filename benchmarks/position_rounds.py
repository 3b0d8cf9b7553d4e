"""Position rounds after the round-trip search: the dev-set comparison behind ``ConsistencyConfig.position_steps``.

    python benchmarks/position_rounds.py                      # val crystals 200-263, variants 0, 100x1, 100x2
    python benchmarks/position_rounds.py --start 200 --stop 208 --variants 0 20x1   # a quick look

The crystals come from the perov_5 validation split *after* the first 200 that
``benchmarks/reconstruction.py --limit 200`` scores, so choosing the setting here does not tune it on the
benchmark. Every crystal is encoded (posterior mean), decoded, segmented by the shipped UNet (4 rotations) and
read by the default refinement without position rounds (soft fit, then the discrete search); that state is
then read further by each variant STEPSxROUNDS (``position_rounds``: the positions alone fitted through the
encoder for STEPS Adam steps at ``--lr`` Å per step, then the search again; ROUNDS times; 0 = none). The
variants start from the same state, so their differences are the position rounds' alone. Writes
results/position_rounds.json and the "position_rounds" section of RESULTS.md.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from dev_crystals import dev_batches  # noqa: E402
from results_md import update_section  # noqa: E402

from icsg.evaluation.metrics import compare, summarise  # noqa: E402
from icsg.generation.consistency import ConsistencyConfig  # noqa: E402
from icsg.generation.pipeline import position_rounds, refined, structures_from_sites  # noqa: E402

KEYS = ("match_rate", "dn_sites", "species_accuracy", "site_emd_A", "cell_mae_A")


def _variant(text: str) -> tuple[int, int]:
    steps, _, rounds = text.partition("x")
    return int(steps), int(rounds or 1)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--start", type=int, default=200, help="first validation crystal (default 200)")
    ap.add_argument("--stop", type=int, default=264, help="one past the last (default 264)")
    ap.add_argument("--variants", nargs="+", default=["0", "100x1", "100x2"], metavar="STEPSxROUNDS")
    ap.add_argument("--lr", type=float, default=ConsistencyConfig().position_lr_A, help="Å per Adam step")
    ap.add_argument("--weights", default=str(HERE.parent / "weights"))
    a = ap.parse_args(argv)
    variants = [_variant(v) for v in a.variants]
    vae, spec, seg, recs, batches = dev_batches(a.weights, a.start, a.stop)
    base_cfg = ConsistencyConfig(position_steps=0, exact_fit_steps=0)  # the stages measured when this was written
    chunks, t0 = [], time.perf_counter()
    for d in batches:
        items = refined(vae, d.sites, d.decoded, d.mu, d.cond, spec, seg, base_cfg)
        chunks.append((d.crystals, d.decoded, d.mu, d.cond, items))
    acc = [c for ch, *_ in chunks for c in ch]
    t_base = time.perf_counter() - t0
    rows, matched = [], {}
    for steps, rounds in variants:
        cfg = replace(base_cfg, position_steps=steps, position_rounds=rounds, position_lr_A=a.lr)
        pairs, fails, res, per, t1 = [], [], [], [], time.perf_counter()
        for ch, dec, mu, cond, items in chunks:
            items = position_rounds(vae, copy.deepcopy(items), dec, mu, cond, spec, seg, cfg)
            for (_, s, _), (pred, why) in zip(ch, structures_from_sites(items, spec, seg)):
                if pred is None:
                    fails.append({"reason": "decode_failed", "detail": why})
                    per.append(False)
                else:
                    pairs.append(compare(s, pred))
                    per.append(bool(pairs[-1].match))
            res += [s.residual for s, _ in items if s is not None]
        summary = summarise(pairs, fails, len(acc))
        name = "0" if steps == 0 else f"{steps}x{rounds}"
        matched[name] = per
        rows.append({"variant": name, "position_steps": steps, "position_rounds": rounds,
                     **{k: summary[k] for k in KEYS}, "matched": int(sum(per)),
                     "residual_median": float(np.median(res)), "residual_mean": float(np.mean(res)),
                     "extra_seconds_per_crystal": (time.perf_counter() - t1) / len(acc)})
        print(json.dumps(rows[-1]), flush=True)
    first = matched[rows[0]["variant"]]
    for r in rows:
        r["gained_vs_first"] = [recs[i].id for i, (m, f) in enumerate(zip(matched[r["variant"]], first)) if m and not f]
        r["lost_vs_first"] = [recs[i].id for i, (m, f) in enumerate(zip(matched[r["variant"]], first)) if f and not m]
    cmd = "python benchmarks/position_rounds.py" + (
        f" --start {a.start}" if a.start != 200 else "") + (f" --stop {a.stop}" if a.stop != 264 else "") + (
        f" --variants {' '.join(a.variants)}" if a.variants != ap.get_default("variants") else "") + (
        f" --lr {a.lr}" if a.lr != ap.get_default("lr") else "")
    out = {"command": cmd, "crystals": [a.start, a.stop], "n": len(acc), "lr_A": a.lr,
           "base_seconds_per_crystal": t_base / len(acc), "rows": rows}
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "position_rounds.json").write_text(json.dumps(out, indent=2, default=float))
    update_section(HERE / "RESULTS.md", "position_rounds", render(out))
    return 0


def render(out: dict) -> str:
    lines = ["## Position rounds after the round-trip search (dev crystals)", "",
             f"Command: `{out['command']}` (results/position_rounds.json). perov_5 validation crystals "
             f"{out['crystals'][0]}-{out['crystals'][1] - 1} (n = {out['n']}, after the reconstruction benchmark's "
             "first 200), read by the default refinement without position rounds "
             f"({out['base_seconds_per_crystal']:.1f} s per crystal: decoding, UNet, soft fit, search); each variant "
             f"then fits the positions alone for STEPS Adam steps at {out['lr_A']} Å per step and searches again, "
             "ROUNDS times, from that same state.", "",
             "| STEPSxROUNDS | matched | match rate | abs Δn | species | site EMD (Å) | code distance (median) | "
             "extra s per crystal | gained / lost vs first row |", "|---|---|---|---|---|---|---|---|---|"]
    for r in out["rows"]:
        lines.append(f"| {r['variant']} | {r['matched']} | {r['match_rate']:.3f} | {r['dn_sites']:.3f} | "
                     f"{r['species_accuracy']:.3f} | {r['site_emd_A']:.3f} | {r['residual_median']:.4f} | "
                     f"{r['extra_seconds_per_crystal']:.1f} | {len(r['gained_vs_first'])} / "
                     f"{len(r['lost_vs_first'])} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
