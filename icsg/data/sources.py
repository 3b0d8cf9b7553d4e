"""Where crystals come from: CSV files with a ``cif`` column, CIF folders, the Materials Project.

Readers never raise on a bad item: they yield a ``Record`` whose ``error`` names the
item (file, or file:row id) and the reason, so batch jobs can count and skip it. A
source that cannot be read at all (missing file, no ``cif`` column) raises
``SourceError`` naming the file.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
from pymatgen.core import DummySpecies, Structure

from icsg.errors import CrystalError, SourceError


@dataclass
class Record:
    """One crystal from a source: its id, parsed structure (or the error), and properties."""

    id: str
    structure: Structure | None
    properties: dict = field(default_factory=dict)
    error: CrystalError | None = None


def parse_cif(text: str, item: str) -> Structure:
    """CIF text -> Structure, or CrystalError(item, 'malformed_cif'|'empty', why)."""
    if not isinstance(text, str) or not text.strip():
        raise CrystalError(item, "empty", "no CIF text")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            s = Structure.from_str(text, fmt="cif")
        except Exception as exc:  # pymatgen raises ValueError/KeyError/IndexError on bad CIFs
            why = str(exc).strip() or type(exc).__name__
            msgs = "; ".join(sorted({str(w.message).split("\n")[0] for w in caught}))
            raise CrystalError(item, "malformed_cif", why + (f"; {msgs}" if msgs else "")) from None
    if len(s) == 0:
        raise CrystalError(item, "empty", "CIF has no atom sites")
    unknown = sorted({str(sp) for sp in s.composition.elements if isinstance(sp, DummySpecies)})
    if unknown:  # pymatgen reads an unknown symbol as a DummySpecies
        raise CrystalError(item, "unknown_element", f"not chemical elements: {', '.join(unknown)}")
    return s


_ID_COLUMNS = ("material_id", "id", "mp_id", "name")


def iter_csv(path: str | os.PathLike, id_column: str | None = None, cif_column: str = "cif") -> Iterator[Record]:
    """Rows of a CSV (gzip allowed) with a CIF column; other numeric columns become properties."""
    path = Path(path)
    if not path.exists():
        raise SourceError(f"{path}: no such file")
    try:
        df = pd.read_csv(path)
    except Exception as exc:
        raise SourceError(f"{path}: not a readable CSV ({exc})") from None
    if cif_column not in df.columns:
        raise SourceError(f"{path}: no '{cif_column}' column (columns: {', '.join(map(str, df.columns))})")
    id_col = id_column or next((c for c in _ID_COLUMNS if c in df.columns), None)
    prop_cols = [c for c in df.columns if c not in (cif_column, id_col) and pd.api.types.is_numeric_dtype(df[c])]
    for i, row in enumerate(df.to_dict("records")):
        rid = str(row[id_col]) if id_col else f"{path.name}:{i}"
        props = {c: float(row[c]) for c in prop_cols}
        try:
            yield Record(rid, parse_cif(row[cif_column], f"{path.name}:{rid}"), props)
        except CrystalError as err:
            yield Record(rid, None, props, err)


def iter_cif_dir(path: str | os.PathLike) -> Iterator[Record]:
    """Every ``*.cif`` file in a folder (sorted), id = file stem."""
    path = Path(path)
    files = sorted(path.glob("*.cif"))
    if not files:
        raise SourceError(f"{path}: folder has no .cif files")
    for f in files:
        yield read_cif_file(f)


def read_cif_file(path: str | os.PathLike) -> Record:
    path = Path(path)
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return Record(path.stem, None, {}, CrystalError(str(path), "unreadable", str(exc)))
    try:
        return Record(path.stem, parse_cif(text, str(path)))
    except CrystalError as err:
        return Record(path.stem, None, {}, err)


# --- Materials Project ----------------------------------------------------------------
# The paper's three classes, as anonymised formulas (MP orders letters by amount).
MP_CLASSES = {
    "binary": {"formula": "AB", "crystal_system": "Cubic"},
    "perovskite": {"formula": "ABC3", "crystal_system": "Cubic"},
    "heusler": {"formula": "ABC2", "crystal_system": "Cubic"},
}
MP_FIELDS = [
    "material_id", "structure", "formation_energy_per_atom", "energy_per_atom", "band_gap",
    "k_vrh", "g_vrh", "e_total", "e_electronic", "n", "energy_above_hull",
]


def build_mp_query(kind: str, max_sites: int = 40, fields: list[str] | None = None) -> dict:
    """Keyword arguments for ``MPRester().materials.summary.search`` for one class."""
    if kind not in MP_CLASSES:
        raise SourceError(f"unknown Materials Project class '{kind}' (choose from {', '.join(MP_CLASSES)})")
    q = dict(MP_CLASSES[kind])
    q["num_sites"] = (1, int(max_sites))
    q["fields"] = list(fields or MP_FIELDS)
    return q


def iter_materials_project(kind: str, api_key: str | None = None, limit: int | None = None,
                           max_sites: int = 40) -> Iterator[Record]:
    """Query the Materials Project (needs ``pip install icsg[mp]`` and MP_API_KEY)."""
    key = api_key or os.environ.get("MP_API_KEY")
    if not key:
        raise SourceError("mp:%s: set MP_API_KEY (your Materials Project API key) to query the Materials Project" % kind)
    try:
        from mp_api.client import MPRester
    except ImportError:
        raise SourceError("mp:%s: the mp-api package is missing; pip install 'icsg[mp]'" % kind) from None
    query = build_mp_query(kind, max_sites)
    with MPRester(key) as mpr:
        docs = mpr.materials.summary.search(**query)
    for i, doc in enumerate(docs):
        if limit is not None and i >= limit:
            break
        d = doc if isinstance(doc, dict) else doc.model_dump()
        props = {k: float(v) for k, v in d.items()
                 if k not in ("material_id", "structure") and isinstance(v, (int, float)) and v is not None}
        s = d.get("structure")
        if isinstance(s, dict):
            s = Structure.from_dict(s)
        rid = str(d.get("material_id"))
        err = None if s is not None else CrystalError(rid, "empty", "no structure returned")
        yield Record(rid, s, props, err)


def iter_source(source: str, limit: int | None = None) -> Iterator[Record]:
    """Dispatch on what ``source`` is: ``mp:CLASS``, a folder of CIFs, a CIF, or a CSV."""
    it: Iterator[Record]
    if source.startswith("mp:"):
        it = iter_materials_project(source[3:], limit=limit)
    else:
        p = Path(source)
        if p.is_dir():
            it = iter_cif_dir(p)
        elif p.suffix.lower() == ".cif":
            if not p.exists():
                raise SourceError(f"{p}: no such file")
            it = iter([read_cif_file(p)])
        elif p.name.lower().endswith((".csv", ".csv.gz")):
            it = iter_csv(p)
        elif not p.exists():
            raise SourceError(f"{p}: no such file or folder")
        else:
            raise SourceError(f"{p}: not a CSV (.csv, .csv.gz), a .cif file or a folder of CIFs")
    for i, rec in enumerate(it):
        if limit is not None and i >= limit:
            return
        yield rec


def property_array(records: list[Record], name: str) -> np.ndarray:
    return np.array([r.properties.get(name, np.nan) for r in records], dtype=float)
