"""Relaxation check of generated crystals (paper Table 3, with CHGNet instead of DFT).

    python benchmarks/validation.py                 # 100 samples per model, first 30 kept relaxed
    python benchmarks/validation.py --n 40 --relax 10

For each generator: ``icsg generate --model M --n N`` into a temporary folder, then
``icsg validate`` on the first ``--relax`` kept candidates. CHGNet is a machine-learning
potential, not DFT: the numbers say how far candidates move under a universal potential.
Writes results/validation.json and the "validation" section of RESULTS.md. Needs
``pip install 'icsg[relax]'``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from results_md import update_section  # noqa: E402

from icsg.cli import main as icsg_main  # noqa: E402
from icsg.generation.validate import NOTE, validate_dir  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--relax", type=int, default=30)
    ap.add_argument("--models", default="cond-dfc-vae,imatgen,ccdcgan", help="comma-separated; '' for none")
    ap.add_argument("--reference", type=int, default=30,
                    help="also relax the first N real perov_5 validation crystals: what the data itself scores")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    command = " ".join(["python benchmarks/validation.py", *map(shlex.quote, argv if argv is not None else sys.argv[1:])])
    out_json = HERE / "results" / "validation.json"
    old = {}
    if out_json.exists():  # rows of models not run now are kept, each with the command that measured it
        prev = json.loads(out_json.read_text())
        old = {r["model"]: {"command": prev.get("command", ""), **r} for r in prev["rows"]}
    rows = {}
    for model in [m for m in a.models.split(",") if m]:
        with tempfile.TemporaryDirectory() as tmp:
            icsg_main(["generate", "--model", model, "--n", str(a.n), "--out", tmp, "--seed", str(a.seed)])
            gen = json.loads((Path(tmp) / "summary.json").read_text())
            try:
                _, summary = validate_dir(tmp, limit=a.relax, progress=False)
            except Exception as exc:  # e.g. nothing kept
                summary = {"error": str(exc)}
        rows[model] = {"model": model, "kept": gen["funnel"]["unique"], "generated": gen["n_requested"],
                       "validation": summary, "command": command}
        print(json.dumps(rows[model], default=float)[:1500], flush=True)
    if a.reference:
        rows[REFERENCE] = {"model": REFERENCE, "kept": "-", "generated": a.reference,
                           "validation": _reference(a.reference), "command": command}
        print(json.dumps(rows[REFERENCE], default=float)[:1500], flush=True)
    res = {"note": NOTE, "rows": list((old | rows).values())}
    out_json.write_text(json.dumps(res, indent=2, default=float))
    update_section(HERE / "RESULTS.md", "validation", render(res))
    return 0


REFERENCE = "perov_5 validation crystals (real)"


def _reference(n: int) -> dict:
    """The same relaxation of the first ``n`` real perov_5 validation crystals (DFT-relaxed with another
    functional): how far CHGNet moves the data itself, the floor the generated rows can reach."""
    from icsg.data.sources import iter_source

    data = HERE.parent.parent / "shared" / "data" / "perov_5" / "val.csv.gz"
    with tempfile.TemporaryDirectory() as tmp:
        for r in iter_source(str(data), limit=n):
            if r.error is None:
                r.structure.to(filename=str(Path(tmp) / f"{r.id}.cif"))
        return validate_dir(tmp, limit=n, progress=False)[1]


def render(res: dict) -> str:
    commands = ", ".join(f"`{c}`" for c in sorted({r.get("command", "") for r in res["rows"]}))
    lines = ["## Relaxation check of generated crystals (CHGNet, paper Table 3)", "",
             f"Commands: {commands} (results/validation.json). **{res['note']}.** Per model: random "
             "samples from `icsg generate`, then `icsg validate` on the first kept candidates (force tolerance "
             "0.1 eV/Å, cell and positions relaxed). Δ bond = mean |Δd|/d over pairs within 3.5 Å; relaxation "
             "energy = E(generated) − E(relaxed); |ΔE| = |E_CHGNet(relaxed) − E_CGCNN(energy per atom)|.", "",
             "| model | kept / generated | relaxed | median (mean) Δ bond % | median (mean) Δ cell % | "
             "relaxation energy (eV/atom) | abs ΔE CHGNet vs CGCNN (eV/atom) |", "|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        v = r["validation"]
        m, med = v.get("mean", {}), v.get("median", {})
        f = (lambda k: f"{m[k]:.3f}" if k in m and m[k] == m[k] else "-")
        g = (lambda k: f"{med[k]:.2f} ({m[k]:.2f})" if k in med and med[k] == med[k] else "-")
        lines.append(f"| {r['model']} | {r['kept']} / {r['generated']} | {v.get('n_relaxed', 0)} | "
                     f"{g('bond_change_pct')} | {g('cell_change_pct')} | {f('relaxation_energy_eV_atom')} | "
                     f"{f('abs_e_error_eV_atom')} |")
    lines += ["", "The last row relaxes real crystals of the data (DFT-relaxed with another functional): a generator "
              "that reproduced the data exactly would score that.", "",
              "Per structure type: results/validation.json (`by_structure_type`)."]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
