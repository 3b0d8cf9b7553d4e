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

# 3. the readout (z_read: element counts, cell lengths and angles, and the site list by a linear path that the slot
#    head reads back; --latent defaults to 32 + 86 elements + 6 x 20 sites = 238), then continued from its best
#    epoch at a lower learning rate (the count accuracy swings from epoch to epoch at 1e-3); shipping the first run
#    before the second lets the model card count both runs' time
icsg train-readout runs/data/mp_periodic --out runs/readout_mp_sites --epochs 60 --steps-per-epoch 0 --batch 64 \
    --patience 10 --lr 1e-3 --hidden 512 --slot-weight 10 --position-weight 10 --cell-weight 10 --beta 0.03
icsg ship-weights runs/readout_mp_sites --name readout --to weights/mp
icsg train-readout runs/data/mp_periodic --out runs/readout_mp_sites2 --epochs 20 --steps-per-epoch 0 --batch 64 \
    --patience 6 --lr 3e-4 --hidden 512 --slot-weight 10 --position-weight 10 --cell-weight 10 --beta 0.03 \
    --init-weights runs/readout_mp_sites/best.weights.h5

# 4. ship into weights/mp, fit the priors (per-decile Gaussians over whole codes [z_map, z_read], the flow over
#    z_read), measure, write the model card
icsg ship-weights runs/vae_mp --name vae --to weights/mp --recalibrate runs/data/mp_periodic
icsg ship-weights runs/unet_mp --name unet --to weights/mp --recalibrate runs/data/mp_periodic
icsg ship-weights runs/readout_mp_sites2 --name readout --to weights/mp
icsg fit-latent-prior runs/data/mp_periodic --weights weights/mp --flow-steps 12000
python benchmarks/reconstruction_periodic.py --data runs/data/mp_periodic --vae weights/mp
python benchmarks/generation_periodic.py --weights weights/mp --data runs/data/mp_periodic
python benchmarks/generation_periodic.py --weights weights/mp --data runs/data/mp_periodic --unguided
python benchmarks/generation_periodic.py --weights weights/mp --data runs/data/mp_periodic --real 1000
python benchmarks/model_card.py
