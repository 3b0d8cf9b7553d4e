
import numpy as np
import pandas as pd
import pytest
from pymatgen.core import Lattice, Structure

from icsg.data.dataset import (PrepareConfig, VoxelDataset, load_arrays, prepare, property_bin,
                               property_bin_edges, split_of)
from icsg.data.filters import standardise
from icsg.data.sources import build_mp_query, iter_csv, iter_source, parse_cif
from icsg.errors import CrystalError, SourceError

BAD_CIF = "data_broken\n_cell_length_a 4.0\nloop_\n_atom_site_label\n_atom_site_fract_x\nNa 0.1 0.2\n"


def _csv(tmp_path, structures, name="set.csv", extra=None):
    rows = []
    for i, s in enumerate(structures):
        cif = s if isinstance(s, str) else s.to(fmt="cif")
        rows.append({"material_id": f"x{i}", "cif": cif, "prop": float(i), "spacegroup.number": 221} | (extra or {}))
    path = tmp_path / name
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_parse_cif_errors_name_item():
    with pytest.raises(CrystalError) as e:
        parse_cif(BAD_CIF, "broken.cif")
    assert e.value.reason == "malformed_cif" and "broken.cif" in str(e.value)
    with pytest.raises(CrystalError) as e:
        parse_cif("   ", "blank.cif")
    assert e.value.reason == "empty"


def test_unknown_element_is_named(perovskite):
    cif = perovskite.to(fmt="cif").replace("Sr", "Xx")
    with pytest.raises(CrystalError) as e:
        parse_cif(cif, "alien.cif")
    assert e.value.reason == "unknown_element" and "alien.cif" in str(e.value) and "Xx" in str(e.value)


def test_csv_missing_cif_column(tmp_path):
    p = tmp_path / "nocif.csv"
    pd.DataFrame({"material_id": ["a"], "structure": ["x"]}).to_csv(p, index=False)
    with pytest.raises(SourceError, match="nocif.csv: no 'cif' column"):
        list(iter_csv(p))
    with pytest.raises(SourceError, match="no such file"):
        list(iter_source(str(tmp_path / "missing.csv")))


def test_csv_bad_rows_are_records_not_crashes(tmp_path, perovskite):
    p = _csv(tmp_path, [perovskite, BAD_CIF, ""])
    recs = list(iter_csv(p))
    assert [r.error is None for r in recs] == [True, False, False]
    assert recs[1].error.reason == "malformed_cif" and "x1" in recs[1].error.item
    assert recs[0].properties["prop"] == 0.0


def test_cif_folder_and_empty_file(tmp_path, perovskite):
    (tmp_path / "good.cif").write_text(perovskite.to(fmt="cif"))
    (tmp_path / "empty.cif").write_text("")
    recs = {r.id: r for r in iter_source(str(tmp_path))}
    assert recs["good"].error is None
    assert recs["empty"].error.reason == "empty" and "empty.cif" in recs["empty"].error.item
    with pytest.raises(SourceError, match="no .cif files"):
        list(iter_source(str(tmp_path / "sub"))) if (tmp_path / "sub").mkdir() is None else None


def test_filters_each_reason(perovskite):
    with pytest.raises(CrystalError, match="non_cubic"):
        standardise(Structure(Lattice.tetragonal(3.0, 5.0), ["Mg"], [[0, 0, 0]]), "tet")
    with pytest.raises(CrystalError, match="disordered"):
        standardise(Structure(Lattice.cubic(4.0), [{"Na": 0.5, "K": 0.5}], [[0, 0, 0]]), "dis")
    big = perovskite.copy()
    big.make_supercell([3, 3, 3])  # 135 sites
    with pytest.raises(CrystalError, match="too_many_atoms"):
        standardise(big, "big")
    with pytest.raises(CrystalError, match="no_radius"):
        standardise(Structure(Lattice.cubic(5.0), ["Ar"], [[0, 0, 0]]), "argon")


def test_primitive_fcc_becomes_conventional():
    prim = Structure(Lattice.from_parameters(3.99, 3.99, 3.99, 60, 60, 60), ["Na", "Cl"],
                     [[0, 0, 0], [0.5, 0.5, 0.5]])
    conv = standardise(prim, "nacl")
    assert np.allclose(conv.lattice.angles, 90) and len(conv) == 8


def test_mp_query_builder_offline():
    q = build_mp_query("perovskite")
    assert q["formula"] == "ABC3" and q["crystal_system"] == "Cubic" and q["num_sites"] == (1, 40)
    assert "structure" in q["fields"] and "formation_energy_per_atom" in q["fields"]
    assert build_mp_query("heusler")["formula"] == "ABC2"
    assert build_mp_query("binary", max_sites=20)["num_sites"] == (1, 20)
    with pytest.raises(SourceError, match="unknown Materials Project class"):
        build_mp_query("spinel")


def test_mp_source_needs_key(monkeypatch):
    monkeypatch.delenv("MP_API_KEY", raising=False)
    with pytest.raises(SourceError, match="MP_API_KEY"):
        list(iter_source("mp:perovskite"))


def test_split_and_bins():
    assert split_of("mp-1", 0.0) == 0 and split_of("mp-1", 1.0) == 1
    frac = np.mean([split_of(f"id{i}", 0.2) for i in range(5000)])
    assert 0.17 < frac < 0.23
    edges = property_bin_edges(np.arange(100.0), 10)
    assert len(edges) == 9
    assert property_bin([0.0, 50.0, 99.0], edges).tolist() == [0, 5, 9]


def _crystals(n):
    out = []
    for i in range(n):
        a = 3.8 + 0.05 * i
        out.append(Structure(Lattice.cubic(a), ["Sr", "Ti", "O", "O", "O"],
                             [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]]))
    return out


def test_prepare_dataset_resume_and_pydataset(tmp_path):
    path = _csv(tmp_path, _crystals(12) + [BAD_CIF, Structure(Lattice.hexagonal(3, 5), ["Mg"], [[0, 0, 0]])])
    recs = list(iter_source(str(path)))
    out = tmp_path / "ds"
    cfg = PrepareConfig(property="prop", val_fraction=0.25, shard_size=5)
    man = prepare(recs, out, cfg=cfg, workers=1, progress=False)
    assert man["n_records"] == 14 and man["n_encoded"] == 12
    assert man["rejected"]["counts"] == {"malformed_cif": 1, "non_cubic": 1}
    assert man["n_train"] + man["n_val"] == 12 and man["condition"]["n_bins"] == 10
    assert sorted(man["elements_Z"]) == [8, 22, 38]
    # resume: delete one shard, rerun, the others are not rewritten
    shards = sorted((out / "shards").glob("*.npz"))
    mtimes = {p.name: p.stat().st_mtime_ns for p in shards}
    shards[1].unlink()
    man2 = prepare(recs, out, cfg=cfg, workers=1, progress=False)
    assert man2["n_encoded"] == 12
    assert (out / "shards" / shards[0].name).stat().st_mtime_ns == mtimes[shards[0].name]
    arrays = load_arrays(out, "train")
    assert arrays["density"].shape[1:] == (32, 32, 32)
    ds = VoxelDataset(out, "train", "unet", batch_size=4, seed=1)
    x, y = ds[0]
    assert x.shape == (4, 32, 32, 32, 1) and y["species"].max() <= 3 and y["occupancy"].shape == x.shape
    sds = VoxelDataset(out, "train", "unet", batch_size=4, epoch_steps=7, augment=False)
    assert len(sds) == 7
    seen = np.concatenate([sds._indices(i) for i in range(7)])
    assert len(seen) == 28 and set(seen) == set(range(sds.n))  # several shuffled passes, never runs dry
    sds.on_epoch_end()
    assert len(sds._indices(0)) == 4
    cds = VoxelDataset(out, "train", "unet", batch_size=4, crop=16)
    xc, yc = cds[0]
    assert xc.shape == (4, 16, 16, 16, 1) and yc["species"].shape == (4, 16, 16, 16)
    vds = VoxelDataset(out, "train", "vae", batch_size=2)
    (xv, cond), target = vds[0]
    assert xv.shape == (2, 32, 32, 32, 4) and cond.shape == (2, 10) and np.allclose(cond.sum(1), 1)
    assert np.array_equal(xv, target)
    # no rotation leaks: ids in train and val are disjoint
    assert not set(load_arrays(out, "train")["ids"]) & set(load_arrays(out, "val")["ids"])
