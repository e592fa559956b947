"""The offline HTML template for `dvc plots show` (docs/PLOTS_OFFLINE.md).

No browser and no network: the committed template must be what the generator makes from
the pinned vl-convert-python, be usable by dvc_render, and make `dvc plots show` / `dvc
plots diff` write a page that loads nothing remote. The in-browser check (charts actually
drawn) is scripts/check_plots_offline.py, which needs Chromium.
"""
from __future__ import annotations

import configparser
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO
from nlrepro.errors import NLReproError
from nlrepro.report import offline_html

TEMPLATE = REPO / ".dvc" / "plots_offline.html"
DVC = str(Path(sys.executable).parent / "dvc")
BUNDLE_MARK = "window.vegaEmbed=offlineEmbed"  # the bundle's last statement (SNIPPET)


@pytest.fixture(scope="module")
def generated() -> str:
    return offline_html.build_template()


def test_committed_template_is_up_to_date(generated):
    assert TEMPLATE.is_file(), f"{TEMPLATE} missing: run python -m nlrepro.report.offline_html"
    assert TEMPLATE.read_bytes() == generated.encode("utf-8"), (
        f"{TEMPLATE} is out of date for the installed vl-convert-python: regenerate with "
        "`PYTHONPATH=src python -m nlrepro.report.offline_html`")


def test_template_has_dvc_placeholders_and_no_remote_urls(generated):
    assert generated.count("{plot_divs}") == 1  # required by dvc_render.html.HTML
    assert generated.count("{refresh_tag}") == 1
    assert "{scripts}" not in generated  # would receive the CDN <script src> tags
    assert offline_html.remote_refs(generated) == []
    assert BUNDLE_MARK in generated
    assert generated.startswith("<!DOCTYPE html>") and len(generated) > 500_000


def test_remote_refs_finds_dvc_cdn_scripts():
    from dvc_render.vega import VegaRenderer

    refs = offline_html.remote_refs(VegaRenderer.SCRIPTS)
    assert len(refs) == 3 and all(r.startswith("https://cdn.jsdelivr.net/") for r in refs)
    assert offline_html.remote_refs('<link href="//x.org/a.css"><img src="static/a.png">') \
        == ["//x.org/a.css"]


def test_bundle_that_would_break_the_page_is_refused():
    with pytest.raises(NLReproError, match="plot_divs"):
        offline_html.build_template(bundle="var s = '{plot_divs}';")
    with pytest.raises(NLReproError, match="</script"):
        offline_html.build_template(bundle="var s = '</SCRIPT>';")


def test_dvc_config_points_at_the_template():
    config = configparser.ConfigParser()
    config.read(REPO / ".dvc" / "config")
    value = config.get("plots", "html_template", fallback=None)
    assert value == "plots_offline.html"
    # dvc/commands/plots.py: a relative plots.html_template is joined to the .dvc directory
    assert (REPO / ".dvc" / value).resolve() == TEMPLATE.resolve()
    ignored = subprocess.run(["git", "check-ignore", "-q", str(TEMPLATE)], cwd=REPO)
    assert ignored.returncode == 1, f"{TEMPLATE} is git-ignored"


def test_main_writes_atomically_and_checks(tmp_path, capsys, generated):
    out = tmp_path / "sub" / "t.html"
    with pytest.raises(SystemExit) as exc:
        offline_html.main([str(out), "--check"])
    assert exc.value.code == 1
    offline_html.main([str(out)])
    assert out.read_bytes() == generated.encode("utf-8")
    assert [p.name for p in out.parent.iterdir()] == ["t.html"]  # no temporary left behind
    offline_html.main([str(out), "--check"])
    assert "up to date" in capsys.readouterr().out


def _run(cwd: Path, *cmd: str) -> str:
    env = dict(os.environ, DVC_NO_ANALYTICS="1", GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t",
               GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t")
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=120,
                            stdin=subprocess.DEVNULL)
    assert result.returncode == 0, f"{' '.join(cmd)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def _check_page(index: Path, revs: list[str]) -> None:
    html = index.read_text(encoding="utf-8")
    assert BUNDLE_MARK in html, "the template's bundle is not in the page"
    assert offline_html.remote_refs(html) == []
    assert "cdn.jsdelivr.net" not in html
    assert re.search(r"vegaEmbed\('#\w*train_csv', spec\);", html)  # dvc_render's vega div
    assert "{plot_divs}" not in html and "{refresh_tag}" not in html
    for rev in revs:
        assert f'"rev": "{rev}"' in html


def test_dvc_plots_show_and_diff_use_the_template(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    _run(repo, "git", "init", "-q")
    _run(repo, DVC, "init", "-q")
    (repo / "train.csv").write_text("step,loss\n0,3.0\n1,2.5\n2,2.1\n")
    (repo / "dvc.yaml").write_text("plots:\n- train.csv:\n    x: step\n    y: loss\n")
    (repo / ".dvc" / "plots_offline.html").write_bytes(TEMPLATE.read_bytes())
    _run(repo, DVC, "config", "plots.html_template", "plots_offline.html")
    _run(repo, "git", "add", "-A")
    _run(repo, "git", "commit", "-qm", "init")

    # from a subdirectory: the template path is relative to .dvc/, not to the cwd
    (repo / "sub").mkdir()
    _run(repo / "sub", DVC, "plots", "show", "-o", str(tmp_path / "show"))
    _check_page(tmp_path / "show" / "index.html", ["workspace"])

    (repo / "train.csv").write_text("step,loss\n0,3.0\n1,2.2\n2,1.8\n")
    _run(repo, DVC, "plots", "diff", "HEAD", "-o", str(tmp_path / "diff"))
    _check_page(tmp_path / "diff" / "index.html", ["workspace", "HEAD"])
