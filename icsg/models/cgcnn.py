"""CGCNN property regressor (paper eqs. 8-10) in torch-geometric.

    v_i' = v_i + Σ_j σ(z_ij W_f + b_f) ⊙ g(z_ij W_s + b_s),  z_ij = v_i ⊕ v_j ⊕ u_ij   (eq. 9, CGConv)
    h = mean_i v_i^L                                                                     (eq. 10)
    ŷ = W_2 softplus(W_1 h + b_1) + b_2

Shapes: x (N_atoms, F_atom) -> Linear embedding (N, hidden) -> n_conv × CGConv ->
mean pool (B, hidden) -> (B, 1). The target is standardised ((y - mean) / std, after
log10 for moduli and dielectric constant); ``predict`` undoes both.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch_geometric.nn import CGConv, global_mean_pool


@dataclass(frozen=True)
class CGCNNConfig:
    n_atom_features: int
    n_edge_features: int
    hidden: int = 64
    fc_hidden: int = 128
    n_conv: int = 1

    def to_dict(self) -> dict:
        return asdict(self)


class CGCNN(nn.Module):
    def __init__(self, cfg: CGCNNConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Linear(cfg.n_atom_features, cfg.hidden)
        self.convs = nn.ModuleList(CGConv(cfg.hidden, dim=cfg.n_edge_features, batch_norm=True)
                                   for _ in range(cfg.n_conv))
        self.fc1 = nn.Linear(cfg.hidden, cfg.fc_hidden)
        self.fc2 = nn.Linear(cfg.fc_hidden, 1)
        self.act = nn.Softplus()

    def forward(self, data) -> torch.Tensor:
        v = self.embed(data.x)
        for conv in self.convs:
            v = self.act(conv(v, data.edge_index, data.edge_attr))
        batch = data.batch if getattr(data, "batch", None) is not None else torch.zeros(
            v.shape[0], dtype=torch.long, device=v.device)
        h = global_mean_pool(v, batch)
        return self.fc2(self.act(self.fc1(h))).squeeze(-1)

    def feature_extractor_state(self) -> dict:
        """The layers shared in transfer learning: embedding and graph convolutions."""
        return {k: v for k, v in self.state_dict().items() if k.startswith(("embed.", "convs."))}
