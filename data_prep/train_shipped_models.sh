#!/usr/bin/env bash
# The commands that produced weights/ (see weights/MODEL_CARD.md). Run from the repository root with
# ../shared/data beside it. Each step checkpoints into runs/ (git-ignored); rerun a step with --resume
# after an interruption, or warm-start from the shipped weights with --init-weights.
set -euo pipefail
DATA=../shared/data

# 1. voxel dataset of the perov_5 training split, conditioned on heat_ref deciles (5 % of materials held out)
icsg prepare "$DATA/perov_5/train.csv.gz" --out runs/data/perov5_train --property heat_ref --val-fraction 0.05

# 2. UNet on random 16^3 windows (long: run in the background; early stopping ends it)
icsg train-unet runs/data/perov5_train --out runs/unet16 --epochs 200 --batch 16 --crop 16 \
    --steps-per-epoch 300 --val-limit 128 --patience 15 --lr 2e-3

# 3. Cond-DFC-VAE with the UNet's encoder features as the perceptual loss
icsg train-vae runs/data/perov5_train --unet runs/unet16 --out runs/vae --epochs 100 --batch 8 \
    --steps-per-epoch 150 --val-limit 64 --patience 20 --lr 1e-3 --alpha 0.1

# 4. CGCNN property models (formation energy first; the others scratch vs fine-tuned, better one shipped)
icsg train-cgcnn --property all --out runs/cgcnn --ship weights --epochs 30 --patience 10

# 5. ship the Keras models and write the model card
icsg ship-weights runs/unet16 --name unet
icsg ship-weights runs/vae --name vae
python benchmarks/model_card.py
