"""Write weights/MODEL_CARD.md from the shipped models' JSON descriptions and the benchmark results.

    python benchmarks/model_card.py

Every number comes from weights/*.json (written by the training commands) or
benchmarks/results/*.json (written by the benchmark scripts).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
W = ROOT / "weights"
R = ROOT / "benchmarks" / "results"



def _resumes(meta: dict) -> list[dict]:
    """The resumes that trained: of several at the same epoch, only the last went on (the others were stopped
    before their first epoch ended)."""
    out: list[dict] = []
    for r in meta.get("resumed") or []:
        if out and out[-1]["at_epoch"] == r["at_epoch"]:
            out[-1] = r
        else:
            out.append(r)
    return out


def _chain(meta: dict) -> list[str]:
    """Runs a shipped model was warm-started from (descriptions before ``warm_start_chain`` had them in the note)."""
    from icsg.pretrained import _chain_of_note

    return meta.get("warm_start_chain") or _chain_of_note(meta.get("warm_start_note", ""))

def _load(p: Path):
    return json.loads(p.read_text()) if p.exists() else None


def main(argv: list[str] | None = None) -> int:
    import argparse

    argparse.ArgumentParser(description="Write weights/MODEL_CARD.md from the shipped weights' JSON descriptions "
                                        "and their checksums (no training, no network).").parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from icsg.pretrained import sha256

    lines = ["# Model card: shipped weights", "",
             "All models were trained on this project's 2-core CPU machine with the project's own commands, "
             "from `../shared/data` (read in place, never copied). Weights are Keras HDF5 (`*.weights.h5`) or "
             "torch state dicts of tensors (`*.pt`, loaded with `torch.load(weights_only=True)`): no pickle, no "
             "code. Each has a JSON description beside it; `icsg.pretrained` rebuilds the model from it.", ""]
    lines += ["## How the voxel models were made (2 shared CPU cores)", "",
              "The dataset: `icsg prepare ../shared/data/perov_5/train.csv.gz --out runs/data/perov5_train --property "
              "heat_ref --val-fraction 0.05` (11,356 crystals, 0 rejected; validation = 5 % of materials by id hash). "
              "The UNet and the Cond-DFC-VAE were each trained in several warm-started runs, every run continuing "
              "from the previously shipped weights with `--init-weights weights/NAME.weights.h5` (the VAE's "
              "perceptual features from the shipped UNet, `--unet weights`) and shipped with `icsg ship-weights RUN "
              "--name NAME --recalibrate runs/data/perov5_train` (BatchNorm statistics recomputed on whole training "
              "maps). The sections below give the last run's command and resumes, and the wall time of the whole "
              "chain; the full sequence of commands is `data_prep/train_shipped_models.sh`. The readout encoder "
              "trains on the same dataset's site lists in minutes, and the priors are fitted to the codes of the "
              "shipped VAE and readout. Continue any model with `--init-weights weights/NAME.weights.h5`.", ""]
    for name, title in (("unet", "3-D UNet segmenter"), ("vae", "Cond-DFC-VAE")):
        meta = _load(W / f"{name}.json")
        if meta is None:
            lines += [f"## {title}", "", "not shipped yet", ""]
            continue
        tr = meta.get("training", {})
        secs = tr.get("epoch_seconds") or []
        logs = tr.get("last_logs") or {}
        cmd = meta.get("command", "")
        lines += [f"## {title} (`weights/{name}.weights.h5`)", "",
                  f"- data: `{meta.get('data')}` ({meta.get('n_train')} training / {meta.get('n_val')} validation "
                  f"crystals evaluated per epoch; perov_5 training split, validation = 5 % of materials by id hash)",
                  f"- command: `{cmd}`" if cmd else None,
                  f"- config: `{json.dumps(meta.get('config'))}`",
                  f"- training windows: {meta.get('crop')}^3 crops" if meta.get("crop") else "- training inputs: whole maps",
                  f"- perceptual (DFC) features from: `{meta.get('unet')}`" if name == "vae" else None,
                  f"- warm start from: `{meta.get('init_weights')}`" if meta.get("init_weights") else None,
                  *[f"- resumed at epoch {r['at_epoch']} with learning rate {r['lr']:.3g}: `{r['command']}`"
                    for r in _resumes(meta)],
                  f"- BatchNorm statistics recomputed after training on {meta['bn_recalibrated']['maps']} training "
                  f"{'windows' if meta.get('crop') else 'maps'} ({meta['bn_recalibrated']['layers']} layers)"
                  if meta.get("bn_recalibrated") else None,
                  f"- epochs: {tr.get('epochs_done')} of {meta.get('train', {}).get('steps_per_epoch')} steps "
                  f"(batch {meta.get('train', {}).get('batch_size')}); best validation loss {tr.get('best'):.4f} at "
                  f"epoch {tr.get('best_epoch')}" if tr else "- epochs: n/a",
                  f"- wall time: {sum(secs) / 3600:.2f} h ({(sum(secs) / len(secs)) if secs else float('nan'):.0f} s "
                  f"per epoch on 2 CPU cores, at times shared with other jobs)" + (
                      f", plus {meta['warm_start_seconds'] / 3600:.2f} h of the runs it was warm-started from "
                      f"(--init-weights chain{': ' + ', '.join(_chain(meta)) if _chain(meta) else ''})"
                      if meta.get("warm_start_seconds") else ""),
                  f"- last epoch metrics: `{json.dumps({k: round(v, 4) for k, v in logs.items()})}`",
                  f"- sha256: `{sha256(W / f'{name}.weights.h5')}`", ""]
    lines += _readout(sha256)
    lines += ["## CGCNN property models (`weights/cgcnn_*.pt`)", "",
              "Commands: `icsg train-cgcnn --property all --out runs/cgcnn --ship weights` (defaults: 100 epochs, "
              "patience 15) trained formation energy and energy per atom; it was restarted with `--epochs 30 "
              "--patience 10 --resume` for the rest. Formation energy, energy per atom and "
              "heat_ref from scratch; the elastic and dielectric properties trained both from scratch and fine-tuned "
              "from the formation-energy model, the lower validation MAE shipped (scratch won every time). Band gap "
              "(17k crystals, mostly zero) was retrained with an L1 loss, from scratch and "
              "fine-tuned: `icsg train-cgcnn --property band_gap, --loss l1 --epochs 40 --patience 10 --out "
              "runs/cgcnn_l1` (scratch shipped). "
              "Split: 80/10/10 % of materials by id hash. Test metrics: benchmarks/RESULTS.md (properties).", "",
              "| property | unit | data | train/val/test | chosen | epochs (best) | val MAE (property units) | sha256 |",
              "|---|---|---|---|---|---|---|---|"]
    props = _load(R / "properties.json")
    for p in sorted(W.glob("cgcnn_*.json")):
        m = _load(p)
        from icsg.properties import PROPERTIES

        spec = PROPERTIES[m["property"]]
        runs = m.get("chosen_over", {})
        chosen = "fine-tuned" if m.get("init_from") else "scratch"
        state = _load(Path(runs.get("finetuned" if m.get("init_from") else "scratch", {}).get("run", "")) / "state.json") \
            if runs else None
        ep = f"{state['epoch']} ({state['best_epoch']})" if state else "-"
        val = " / ".join(f"{k} {v['val_mae']:.4f}" for k, v in runs.items())
        lines.append(f"| {spec.label} | {spec.unit or '-'}{' (log10 target)' if spec.log10 else ''} | "
                     f"{', '.join(s[0] for s in spec.sources)} | {m['n_train']}/{m['n_val']}/{m['n_test']} | {chosen} | "
                     f"{ep} | {val} | `{m['sha256'][:16]}…` |")
    if props:
        lines += ["", "Test-split MAE (from benchmarks/results/properties.json): " + "; ".join(
            f"{r['property']} {r['cgcnn_mae']:.4g} {r['unit']}" for r in props["rows"]) + "."]
    lines += ["", "Full sha256 values are in each model's JSON (`sha256`).", ""]
    lines += _baselines(sha256)
    lines += _periodic(sha256)
    lines = [ln for ln in lines if ln is not None]  # optional lines that do not apply
    (W / "MODEL_CARD.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


def _readout(sha256) -> list[str]:
    """The readout encoder and heads, and the priors fitted to the codes."""
    meta = _load(W / "readout.json")
    if meta is None:
        return ["## Readout encoder", "", "not shipped yet", ""]
    tr = meta.get("training", {})
    secs = tr.get("epoch_seconds") or []
    logs = tr.get("last_logs") or {}
    out = ["## Readout encoder and heads (`weights/readout.weights.h5`)", "",
           "The second part of the code, z_read: a Deep Sets encoder of the crystal's sites and cell with heads for "
           "the element counts, the cell lengths, the property, the site positions (position head) and each "
           "element's sites from the code alone (slot head) (icsg/models/readout.py)."
           + (f" The shipped file's last run trained only {', '.join(meta['train_only'])} on the frozen encoder, "
              "heads and position head of the file it started from (same sha256 as before for those layers), so "
              "the codes and the priors below did not change." if meta.get("train_only") else ""), "",
           f"- data: `{meta.get('data')}` ({meta.get('n_train')} training / {meta.get('n_val')} validation crystals)",
           f"- command: `{meta.get('command')}`",
           f"- warm start from: `{meta.get('init_weights')}`" if meta.get("init_weights") else None,
           *[f"- resumed at epoch {r['at_epoch']} with learning rate {r['lr']:.3g}: `{r['command']}`"
             for r in _resumes(meta)],
           f"- config: `{json.dumps({k: v for k, v in meta['config'].items() if k != 'elements_Z'})}`",
           f"- epochs: {tr.get('epochs_done')}; best validation loss {tr.get('best', float('nan')):.4f} at epoch "
           f"{tr.get('best_epoch')}; wall time {sum(secs) / 60:.1f} min" + (
               f", plus {meta['warm_start_seconds'] / 60:.1f} min of the run it was warm-started from"
               if meta.get("warm_start_seconds") else ""),
           f"- last epoch metrics: `{json.dumps({k: round(v, 4) for k, v in logs.items()})}`",
           f"- sha256: `{sha256(W / 'readout.weights.h5')}`", ""]
    lp, lc = meta.get("latent_prior"), meta.get("latent_cell")
    flow = _load(W / "flow_prior.json")
    out += ["## Priors over the codes and the exact reading's cell readout", "",
            "Fitted by `icsg fit-latent-prior runs/data/perov5_train --maps 20000` to the posterior means "
            "[z_map, z_read] of the training maps.", ""]
    if flow:
        pca = flow["config"].get("pca_dims")
        out.append(f"- `weights/flow_prior.pt` (default prior): conditional flow matching"
                   + (f" on the codes' top {pca} principal components (whitened; the other directions at the mean)"
                      if pca else "") + ", config "
                   f"`{json.dumps(flow['config'])}`, {flow.get('maps')} codes, final loss {flow.get('final_loss', 0):.3f}, "
                   f"{flow.get('train_seconds', 0) / 60:.1f} min; sha256 `{sha256(W / 'flow_prior.pt')}`")
    if lp:
        out.append(f"- `weights/{lp['file']}` (`--prior fitted`): one N(mean, Ledoit-Wolf Σ) per property bin over "
                   f"{lp['maps']} codes of {lp.get('dim')} dimensions (per-dimension std {lp['mean_std']:.3f}); "
                   f"sha256 `{sha256(W / lp['file'])}`")
        if lp.get("site_counts"):
            hist = {n: c for n, c in enumerate(lp["site_counts"]) if c}
            out.append(f"- the same file records the training crystals per number of sites, {hist}: generation "
                       "(every prior) keeps decoded compositions to these numbers of sites")
        if lp.get("anonymous_formulas"):
            forms = ", ".join(f"({k}): {v}" for k, v in sorted(lp["anonymous_formulas"].items(), key=lambda kv: -kv[1]))
            out.append(f"- and per anonymous formula (per-element site counts), {forms}: generation reads each code "
                       "as the most probable composition of one of these formulas (weighted by its share), and "
                       "guidance prefers the commonest formulas that hold 95 % of the crystals")
        if lp.get("ionic_formulas"):
            forms = ", ".join(f"{k}: {v}" for k, v in sorted(lp["ionic_formulas"].items(), key=lambda kv: -kv[1]))
            out.append(f"- and per ionic formula (cation | anion site counts from pymatgen's most probable oxidation "
                       f"states, charge-balanced crystals only), {forms}: guidance prefers the commonest that hold "
                       "95 % of them")
    if lc:
        out.append(f"- `weights/{lc['file']}` (exact reading only): ridge regression (α {lc['alpha']:g}) from z_map and "
                   f"the condition to the cell lengths, MAE {lc['train_mae_A']:.4f} Å on its {lc['maps']} maps; sha256 "
                   f"`{sha256(W / lc['file'])}`")
    return out + [""]


def _baselines(sha256) -> list[str]:
    """iMatGen-style VAE and CCDCGAN-style GAN (the literature baselines of benchmarks/compare.py)."""
    out = []
    im = _load(W / "imatgen.json")
    if im is None:
        return ["## iMatGen-style VAE and CCDCGAN-style GAN", "", "not shipped yet", ""]
    secs = im.get("train_seconds", {})
    out += ["## iMatGen-style VAE (`weights/imatgen_{cell,basis,mvae}.weights.h5`)", "",
            f"- data: `{im['train_source']}` (first {im['n_train']} encodable crystals; rejected: "
            f"{im['rejected']['train']}), validation `{im['val_source']}` ({im['n_val']})",
            f"- command: `{im.get('command') or 'see data_prep/train_shipped_models.sh, step 4c'}`",
            f"- config: `{json.dumps(im['config'])}`",
            f"- classification head: {im['property']} below the training median ({im['median']:.4g})",
            f"- wall time: images {im.get('images_seconds', 0) / 60:.1f} min, "
            + ", ".join(f"{k.replace('_seconds', '')} {v / 60:.1f} min" for k, v in secs.items())
            + " (sharing 2 cores with other training runs)"]
    for part in ("cell", "basis", "mvae"):
        st = im.get("training", {}).get(part) or _load(ROOT / "runs" / "imatgen" / part / "state.json") or {}
        logs = st.get("last_logs", {})
        out.append(f"- {part}: {st.get('epochs_done', '?')} epochs, best validation loss "
                   f"{st.get('best', float('nan')):.4g}; last `{json.dumps({k: round(v, 4) for k, v in logs.items()})}`;"
                   f" sha256 `{sha256(W / f'imatgen_{part}.weights.h5')}`")
    gan = _load(W / "ccdcgan.json")
    if gan is not None:
        st = gan.get("state", {})
        out += ["", "## CCDCGAN-style latent GAN (`weights/ccdcgan_{generator,regressor}.weights.h5`)", "",
                f"- data: the iMatGen model's crystal codes of the same {im['n_train']} perov_5 training crystals",
                f"- command: `icsg train-ccdcgan --imatgen runs/imatgen --out runs/ccdcgan "
                f"--steps {gan['config']['steps']} --ship weights`",
                f"- config: `{json.dumps(gan['config'])}`",
                f"- property regressor ({gan['property']}, eV/atom) validation MAE "
                f"{st.get('regressor_val_mae', float('nan')):.4f}; GAN {st.get('step')} steps, "
                f"{st.get('seconds', 0) / 60:.1f} min",
                f"- sha256: generator `{sha256(W / 'ccdcgan_generator.weights.h5')}`, regressor "
                f"`{sha256(W / 'ccdcgan_regressor.weights.h5')}`"]
    return out + [""]


def _continued(meta: dict) -> str:
    """' (+ N min of the runs it continued: a, b)' for a warm-started model, else ''."""
    if not meta.get("warm_start_seconds"):
        return ""
    return (f" (+ {meta['warm_start_seconds'] / 60:.0f} min of the runs it continued: "
            f"{', '.join(meta.get('warm_start_chain') or [])})")


def _periodic(sha256) -> list[str]:
    """The any-lattice models of weights/mp: VAE, UNet, readout and the prior over their codes."""
    d = W / "mp"
    if not (d / "readout.json").exists():
        return []
    out = ["## Any-lattice models (`weights/mp/`, `--weights weights/mp`)", "",
           "Trained on `icsg prepare ../shared/data/mp_20_sample/all.csv.gz ../shared/data/mp_elastic_binaries/all.csv.gz "
           "../shared/data/mp_dielectric/all.csv.gz ../shared/data/wbm_sample/all.csv.gz --out runs/data/mp_periodic "
           "--encoding periodic --property formation_energy_per_atom --fill-property --val-fraction 0.1` (Niggli cells "
           "of up to 20 sites; the formation energy is DFT where the set has it and the shipped CGCNN's prediction "
           "elsewhere, marked in the dataset). Commands: `data_prep/train_periodic_models.sh`.", ""]
    for name, title in (("vae", "periodic Cond-DFC-VAE (map over the unit cell)"), ("unet", "periodic UNet"),
                        ("readout", "readout (z_read: counts, cell lengths and angles, and the site list, which the "
                                    "slot head reads back)")):
        meta = _load(d / f"{name}.json")
        if meta is None:
            continue
        tr = meta.get("training", {})
        secs = tr.get("epoch_seconds") or []
        cfg = {k: v for k, v in meta.get("config", {}).items() if k != "elements_Z"}
        logs = tr.get("last_logs") or {}
        out += [f"- {title}: `{meta.get('command')}`; config `{json.dumps(cfg)}`; {tr.get('epochs_done')} epochs, best "
                f"validation loss {tr.get('best', float('nan')):.4f} at epoch {tr.get('best_epoch')}, "
                f"{sum(secs) / 60:.0f} min{_continued(meta)}; last epoch "
                f"`{json.dumps({k: round(v, 4) for k, v in logs.items()})}`; sha256 `{sha256(d / f'{name}.weights.h5')}`"]
    if (d / "vae_prior.npz").exists():
        out.append(f"- `weights/mp/vae_prior.npz`: one Gaussian per formation-energy decile over the codes [z_map, z_read] "
                   f"of the training crystals (`icsg fit-latent-prior runs/data/mp_periodic --weights weights/mp`); "
                   f"sha256 `{sha256(d / 'vae_prior.npz')}`; it also records the training crystals' anonymous formulas, "
                   "which the guided reading of generated codes keeps to")
    flow = _load(d / "flow_prior.json")
    if flow:
        out.append(f"- `weights/mp/flow_prior.pt` (default prior of `icsg generate --weights weights/mp`): conditional "
                   f"flow matching over the z_read part of {flow.get('maps')} training codes (the periodic reading uses "
                   f"z_read alone; z_map is completed as its mean given z_read under the decile's Gaussian), same "
                   f"command with `--flow-steps {flow['config']['steps']}`; config `{json.dumps(flow['config'])}`, "
                   f"final loss {flow.get('final_loss', 0):.3f}, {flow.get('train_seconds', 0) / 60:.1f} min; "
                   f"sha256 `{sha256(d / 'flow_prior.pt')}`")
    return out + [""]


if __name__ == "__main__":
    sys.exit(main())
