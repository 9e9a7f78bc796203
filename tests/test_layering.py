"""The house is layered: a module imports from its own layer or lower ones, never from a higher one.

The layers of ``src/fcnseg``, lowest first (a module's layer is that of its top-level name under ``fcnseg``):

0. ``_atomic``, ``_stamp``, ``faults``, ``runlock``, ``memory``, ``imageio``, ``transforms``, ``metrics``,
   ``distributed``: files, images, tensors, processes
1. ``data``, ``labelstudio``: the datasets and their class names; Label Studio's config, regions and task images
2. ``weights``: weights as data (registry, cache, checkpoint files; the VOC names come from ``data``)
3. ``models``: the networks
4. ``optimize``: speed paths for a built model
5. ``predict``, ``upsample``, ``results``, ``video``, ``evaluate``, ``export``, ``outputs``, ``coco_results``,
   ``viz``, ``rank``, the package ``fcnseg`` itself: using a model
6. ``train``, ``serve``: applications built on all of the above
7. ``cli``, ``__main__``: the command line, a thin layer over everything

So data and models never import cli, serve or train; optimize never imports cli. Every import counts, also one
inside a function (a lazy import is still a dependency). The imports are read with ``ast``, nothing is run.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

LAYERS = [
    {"_atomic", "_stamp", "faults", "runlock", "memory", "imageio", "transforms", "metrics", "distributed"},
    {"data", "labelstudio"},
    {"weights"},
    {"models"},
    {"optimize"},
    {
        "predict",
        "upsample",
        "results",
        "video",
        "evaluate",
        "export",
        "outputs",
        "coco_results",
        "viz",
        "rank",
        "__init__",
    },
    {"train", "serve"},
    {"cli", "__main__"},
]

# Edges that break the layering today, each with the issue that removes it; the test fails when one is fixed
# and still listed here, so the list only shrinks.
KNOWN_VIOLATIONS: set[tuple[str, str]] = set()


def _module_name(path: Path, src: Path) -> str:
    parts = list(path.relative_to(src).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, src: Path) -> set[str]:
    """The modules (inside or outside the package) that the file at ``path`` imports, as absolute names."""
    module = _module_name(path, src)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            for alias in node.names:  # ``from . import backends`` imports a module; ``from .x import y`` a name
                sub = f"{base}.{alias.name}"
                is_module = (src / sub.replace(".", "/")).with_suffix(".py").is_file()
                found.add(sub if is_module or (src / sub.replace(".", "/")).is_dir() else base)
    return found


def _layer(module: str) -> int:
    parts = module.split(".")
    name = parts[1] if len(parts) > 1 else "__init__"
    for i, layer in enumerate(LAYERS):
        if name in layer:
            return i
    raise AssertionError(f"{module} is in no layer: add {name!r} to LAYERS (and the docstring) where it belongs")


def layering_violations(src: Path) -> set[tuple[str, str]]:
    """(importer, imported) for every import of a higher layer's module under ``src/fcnseg``."""
    violations = set()
    for path in sorted((src / "fcnseg").rglob("*.py")):
        importer = _module_name(path, src)
        for imported in _imports(path, src):
            if imported.split(".")[0] == "fcnseg" and _layer(imported) > _layer(importer):
                violations.add((importer, imported))
    return violations


def test_no_module_imports_a_higher_layer():
    violations = layering_violations(SRC)
    new = violations - KNOWN_VIOLATIONS
    assert not new, f"lower layers import higher ones: {sorted(new)}"
    fixed = KNOWN_VIOLATIONS - violations
    assert not fixed, f"fixed, so remove from KNOWN_VIOLATIONS: {sorted(fixed)}"


def _write(root: Path, name: str, text: str = "") -> None:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_the_check_finds_relative_absolute_and_lazy_imports_of_higher_layers(tmp_path):
    """A made-up tree with one violation of each kind; the same-layer and downward imports pass."""
    for name in ("fcnseg/__init__.py", "fcnseg/cli/__init__.py", "fcnseg/cli/speed.py", "fcnseg/train/__init__.py",
                 "fcnseg/serve/__init__.py", "fcnseg/weights.py", "fcnseg/models/__init__.py"):  # fmt: skip
        _write(tmp_path, name)
    _write(tmp_path, "fcnseg/data/__init__.py", "from ..cli import speed\nfrom ..imageio import x\nimport numpy\n")
    _write(tmp_path, "fcnseg/data/coco.py", "import fcnseg.train\nfrom . import folder\n")
    _write(tmp_path, "fcnseg/data/folder.py", "def f():\n    from fcnseg.serve import app\n")
    _write(tmp_path, "fcnseg/models/fcn.py", "from .. import __version__\nfrom ..data import folder\n")
    assert layering_violations(tmp_path) == {
        ("fcnseg.data", "fcnseg.cli.speed"),
        ("fcnseg.data.coco", "fcnseg.train"),
        ("fcnseg.data.folder", "fcnseg.serve"),
        ("fcnseg.models.fcn", "fcnseg"),  # the package itself sits above the models it re-exports
    }
