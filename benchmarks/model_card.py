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
    lines += ["## How the Keras models were trained (2 shared CPU cores)", "",
              "1. `icsg prepare ../shared/data/perov_5/train.csv.gz --out runs/data/perov5_train --property heat_ref "
              "--val-fraction 0.05` (11,356 crystals, 0 rejected).",
              "2. UNet: `icsg train-unet runs/data/perov5_train --out runs/unet16 --epochs 200 --batch 16 --crop 16 "
              "--steps-per-epoch 300 --val-limit 128 --patience 15 --lr 2e-3`, stopped by hand when the session's "
              "time ran out (not converged).",
              "3. VAE: a first run with the paper's α = 1 (`--unet runs/unet_for_vae`, a copy of the UNet after its "
              "first epoch) for one 200-step epoch; its DFC term (~18) swamped the pixel MSE (~0.2), so training "
              "continued from those weights with α = 0.1: `icsg train-vae runs/data/perov5_train --unet "
              "runs/unet_for_vae --out runs/vae --epochs 100 --batch 8 --steps-per-epoch 150 --val-limit 64 "
              "--patience 20 --lr 1e-3 --alpha 0.1 --init-weights runs/vae_epoch1.weights.h5`, stopped by hand "
              "(not converged).",
              "4. `icsg ship-weights RUN --name unet|vae --recalibrate runs/data/perov5_train` (BatchNorm statistics "
              "recomputed; see icsg/models/batchnorm.py).",
              "5. Second session: the UNet continued from the shipped weights with the occupancy loss weighted 3× "
              "(the occupancy mask places the sites now that species come from the density fit): `icsg train-unet "
              "runs/data/perov5_train --out runs/unet2 --crop 16 --batch 16 --steps-per-epoch 200 --lr 1e-3 "
              "--init-weights weights/unet.weights.h5 --occupancy-weight 3 --epochs 100 --patience 10 "
              "--val-limit 128`. The VAE continued with β = 1e-5 (at β = 5e-4 the KL term collapsed the posterior "
              "to ~4 nats in a 150-step test, too little to carry three species), first as `runs/vae2` "
              "(`--alpha 0.1 --beta 1e-5 --init-weights weights/vae.weights.h5 --batch 16 --steps-per-epoch 100`, "
              "5 epochs), then with the coordinate channels weighted 20× in the MSE (`--coord-weight 20`, the cell "
              "length was 0.4 Å off) as `runs/vae3` from runs/vae2's last epoch. Both stopped by hand at the "
              "session's end (not converged); shipped with step 4. `--unet weights` in these runs was the session-1 "
              "UNet (the perceptual features), not the UNet shipped now.",
              "6. Third session: `python benchmarks/vae_settings.py` showed that the coordinate weight 20 of step 5 "
              "kept the decoded density at the level of the mean map (every crystal answered with the average map), "
              "so the VAE continued from runs/vae3's best epoch with the paper's weight 1 and learning rate 1e-3 "
              "as `runs/vae5` (`--unet weights` = the session-2 UNet shipped now; 4 epochs of 100 steps: the "
              "density still at the mean-map level, the DFC term at α = 0.1 being ~4x the pixel error), then "
              "from runs/vae5's last epoch with α = 0.01 (`python benchmarks/ablation.py`: α = 0.1 left the "
              "pixel error 4-5x higher at equal steps): `icsg train-vae runs/data/perov5_train --out runs/vae6 --unet "
              "weights --init-weights runs/vae5_last.weights.h5 --alpha 0.01 --beta 1e-5 --coord-weight 1 --batch "
              "16 --lr 1e-3 --steps-per-epoch 100 --epochs 60 --patience 10 --val-limit 128`, stopped by hand at "
              "the session's end (not converged); shipped with step 4. The UNet was not trained further.",
              "7. Fourth session: the decoded maps left out the light anions (with the true occupancy mask, species "
              "read from the session-3 decoded maps were right for 10 % of sites): an O peak is ~2 % of a heavy "
              "cation's, so it hardly counts in a plain MSE. The VAE continued from the session-3 weights with the "
              "density error taken between asinh(10·M) and asinh(10·M'): `icsg train-vae runs/data/perov5_train "
              "--out runs/vae7 --unet weights --init-weights weights/vae.weights.h5 --alpha 0.01 --beta 1e-5 "
              "--coord-weight 1 --density-asinh 10 --batch 16 --lr 5e-4 --steps-per-epoch 100 --epochs 60 "
              "--patience 10 --val-limit 128`, interrupted by the end of the fourth session after 14 epochs, continued "
              "in the fifth with the same command plus `--resume` and stopped by hand (not converged); shipped "
              "with step 4 (27 epochs, best 27). Two UNet continuations were measured and dropped, so the shipped UNet "
              "is unchanged: on true maps (lr 5e-4, 2 epochs: validation loss 1.54 and 1.61 against 1.32), and on "
              "the VAE's decoded maps plus the true ones (`icsg decode-dataset runs/data/perov5_train --vae "
              "weights --out runs/data/perov5_decoded`, then `icsg train-unet runs/data/perov5_decoded --out "
              "runs/unet4 --crop 16 --batch 16 --steps-per-epoch 200 --lr 5e-4 --init-weights "
              "weights/unet.weights.h5 --occupancy-weight 3 --epochs 100 --patience 10 --val-limit 128`, 16 "
              "epochs; measured with `icsg ship-weights runs/unet4 --name unet --to W --recalibrate "
              "runs/data/perov5_decoded` into a copy W of weights/, then `icsg reconstruct "
              "../shared/data/perov_5/val.csv.gz --limit 128 --weights W`, segmentation only: `--no-refine` since "
              "session 7): on 128 perov_5 validation crystals its "
              "decoded-map reconstruction was no better (species "
              "0.33 vs 0.37, abs dn 1.13 vs 0.95, site EMD 0.348 vs 0.344 Å) and its true-map match fell from "
              "0.69 to 0.61.",
              "8. Sixth session: runs/vae7 continued with the same command plus `--resume` (37 epochs in all, best "
              "34) and shipped with step 4. The latent prior of random generation was then fitted with `icsg "
              "fit-latent-prior runs/data/perov5_train`: the posterior means of 8,192 training maps, one "
              "N(mean, Ledoit-Wolf Σ) per property bin, in `weights/vae_prior.npz` (step 4 with `--recalibrate` now "
              "does this too). The UNet fine-tuned on decoded maps (runs/unet4, step 7) was measured again with "
              "the new species reading, which uses the UNet's class probabilities (same commands as in step 7): "
              "on 128 validation crystals species 0.543 vs 0.562 for the shipped UNet, site EMD 0.240 vs 0.225 Å, "
              "abs dn 0.87 vs 0.79, true-map match 0.61 vs 0.69; the UNet stays unchanged.",
              "9. Eighth session: the cell readout of decoding, a ridge regression from the posterior mean and the "
              "one-hot condition to the cell lengths (`icsg.generation.latent_cell`, α by leave-one-out), fitted "
              "with the same command, `icsg fit-latent-prior runs/data/perov5_train`, on the same 8,192 codes "
              "(which rewrote `weights/vae_prior.npz` byte for byte) and written to `weights/vae_cell.npz`.",
              "10. Twelfth session: the session-6 VAE continued at learning rate 3e-4 for 13 epochs (a first try in "
              "session 11, stopped by hand, was still improving at epoch 13): `icsg train-vae runs/data/perov5_train "
              "--out runs/vae8 --unet weights --init-weights weights/vae.weights.h5 --alpha 0.01 --beta 1e-5 "
              "--coord-weight 1 --density-asinh 10 --batch 16 --lr 3e-4 --steps-per-epoch 100 --epochs 13 "
              "--patience 10 --val-limit 128` (best validation loss 0.0054 at epoch 13, against 0.0066 for the "
              "session-6 VAE), shipped with step 4, which also refitted `weights/vae_prior.npz` and "
              "`weights/vae_cell.npz`. Reconstruction with the session-6 VAE stays on record in "
              "benchmarks/RESULTS.md (reconstruction_vae7).",
              "11. Thirteenth session: the session-2 UNet continued on whole 32^3 maps instead of 16^3 windows (a "
              "window of 3 Å holds about one atom, so the network had learnt species with little context, and with "
              "BatchNorm statistics of windows): `icsg train-unet runs/data/perov5_train --out runs/unet13 --crop 0 "
              "--batch 4 --steps-per-epoch 300 --lr 3e-4 --init-weights weights/unet.weights.h5 --occupancy-weight 3 "
              "--epochs 100 --patience 8 --val-limit 128` for 30 epochs (stopped by hand, validation loss 1.06 -> "
              "0.52, still falling), then the same run resumed at learning rate 1e-4 (`--resume --lr 1e-4 --epochs "
              "40`) for 10 epochs: best validation loss 0.465 at epoch 34, against 1.322 for the session-2 UNet. "
              "Shipped with step 4 (BatchNorm statistics of 256 whole training maps). On the first 200 perov_5 "
              "validation crystals its non-zero recall on the true maps is 0.915 without rotation averaging "
              "(session-2 UNet: 0.755, and 0.826 averaged over 4 rotations), 0.931 averaged over 4 rotations as the "
              "pipeline runs it (`python benchmarks/reconstruction.py --limit 200`, where the UNet + segmentation "
              "on the true maps match 94.5 % of crystals, 74.5 % with the session-2 UNet). The perceptual features "
              "of steps 6, 7 and 10 (`--unet weights`) were the session-2 UNet's, not this one's; the session-2 "
              "UNet's reconstruction stays on record in benchmarks/RESULTS.md (reconstruction_unet2).",
              "12. Fourteenth session: the session-12 VAE continued with its perceptual features taken from the "
              "session-13 UNet (`--unet weights`): `icsg train-vae runs/data/perov5_train --out runs/vae9 --unet "
              "weights --init-weights weights/vae.weights.h5 --alpha 0.01 --beta 1e-5 --coord-weight 1 "
              "--density-asinh 10 --batch 16 --lr 3e-4 --steps-per-epoch 100 --epochs 40 --patience 10 "
              "--val-limit 128` for 26 epochs (stopped by hand, validation loss 0.0053 -> 0.0041, still falling), "
              "then the same run resumed at learning rate 1e-4 (`--resume --lr 1e-4`) for 12 epochs, stopped by "
              "hand: best validation loss 0.0037 at epoch 38. Its plain 4-channel MSE on the validation maps fell "
              "from 0.0011 (the session-12 VAE's last epoch) to 0.00077; the totals do not compare, because the "
              "session-12 VAE's 0.0054 was measured with the session-2 UNet's features. Shipped with step 4, which "
              "also refitted `weights/vae_prior.npz` and `weights/vae_cell.npz`. The session-12 VAE's reconstruction stays on record in "
              "benchmarks/RESULTS.md (reconstruction_vae8).",
              "13. Fifteenth session: the same run resumed once more at learning rate 1e-4 (`icsg train-vae "
              "runs/data/perov5_train --out runs/vae9 --unet weights --alpha 0.01 --beta 1e-5 --coord-weight 1 "
              "--density-asinh 10 --batch 16 --lr 1e-4 --steps-per-epoch 100 --epochs 80 --patience 10 --val-limit "
              "128 --resume`) for 10 epochs, stopped by hand while still improving: best validation loss 0.0036 at "
              "epoch 48 (0.0037 at epoch 38), plain 4-channel validation MSE 0.00077 -> 0.00070. Those 10 epochs "
              "took 1.03 h of wall time, about 20 min of it with the run paused (SIGSTOP) for a dev script and "
              "most of the rest sharing the cores with one. Shipped with step 4 (cell readout validation MAE "
              "0.014 -> 0.013 Å). On the first 200 perov_5 validation crystals without the restart from the "
              "segmentation (column *no restart* of `python benchmarks/reconstruction.py --limit 200`) it matches "
              "48.5 % as the epoch-38 VAE did, site EMD 0.085 Å (0.090), |Δn| 0.245 (0.235), species 0.853 "
              "(0.844). The epoch-38 VAE's reconstruction stays on record in benchmarks/RESULTS.md "
              "(reconstruction_vae9).",
              "14. Sixteenth session: the same run resumed again with the same command (session 15 ended at epoch "
              "50; `--resume` continued from there), stopped by hand after epoch 69: best validation loss 0.0034 at "
              "epoch 69 (0.0036 at epoch 48; in between it wandered from 0.0035 to 0.0039 on the 128 validation "
              "crystals), plain 4-channel validation MSE 0.00070 -> 0.00064. Epochs 49-69 took 1.39 h of wall "
              "time, much of it sharing the cores with dev scripts. Shipped with step 4 (cell readout validation "
              "MAE 0.013 Å). On the first 200 perov_5 validation crystals (`python benchmarks/reconstruction.py "
              "--limit 200`): match 52.0 % (50.5 % with the epoch-48 VAE), 50.0 % for the first reading alone "
              "(48.5 %), site EMD 0.078 Å (0.079), |Δn| 0.175 (0.190), species 0.872 (0.858), cell MAE 0.014 Å. "
              "The epoch-48 VAE's reconstruction stays on record in benchmarks/RESULTS.md "
              "(reconstruction_session15). Those numbers predate the exact fit of session 17 (the same command "
              "with `--exact-fit-steps 0`, record reconstruction_session16); with it, the same command on these "
              "weights: match 59.0 %, site EMD 0.059 Å, |Δn| 0.180, species 0.893, cell MAE 0.0075 Å "
              "(record reconstruction_session17), and with the refit's width 2, rounds and site candidates of "
              "session 18: match 86.0 %, site EMD 0.034 Å, |Δn| 0.085, species 0.951, cell MAE 0.0040 Å "
              "(record reconstruction_session18), and with the refit's width 3, 5 rounds and 6 fits of session "
              "19: match 91.5 %, site EMD 0.023 Å, |Δn| 0.065, species 0.969, cell MAE 0.0026 Å "
              "(record reconstruction).",
              "Continue either model on any machine with `--init-weights weights/NAME.weights.h5`.", ""]
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
                  f"- sha256: `{sha256(W / f'{name}.weights.h5')}`",
                  (f"- latent prior (random generation): `weights/{meta['latent_prior']['file']}`, fitted to the "
                   f"posterior means of {meta['latent_prior']['maps']} maps of `{meta['latent_prior']['data']}` "
                   f"(per-dimension std {meta['latent_prior']['mean_std']:.3f}), sha256 "
                   f"`{sha256(W / meta['latent_prior']['file'])}`") if name == "vae" and meta.get("latent_prior")
                  else None,
                  (f"- cell readout (decoding): `weights/{meta['latent_cell']['file']}`, ridge regression (α "
                   f"{meta['latent_cell']['alpha']:g}) from the posterior means of {meta['latent_cell']['maps']} maps "
                   f"of `{meta['latent_cell']['data']}`; cell MAE {meta['latent_cell']['train_mae_A']:.3f} Å on "
                   f"those maps, {meta['latent_cell']['val_mae_A']:.3f} Å on the {meta['latent_cell']['val_maps']} "
                   f"maps of its validation split; sha256 `{sha256(W / meta['latent_cell']['file'])}`")
                  if name == "vae" and meta.get("latent_cell") else None, ""]
    lines += ["## CGCNN property models (`weights/cgcnn_*.pt`)", "",
              "Commands: `icsg train-cgcnn --property all --out runs/cgcnn --ship weights` (defaults: 100 epochs, "
              "patience 15) trained formation energy and energy per atom; it was restarted with `--epochs 30 "
              "--patience 10 --resume` for the rest to fit the session. Formation energy, energy per atom and "
              "heat_ref from scratch; the elastic and dielectric properties trained both from scratch and fine-tuned "
              "from the formation-energy model, the lower validation MAE shipped (scratch won every time). Band gap "
              "(17k crystals, mostly zero) was retrained in the second session with an L1 loss, from scratch and "
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
    lines = [ln for ln in lines if ln is not None]  # optional lines that do not apply
    (W / "MODEL_CARD.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


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


if __name__ == "__main__":
    sys.exit(main())
