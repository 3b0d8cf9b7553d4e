"""Training: the shared checkpointing loop, the map models (UNet, VAE, readout), the CGCNNs and the baselines."""
