"""The package layout: imports only point down the layers, no library module reads the
top-level config, and the data stages run without torch.

Layers, lowest first (a module imports its own package and lower layers only):

    base     errors, configlib, io, progress
    data     data/*
    inputs   inputs (manifests of the files params point at; reads data.sources)
    model    model/*
    train    train/*
    eval     eval/*
    top      harness (the lm-eval adapter), report/*
    params   config (assembles every package's section; imported by stages and tools only)
"""
from __future__ import annotations

import subprocess
import sys

from conftest import REPO, stage_env

sys.path.insert(0, str(REPO / "scripts"))
import stage_deps  # noqa: E402

SRC = REPO / "src" / "nlrepro"
LAYERS = {"errors": 0, "configlib": 0, "io": 0, "progress": 0, "data": 1, "inputs": 2,
          "model": 2, "train": 3, "eval": 4, "harness": 5, "report": 5, "config": 6}


def unit(module: str) -> str:
    """``nlrepro.train.loop`` -> ``train``; ``nlrepro.io`` -> ``io``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "nlrepro"


def edges() -> list[tuple[str, str, str]]:
    """(importing file, its unit, imported unit) for every project import in src/nlrepro."""
    out = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(REPO / "src").with_suffix("")
        me = unit(".".join(p for p in rel.parts if p != "__init__"))
        for name in stage_deps.imports_of(path):
            if name.startswith("nlrepro.") and stage_deps.module_file(name) is not None:
                out.append((str(path.relative_to(REPO)), me, unit(name)))
    return out


def test_every_unit_has_a_layer():
    units = {p.stem if p.is_file() else p.name for p in SRC.iterdir()
             if p.suffix == ".py" or (p.is_dir() and (p / "__init__.py").exists())}
    assert units - {"__init__"} == set(LAYERS)


def test_imports_point_down_the_layers_only():
    upward = [(f, a, b) for f, a, b in edges() if a != b and LAYERS[b] >= LAYERS[a]
              and not (LAYERS[a] == LAYERS[b] == 0)]
    assert upward == [], upward


def test_no_library_module_imports_the_top_level_config():
    readers = sorted({f for f, a, b in edges() if b == "config" and a != "config"})
    assert readers == []


def test_the_data_stages_and_the_params_loader_import_without_torch():
    code = ("import sys\n"
            "import stages.check, stages.ingest, stages.filter, stages.shard, stages.tokenizer, "
            "stages.tokenize, nlrepro.config\n"
            "nlrepro.config.load_params('params.yaml')\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'numpy.typing.mypy'}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=stage_env(),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_variant_names_are_defined_once():
    from nlrepro.model.config import DISPLAY_NAMES, VARIANTS
    assert set(DISPLAY_NAMES) == set(VARIANTS) == {"transformer", "titan", "hope"}
    spelled = []
    for path in sorted(SRC.rglob("*.py")):
        if path.name == "config.py" and path.parent.name == "model":
            continue
        text = path.read_text(encoding="utf-8")
        if 'Literal["transformer", "titan", "hope"]' in text or "(\"transformer\", \"titan\", \"hope\")" in text:
            spelled.append(str(path.relative_to(REPO)))
    assert spelled == []


def test_one_range_check_style():
    styled = [str(p.relative_to(REPO)) for p in sorted(SRC.rglob("*.py"))
              if p.name != "configlib.py"          # where rng() builds that metadata
              and 'metadata={"range"' in p.read_text(encoding="utf-8")]
    assert styled == []
