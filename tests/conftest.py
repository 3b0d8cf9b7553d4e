import os
from pathlib import Path

import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    if not (SHARED_DATA / "perov_5" / "val.csv.gz").exists():
        pytest.skip(f"shared data not found at {SHARED_DATA} (clone the project beside ../shared)")
    return SHARED_DATA


@pytest.fixture
def perovskite():
    """Cubic SrTiO3, a = 3.905 Å, Sr at the corner, Ti at the centre, O on the faces."""
    from pymatgen.core import Lattice, Structure

    return Structure(Lattice.cubic(3.905), ["Sr", "Ti", "O", "O", "O"],
                     [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])


@pytest.fixture
def rocksalt():
    """Conventional NaCl, 8 sites, a = 5.64 Å."""
    from pymatgen.core import Structure

    return Structure.from_spacegroup("Fm-3m", [[5.64, 0, 0], [0, 5.64, 0], [0, 0, 5.64]], ["Na", "Cl"],
                                     [[0, 0, 0], [0.5, 0.5, 0.5]])


@pytest.fixture
def tiny_dataset(tmp_path, perovskite, rocksalt):
    """make(n, nan_at=None, shard_size=None) -> a prepared 16^3 dataset of n alternating, slightly strained
    rock-salt and perovskite cells with property 'e' = index (NaN at ``nan_at``), 30 % validation."""
    import pandas as pd

    from icsg.data.dataset import PrepareConfig, prepare
    from icsg.data.sources import iter_source
    from icsg.grid import GridSpec

    def make(n: int, nan_at: int | None = None, shard_size: int | None = None, name: str = "ds"):
        rows = []
        for i in range(n):
            s = (perovskite if i % 2 else rocksalt).copy()
            s.scale_lattice(s.volume * (1 + 0.02 * i))
            e = float(i) if i != nan_at else float("nan")
            rows.append({"material_id": f"m{i}", "cif": s.to(fmt="cif"), "e": e})
        csv = tmp_path / f"{name}.csv"
        pd.DataFrame(rows).to_csv(csv, index=False)
        cfg = PrepareConfig(property="e", val_fraction=0.3, **({"shard_size": shard_size} if shard_size else {}))
        prepare(list(iter_source(str(csv))), tmp_path / name, GridSpec(size=16), cfg=cfg, workers=1, progress=False)
        return tmp_path / name

    return make
