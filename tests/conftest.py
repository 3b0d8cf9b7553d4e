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
