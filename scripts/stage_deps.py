"""Each stage's code dependencies, derived from its imports; optionally written into dvc.yaml.

    python scripts/stage_deps.py            # print the derived deps and any difference
    python scripts/stage_deps.py --write    # replace the code deps in dvc.yaml with them

A stage's code is every project file its command's module imports, transitively (any
`import` in stages/ or src/nlrepro/, at module level or inside a function), found with
`ast` without importing anything. A package directory stands for its files when the
stage imports all of them. tests/test_stage_deps.py fails when dvc.yaml differs, so
an edit to any imported module makes `dvc status` report the stages that run it.
"""
from __future__ import annotations

import argparse
import ast
import re
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
SRC = REPO / "src"
CODE_PREFIXES = ("src/", "stages/")


def module_file(name: str) -> Path | None:
    """The file of a project module (``nlrepro.x.y`` or ``stages.x``), else None."""
    top = name.split(".")[0]
    root = {"nlrepro": SRC, "stages": REPO}.get(top)
    if root is None:
        return None
    base = root.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imports_of(path: Path) -> set[str]:
    """Module names one file imports (``from pkg import name`` gives ``pkg`` and
    ``pkg.name``; relative imports are resolved)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    root = SRC if SRC in path.parents else REPO
    package = (".".join(path.relative_to(root).with_suffix("").parts)
               if root in path.parents else path.stem)
    if path.name != "__init__.py":
        package = package.rsplit(".", 1)[0] if "." in package else ""
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            out.add(base)
            out.update(f"{base}.{a.name}" for a in node.names)
    return out


def closure(entry: str) -> set[Path]:
    """Every project file the module ``entry`` imports, itself and the ``__init__.py`` of
    every package on the way included."""
    seen: set[Path] = set()
    todo = [entry]
    while todo:
        parts = todo.pop().split(".")
        for i in range(1, len(parts) + 1):
            f = module_file(".".join(parts[:i]))
            if f is not None and f not in seen:
                seen.add(f)
                todo.extend(imports_of(f))
    return seen


def compress(files: set[Path]) -> list[str]:
    """Repository-relative deps: a package directory of ``src/nlrepro`` when all its files
    are in ``files``, else the files."""
    out, covered = [], set()
    for d in sorted({f.parent for f in files if SRC / "nlrepro" in f.parents},
                    key=lambda p: (len(p.parts), p)):
        if d == SRC / "nlrepro" or any(c in d.parents for c in map(Path, out)):
            continue
        allpy = set(d.rglob("*.py"))
        if allpy and allpy <= files:
            out.append(str(d.relative_to(REPO)))
            covered |= allpy
    return sorted(out + [str(f.relative_to(REPO)) for f in files - covered])


def expand(deps: list[str]) -> set[Path]:
    """The code files a list of deps covers (directories expanded)."""
    files = set()
    for dep in deps:
        if dep.startswith(CODE_PREFIXES):
            p = REPO / dep
            files.update(p.rglob("*.py") if p.is_dir() else [p])
    return files


def stage_specs() -> dict[str, dict]:
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    return {name: st.get("do", st) for name, st in stages.items()}


def derived() -> dict[str, list[str]]:
    out = {}
    for name, spec in stage_specs().items():
        module = re.search(r"python -m (stages\.\w+)", spec["cmd"]).group(1)
        out[name] = compress(closure(module))
    return out


def write(deps: dict[str, list[str]]) -> None:
    """Replace each stage's code deps in dvc.yaml (comments and other deps kept)."""
    lines = (REPO / "dvc.yaml").read_text().splitlines()
    out, stage, i = [], None, 0
    while i < len(lines):
        line = lines[i]
        m = re.match(r"^  (\w+):\s*$", line)
        if m:
            stage = m.group(1)
        dm = re.match(r"^(\s+)deps:\s*$", line)
        if dm and stage in deps:
            out.append(line)
            indent = dm.group(1)
            i += 1
            items = []
            while i < len(lines) and lines[i].startswith(f"{indent}- "):
                items.append(lines[i][len(indent) + 2:])
                i += 1
            others = [d for d in items if not d.startswith(CODE_PREFIXES)]
            out += [f"{indent}- {d}" for d in deps[stage] + others]
            continue
        out.append(line)
        i += 1
    (REPO / "dvc.yaml").write_text("\n".join(out) + "\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", action="store_true", help="rewrite the code deps in dvc.yaml")
    args = ap.parse_args()
    deps = derived()
    if args.write:
        write(deps)
    differ = 0
    for name, spec in stage_specs().items():
        have = expand([d for d in spec.get("deps", [])])
        want = expand(deps[name])
        if have != want:
            differ += 1
            print(f"{name}: missing {sorted(str(p.relative_to(REPO)) for p in want - have)}, "
                  f"extra {sorted(str(p.relative_to(REPO)) for p in have - want)}")
    print(f"{len(deps) - differ}/{len(deps)} stages declare exactly the code they import")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
