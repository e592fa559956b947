"""Environment errors (permission, disk full, file-size limit) are one line naming the
file and exit 2, from the real stages; bugs keep their traceback."""
from __future__ import annotations

import errno
import resource
import signal
import subprocess
import sys

import pytest
import yaml

from conftest import REPO, smoke_params, stage_env
from nlrepro.errors import cli_main


@pytest.mark.parametrize("code, text", [(errno.EACCES, "permission denied"),
                                        (errno.ENOSPC, "no space left on the device"),
                                        (errno.EROFS, "read-only file system")])
def test_environment_errors_are_one_line(capsys, code, text):
    @cli_main
    def main():
        raise OSError(code, "x", "checkpoints/hope-s0-abc/last.pt")

    with pytest.raises(SystemExit) as exc:
        main()
    assert exc.value.code == 2
    assert capsys.readouterr().err == f"error: checkpoints/hope-s0-abc/last.pt: {text}\n"


def test_a_bug_keeps_its_traceback():
    @cli_main
    def main():
        raise OSError(errno.EBADF, "bad file descriptor")

    with pytest.raises(OSError):
        main()


def _limit_file_size():
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)      # EFBIG instead of a kill
    resource.setrlimit(resource.RLIMIT_FSIZE, (16, 16))


def test_a_stage_hitting_a_file_size_limit_says_so_and_leaves_nothing(tmp_path):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(smoke_params(), sort_keys=False))
    env = {**stage_env(), "PYTHONPATH": f"{REPO / 'src'}:{REPO}"}
    r = subprocess.run([sys.executable, "-m", "stages.check"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, preexec_fn=_limit_file_size, timeout=120)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "file too large" in lines[0]
    assert not (tmp_path / "data/inputs").exists()
    assert [p.name for p in (tmp_path / "data").iterdir()] == []        # no temporaries left
