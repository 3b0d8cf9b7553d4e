#!/usr/bin/env bash
# The any-lattice (periodic) models: data set and training commands. Run from the repository root with
# ../shared/data beside it; every step checkpoints into runs/ (git-ignored) and resumes with --resume.
set -euo pipefail
DATA=../shared/data

# 1. periodic maps (32³ over the Niggli-reduced unit cell) of the four Materials-Project-derived sets, cells up
#    to 20 sites, conditioned on formation-energy deciles: DFT where the set has it (mp_20_sample,
#    wbm_sample), the shipped CGCNN's prediction elsewhere (marked per crystal: prop_predicted); 10 % of
#    materials held out
icsg prepare "$DATA/mp_20_sample/all.csv.gz" "$DATA/mp_elastic_binaries/all.csv.gz" "$DATA/mp_dielectric/all.csv.gz" \
    "$DATA/wbm_sample/all.csv.gz" --out runs/data/mp_periodic --encoding periodic \
    --property formation_energy_per_atom --fill-property --val-fraction 0.1

# 2. UNet and VAE side by side, one thread each (circular padding follows from the dataset's manifest);
#    the first VAE has no perceptual term (no trained periodic UNet to take features from yet)
OMP_NUM_THREADS=1 icsg train-unet runs/data/mp_periodic --out runs/unet_mp --crop 0 --batch 4 \
    --steps-per-epoch 150 --lr 1e-3 --epochs 100 --patience 10 --val-limit 128 --occupancy-weight 3 &
OMP_NUM_THREADS=1 icsg train-vae runs/data/mp_periodic --out runs/vae_mp --beta 1e-5 --alpha 0 --density-asinh 10 \
    --batch 16 --steps-per-epoch 60 --lr 1e-3 --epochs 200 --patience 15 --val-limit 128 &
wait

# 3. held-out reconstruction
python benchmarks/reconstruction_periodic.py --data runs/data/mp_periodic --vae runs/vae_mp --unet runs/unet_mp
