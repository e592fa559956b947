"""dvc.yaml's code dependencies equal what each stage imports, and an edit to a shared
module makes DVC report exactly the stages that import it.

The imports are derived from the source by scripts/stage_deps.py (``ast``, transitive,
nothing imported); regenerate the deps with ``python scripts/stage_deps.py --write``.
A module missing from a stage's deps would let DVC serve stale results after an edit; one
declared but not imported would rerun the stage for nothing.
"""
from __future__ import annotations

import sys

import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "scripts"))
import stage_deps  # noqa: E402

DERIVED = stage_deps.derived()
SPECS = stage_deps.stage_specs()


@pytest.mark.parametrize("name", list(SPECS))
def test_stage_code_deps_equal_its_imports(name):
    have = stage_deps.expand(SPECS[name].get("deps", []))
    want = stage_deps.expand(DERIVED[name])
    rel = lambda fs: sorted(str(f.relative_to(REPO)) for f in fs)  # noqa: E731
    assert rel(want - have) == [], f"{name} imports these but does not declare them"
    assert rel(have - want) == [], f"{name} declares these but does not import them"


def test_the_import_walk_sees_function_level_and_relative_imports(tmp_path):
    mod = tmp_path / "m.py"
    mod.write_text("import os\nfrom nlrepro import io\n\ndef f():\n    import nlrepro.progress\n")
    assert stage_deps.imports_of(mod) == {"os", "nlrepro", "nlrepro.io", "nlrepro.progress"}
    # a package's __init__ brings in the modules it imports
    assert "nlrepro.eval.metrics" in stage_deps.imports_of(REPO / "src/nlrepro/eval/__init__.py")
    assert stage_deps.closure("stages.tokenize") >= {REPO / "src/nlrepro/data/tokenizer.py",
                                                     REPO / "stages/tokenize.py"}


def test_the_stages_reading_a_shared_module_are_the_ones_declaring_it():
    readers = {n for n in SPECS
               if REPO / "src/nlrepro/data/tokenizer.py" in stage_deps.expand(SPECS[n]["deps"])}
    assert readers == {"tokenizer", "tokenize", "evaluate"}
