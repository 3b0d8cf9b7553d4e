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

# 3. the readout (z_read: element counts, cell lengths and angles, slot positions) on the same crystals' site lists:
#    a first run stopped by hand at epoch 28, then every part continued from its best epoch with the slot loss that
#    keeps two slots of one element apart (icsg/models/readout.py, _chamfer). The shipped files' runs had no
#    separation term (run c), then weight 1 (run d), 4 (run e), 10 (run f); SLOT_SEPARATION_WEIGHT is 10 now, so
#    re-running these lines follows the recipe with the last weight throughout
icsg train-readout runs/data/mp_periodic --out runs/readout_mp_c --epochs 300 --steps-per-epoch 0 --batch 64 \
    --patience 30 --lr 2e-3 --latent 128 --hidden 512 --slot-weight 10 --position-weight 10 --cell-weight 10 --beta 0.03
icsg train-readout runs/data/mp_periodic --out runs/readout_mp_d --epochs 300 --steps-per-epoch 0 --batch 64 \
    --patience 20 --lr 1e-3 --latent 128 --hidden 512 --slot-weight 10 --position-weight 10 --cell-weight 10 --beta 0.03 \
    --init-weights runs/readout_mp_c/best.weights.h5
icsg ship-weights runs/readout_mp_d --name readout --to weights/mp
#    then the slot head alone (frozen encoder and heads: the codes and the prior do not change), twice: with the
#    separation term weighted 4, shipped, then 10 (SLOT_SEPARATION_WEIGHT now) at a lower learning rate
icsg train-readout runs/data/mp_periodic --out runs/readout_mp_e --epochs 40 --steps-per-epoch 0 --batch 64 \
    --patience 10 --lr 1e-3 --latent 128 --hidden 512 --slot-weight 10 --position-weight 10 --cell-weight 10 --beta 0.03 \
    --init-weights weights/mp/readout.weights.h5 --train-only slots
icsg ship-weights runs/readout_mp_e --name readout --to weights/mp
icsg train-readout runs/data/mp_periodic --out runs/readout_mp_f --epochs 25 --steps-per-epoch 0 --batch 64 \
    --patience 6 --lr 5e-4 --latent 128 --hidden 512 --slot-weight 10 --position-weight 10 --cell-weight 10 --beta 0.03 \
    --init-weights weights/mp/readout.weights.h5 --train-only slots

# 4. ship into weights/mp, fit the priors (per-decile Gaussians over whole codes [z_map, z_read], the flow over
#    z_read), measure, write the model card
icsg ship-weights runs/vae_mp --name vae --to weights/mp --recalibrate runs/data/mp_periodic
icsg ship-weights runs/unet_mp --name unet --to weights/mp --recalibrate runs/data/mp_periodic
icsg ship-weights runs/readout_mp_f --name readout --to weights/mp
icsg fit-latent-prior runs/data/mp_periodic --weights weights/mp --flow-steps 12000
python benchmarks/reconstruction_periodic.py --data runs/data/mp_periodic --vae weights/mp
python benchmarks/generation_periodic.py --weights weights/mp --data runs/data/mp_periodic
python benchmarks/generation_periodic.py --weights weights/mp --data runs/data/mp_periodic --unguided
python benchmarks/model_card.py
