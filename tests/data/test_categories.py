"""Class names are data: the datasets hold them and do not import the weights registry, which takes them from
the data side (one list, not two copies)."""

from __future__ import annotations

import ast
from pathlib import Path

import fcnseg.data
import fcnseg.weights
from fcnseg.data.categories import VOC_CATEGORIES


def test_data_modules_do_not_import_the_weights_registry():
    for path in sorted(Path(fcnseg.data.__file__).parent.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            names += [a.name for a in node.names] if isinstance(node, ast.Import | ast.ImportFrom) else []
            assert not any("weights" in n.split(".") for n in names), f"{path.name} imports {names}"


def test_the_weights_take_the_data_sides_list():
    assert fcnseg.weights.VOC_CATEGORIES is VOC_CATEGORIES
    assert fcnseg.weights.FCN_ResNet50_Weights.DEFAULT.meta["categories"] == VOC_CATEGORIES
    assert fcnseg.data.VOCSegmentation.categories is VOC_CATEGORIES
    assert len(VOC_CATEGORIES) == 21 and VOC_CATEGORIES[15] == "person"
