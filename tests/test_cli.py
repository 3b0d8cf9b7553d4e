import json
import subprocess
import sys

import pandas as pd
import pytest

from icsg.cli import build_parser, main

COMMANDS = [a for a in build_parser()._subparsers._group_actions[0].choices]


def test_every_command_has_help(capsys):
    for cmd in COMMANDS:
        with pytest.raises(SystemExit) as e:
            main([cmd, "--help"])
        assert e.value.code == 0
        assert "usage: icsg " + cmd in capsys.readouterr().out


def test_roundtrip_cli_json(tmp_path, perovskite, rocksalt):
    path = tmp_path / "two.csv"
    pd.DataFrame({"material_id": ["p", "r", "bad"],
                  "cif": [perovskite.to(fmt="cif"), rocksalt.to(fmt="cif"), "data_x\n"]}).to_csv(path, index=False)
    out = tmp_path / "rt.json"
    assert main(["roundtrip", str(path), "--json", str(out), "--workers", "1"]) == 0
    res = json.loads(out.read_text())
    for key in ("n", "cell_mae_A", "site_emd_A", "dn_sites", "species_accuracy", "match_rate", "failures",
                "crystals_per_s"):
        assert key in res
    assert res["n"] == 3 and res["n_accepted"] == 2 and res["match_rate"] == 1.0
    assert res["failures"][0]["id"] == "bad"


def test_cli_bad_source_exits_cleanly(tmp_path, capsys):
    p = tmp_path / "x.csv"
    pd.DataFrame({"a": [1]}).to_csv(p, index=False)
    assert main(["roundtrip", str(p)]) == 2
    err = capsys.readouterr().err
    assert "x.csv: no 'cif' column" in err and "Traceback" not in err


def test_console_script_help():
    r = subprocess.run([sys.executable, "-m", "icsg.cli", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "roundtrip" in r.stdout
