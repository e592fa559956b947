"""An HTML template for `dvc plots show` / `dvc plots diff` that works with no network.

DVC's default page (dvc_render/html.py, PAGE_HTML) has a ``{scripts}`` placeholder that the
vega renderer fills with three ``<script src="https://cdn.jsdelivr.net/...">`` tags, so on
a machine without internet the page stays blank. This template has no ``{scripts}``
placeholder (so nothing remote is inserted) and instead inlines one JavaScript bundle of
vega-embed + Vega-Lite + Vega, produced offline by the ``vl-convert-python`` package.

dvc_render fills the template with ``str.replace`` of ``{plot_divs}`` and ``{refresh_tag}``
(not ``str.format``), so braces in the JavaScript need no escaping; the bundle is only
checked not to contain those placeholders or a ``</script`` that would end the inline tag.

`PYTHONPATH=src python -m nlrepro.report.offline_html [OUT]` writes the template
(default ``.dvc/plots_offline.html``, the path that ``.dvc/config`` names as
``plots.html_template``; DVC resolves a relative value against the ``.dvc`` directory).
The output depends only on the installed vl-convert-python version. See
docs/PLOTS_OFFLINE.md.
"""
from __future__ import annotations

import argparse
import functools
import os
import re
import sys
from pathlib import Path

from nlrepro.errors import NLReproError, cli_main
from nlrepro.io import atomic_path

DEFAULT_OUT = Path(".dvc/plots_offline.html")

# Vega-Lite line of the bundle. DVC's built-in plot templates (dvc_render/vega_templates.py)
# declare "$schema": ".../vega-lite/v5.json", so compile them with the last v5 release
# rather than vl-convert's default (latest, v6), and the bytes do not change when a newer
# vl-convert changes its default. (The Vega runtime is vl-convert's one, 6.x; vega-embed
# logs "The compiled spec uses Vega v5, but current version is v6..." and draws it fine.)
VL_VERSION = "5.21"

PLACEHOLDERS = ("{plot_divs}", "{refresh_tag}")  # filled by dvc_render.html.HTML.embed
REMOTE_PLACEHOLDER = "{scripts}"  # would receive the CDN <script src> tags: must be absent

# ES6 snippet bundled with the libraries (vl-convert binds vegaEmbed, vegaLite, vega).
# DVC calls ``vegaEmbed('#id', spec)`` without options; default the action menu to
# export/source/compiled only, because "Open in Vega Editor" needs vega.github.io.
SNIPPET = """\
const offlineActions = {export: true, source: true, compiled: true, editor: false};
function offlineEmbed(el, spec, opts) {
  return vegaEmbed(el, spec, Object.assign({actions: offlineActions}, opts || {}));
}
window.vegaEmbed = offlineEmbed;
window.vegaLite = vegaLite;
window.vega = vega;
"""

PAGE = """\
<!DOCTYPE html>
<html>
<head>
    <meta charset="utf-8">
    {refresh_tag}
    <title>DVC Plot</title>
    <!-- {header} -->
    <script type="text/javascript">
{bundle}
    </script>
    <style>
        table {{
            border-spacing: 15px;
        }}
    </style>
</head>
<body>
    {plot_divs}
</body>
</html>
"""


# A resource the browser would fetch from another host: an src/href/action/poster attribute,
# or a CSS url()/@import, whose value starts with http://, https:// or // (protocol-relative).
# String literals inside the bundle (e.g. the Vega editor's address) are not matched.
_REMOTE_REF = re.compile(
    r"""(?:\b(?:src|href|action|poster|data)\s*=\s*["']?|url\(\s*["']?|@import\s+["'])"""
    r"""\s*((?:https?:)?//[^"'\s>)]+)""",
    re.IGNORECASE,
)


def remote_refs(html: str) -> list[str]:
    """Remote URLs that ``html`` would load (script/link/img sources, CSS imports)."""
    return sorted(set(_REMOTE_REF.findall(html)))


def bundle_versions() -> dict[str, str]:
    """Versions of the packages and JavaScript libraries that end up in the template."""
    from importlib.metadata import version

    import vl_convert

    return {
        "vl-convert-python": version("vl-convert-python"),
        "vega": vl_convert.get_vega_version(),
        "vega-lite": VL_VERSION,
        "vega-embed": vl_convert.get_vega_embed_version(),
    }


@functools.lru_cache(maxsize=1)
def _bundle() -> str:
    """vega-embed + Vega-Lite + Vega as one script (about 3.5 s; cached per process)."""
    try:
        import vl_convert
    except ImportError:
        raise NLReproError("offline_html: the 'vl-convert-python' package is not installed "
                           "(pip install -r requirements.txt)") from None
    if VL_VERSION not in vl_convert.get_vegalite_versions():
        raise NLReproError(f"offline_html: vl-convert-python {vl_convert.__version__} does not "
                           f"bundle Vega-Lite {VL_VERSION} (has "
                           f"{', '.join(vl_convert.get_vegalite_versions())})")
    return vl_convert.javascript_bundle(SNIPPET, vl_version=VL_VERSION)


def build_template(bundle: str | None = None) -> str:
    """Return the template text: DVC's page layout with the JavaScript bundle inlined."""
    bundle = _bundle() if bundle is None else bundle
    for bad in (*PLACEHOLDERS, REMOTE_PLACEHOLDER):
        if bad in bundle:
            raise NLReproError(f"offline_html: the JavaScript bundle contains '{bad}', "
                               "which DVC would replace")
    if "</script" in bundle.lower():
        raise NLReproError("offline_html: the JavaScript bundle contains '</script', "
                           "which would end the inline <script> tag")
    header = ", ".join(f"{k} {v}" for k, v in bundle_versions().items())
    header = (f"generated by `python -m nlrepro.report.offline_html` from {header}; "
              "do not edit")
    text = PAGE.format(header=header, bundle=bundle.strip("\n"), refresh_tag="{refresh_tag}",
                       plot_divs="{plot_divs}")
    for needed in PLACEHOLDERS:
        assert text.count(needed) == 1, needed
    assert REMOTE_PLACEHOLDER not in text
    remote = remote_refs(text)
    if remote:
        raise NLReproError(f"offline_html: the template would load {remote[0]}")
    return text


def write_template(path: str | Path, text: str | None = None) -> Path:
    """Write the template to ``path`` atomically (UTF-8, ``\\n`` line ends)."""
    text = build_template() if text is None else text
    umask = os.umask(0)
    os.umask(umask)
    with atomic_path(path) as tmp:
        tmp.write_bytes(text.encode("utf-8"))
        tmp.chmod(0o666 & ~umask)  # mkstemp makes 0600; a shared clone needs it readable
    return Path(path)


@cli_main
def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        prog="python -m nlrepro.report.offline_html",
        description="Write the offline HTML template for `dvc plots show` / `dvc plots diff`.")
    ap.add_argument("out", nargs="?", type=Path, default=None,
                    help=f"output file (default: {DEFAULT_OUT}, run from the repository root)")
    ap.add_argument("--check", action="store_true",
                    help="write nothing; exit 1 if OUT differs from what would be generated")
    args = ap.parse_args(argv)
    out = args.out
    if out is None:
        if not DEFAULT_OUT.parent.is_dir():
            raise NLReproError(f"offline_html: no {DEFAULT_OUT.parent}/ here; run from the "
                               "repository root or give an output path")
        out = DEFAULT_OUT
    text = build_template()
    if args.check:
        current = out.read_bytes() if out.is_file() else None
        if current != text.encode("utf-8"):
            state = "missing" if current is None else "out of date"
            print(f"offline_html: {out} is {state}; regenerate with "
                  f"`PYTHONPATH=src python -m nlrepro.report.offline_html {out}`",
                  file=sys.stderr)
            raise SystemExit(1)
        print(f"offline_html: {out} is up to date")
        return
    write_template(out, text)
    print(f"offline_html: wrote {out} ({len(text.encode('utf-8')):,} bytes; "
          f"{', '.join(f'{k} {v}' for k, v in bundle_versions().items())})")


if __name__ == "__main__":
    main(sys.argv[1:])
