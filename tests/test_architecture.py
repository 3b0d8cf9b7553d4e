"""The package's layering (setup.cfg [importlinter]) and size limits stay true."""
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_hold():
    """Stages import only the stages beneath them (cli > evaluation > generation > predict > training >
    pretrained > segmentation > models > data > representation > utilities), with no import cycle."""
    from importlinter.cli import lint_imports

    sys.path.insert(0, str(ROOT))
    try:
        assert lint_imports(config_filename=str(ROOT / "setup.cfg")) == 0
    finally:
        sys.path.remove(str(ROOT))


def test_every_subpackage_is_in_the_layers_contract():
    text = (ROOT / "setup.cfg").read_text()
    layers = text.split("[importlinter:contract:layers]", 1)[1].split("\n[", 1)[0]
    named = {m.strip() for line in layers.splitlines() for m in line.split("|") if m.strip().startswith("icsg.")}
    parts = {f"icsg.{p.stem}" for p in (ROOT / "icsg").iterdir()
             if (p.is_dir() and (p / "__init__.py").exists()) or (p.suffix == ".py" and p.stem != "__init__")}
    assert parts <= named, f"not in the layers contract: {sorted(parts - named)}"


def test_modules_and_functions_stay_small():
    """At most 400 lines a module and 80 a function (docstring included)."""
    big, long = [], []
    for path in (ROOT / "icsg").rglob("*.py"):
        src = path.read_text()
        if len(src.splitlines()) > 400:
            big.append(f"{path.relative_to(ROOT)}: {len(src.splitlines())} lines")
        for node in ast.walk(ast.parse(src)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 80:
                long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}")
    assert not big and not long, big + long


def test_no_module_narrates_its_history():
    hits = [str(p.relative_to(ROOT)) for p in [*(ROOT / "icsg").rglob("*.py"), ROOT / "README.md",
                                               ROOT / "weights" / "MODEL_CARD.md", ROOT / "benchmarks" / "RESULTS.md"]
            if "session" in p.read_text().lower()]
    assert not hits
