"""Round trips on the real DFT data in ../shared/data (skipped when it is absent)."""
from icsg.data.sources import iter_source
from icsg.evaluation.roundtrip import RoundtripConfig, run_roundtrip


def test_roundtrip_perov5_sample(shared_data):
    recs = list(iter_source(str(shared_data / "perov_5" / "val.csv.gz"), limit=60))
    res = run_roundtrip(recs, RoundtripConfig(), workers=1, progress=False)
    assert res["match_rate"] >= 0.99 and res["cell_mae_A"] <= 0.02
    assert res["site_emd_A"] <= 0.03 and res["dn_sites"] <= 0.01


def test_roundtrip_imatgen_sample(shared_data):
    recs = list(iter_source(str(shared_data / "perov_5" / "val.csv.gz"), limit=20))
    res = run_roundtrip(recs, RoundtripConfig(encoding="imatgen"), workers=1, progress=False)
    assert res["match_rate"] == 1.0 and res["site_emd_A"] < 0.01
