"""Shared fixtures: params files written into a temporary project directory."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from nlrepro.model.presets import deep_merge

REPO = Path(__file__).resolve().parents[1]

# Tiny models gain nothing from a second thread, and oversubscribed cores slow them 10x.
torch.set_num_threads(1)


def smoke_params(**overrides) -> dict:
    """The repository's params.yaml with the smoke preset (tests/smoke_params.yaml) on top."""
    base = yaml.safe_load((REPO / "params.yaml").read_text())
    smoke = yaml.safe_load((REPO / "tests" / "smoke_params.yaml").read_text())
    return deep_merge(deep_merge(base, smoke), overrides)


def stage_env() -> dict:
    """Environment for running stages as DVC does: the venv's python first on PATH."""
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env["PYTHONPATH"] = str(REPO / "src") + os.pathsep + str(REPO)
    env["OMP_NUM_THREADS"] = "1"
    return env


def run_stage(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """Run ``python -m stages.<args>`` in ``cwd`` (a scratch project directory)."""
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=stage_env(),
                          capture_output=True, text=True, timeout=600)


@pytest.fixture
def project(tmp_path):
    """A scratch project directory; ``project.write_params(dict)`` writes params.yaml."""

    class Project:
        root = tmp_path

        def write_params(self, params: dict) -> None:
            (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

        def run(self, *args: str) -> subprocess.CompletedProcess:
            return run_stage(tmp_path, *args)

    return Project()
