"""Configuration dataclasses of the model architectures whose options the command line shows.

Kept apart from the architectures so that ``icsg CMD --help`` reads the defaults without importing keras.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class UNetConfig:
    n_classes: int
    grid_size: int = 32
    base_filters: int = 12
    depth: int = 3
    log_eps: float = 1e-3
    periodic: bool = False  # circular padding (maps over a unit cell, icsg.representation.periodic)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ImatgenModelConfig:
    """CPU-sized defaults (paper: cell 32^3, basis 64^3 over 15 Å, latents 200 / 500).

    The basis box of 8 Å at 32^3 (0.25 Å voxels) holds perov_5 cells (a <= 5.6 Å) with
    the 1 Å margin; larger cells need a larger ``box_A``.
    """

    cell_size: int = 16
    basis_size: int = 32
    box_A: float = 8.0
    cell_latent: int = 8
    basis_latent: int = 32
    filters: tuple = (8, 16, 32)
    n_slots: int = 5
    hidden: int = 256
    latent_dim: int = 32
    beta: float = 1e-4  # measured on 100 perov_5 val: β 1e-2 match 0.01 (species lost), 1e-4 match 0.55
    gamma: float = 0.1

    @property
    def spec(self):
        """The ``icsg.representation.imatgen.ImatgenSpec`` of these image sizes."""
        from icsg.representation.imatgen import ImatgenSpec

        return ImatgenSpec(cell_size=self.cell_size, basis_size=self.basis_size, box_A=self.box_A)

    @property
    def slot_dim(self) -> int:
        return self.basis_latent + 4  # basis code, (Z, χ, r) standardised, present flag

    @property
    def code_dim(self) -> int:
        return self.cell_latent + self.n_slots * self.slot_dim

    def to_dict(self) -> dict:
        d = asdict(self)
        d["filters"] = list(self.filters)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ImatgenModelConfig":
        d = {k: v for k, v in dict(d).items() if k in cls.__dataclass_fields__}
        if "filters" in d:
            d["filters"] = tuple(d["filters"])
        return cls(**d)


@dataclass(frozen=True)
class CCDCGANConfig:
    code_dim: int = 188
    noise_dim: int = 32
    hidden: int = 256
    omega: float = 0.1
    lr: float = 2e-4
    batch_size: int = 64
    steps: int = 4000
    regressor_epochs: int = 60

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "CCDCGANConfig":
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})
