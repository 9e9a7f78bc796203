"""Property-based fuzzing of the parsers a user's file reaches first: ``classes.txt``, COCO JSON, mask values.

The property: whatever the bytes, ``fcnseg data check`` either reports or fails with one line that names the file,
never a traceback; and what parses is read right (labels against a plain-numpy mapping).
"""

from __future__ import annotations

import contextlib
import json
import string
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from fcnseg.cli import main
from fcnseg.data import CocoSegmentation
from fcnseg.data.check import check_coco
from fcnseg.data.classes import parse_classes

FUZZ = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def one_line_naming(err: str, path: Path) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0] and "Traceback" not in err, err


def run_check(argv: list[str], path: Path, capsys) -> None:
    """``fcnseg data check``: a report (exit 0 or 1), or exit 1 with one line naming ``path`` on stderr."""
    capsys.readouterr()
    rc = main(["data", "check", *argv])
    out, err = capsys.readouterr()
    assert rc in (0, 1)
    if err:
        assert rc == 1
        one_line_naming(err, path)


# --- classes.txt ----------------------------------------------------------------------------------------------

LINE = st.one_of(
    st.text(max_size=30),
    st.builds(lambda v, sep, name: f"{v}{sep}{name}", st.integers(-5, 70000).map(str), st.sampled_from(" \t"),
              st.text(string.ascii_letters + " _é中#", max_size=10)),
    st.builds(lambda r, g, b, name: f"{r},{g},{b} {name}", *[st.integers(0, 300)] * 3,
              st.sampled_from(["a", "ignore"])),
    st.sampled_from(["#ff0000 road", "# comment", "ignore", "255 ignore", "\ufeffbackground", ""]),
)  # fmt: skip


@FUZZ
@given(lines=st.lists(LINE, max_size=8))
def test_classes_text_parses_or_names_the_line(lines):
    text = "\n".join(lines)
    try:
        cm = parse_classes(text, "my/classes.txt")
    except ValueError as e:
        assert str(e).startswith("my/classes.txt") and "\n" not in str(e)
        return
    assert cm.names
    if cm.mapped:  # names merged (unique), every value a class index or ignored, and 8-bit labels suffice
        assert len(set(cm.names)) == len(cm.names) <= 255
        assert all(v is None or 0 <= v < len(cm.names) for v in cm.values.values())


@FUZZ
@given(data=st.one_of(st.binary(max_size=200), st.lists(LINE, max_size=6).map(lambda ls: "\n".join(ls).encode())))
def test_data_check_on_any_classes_file(data, tmp_path, capsys):
    root = tmp_path / "ds"
    (root / "train" / "images").mkdir(parents=True, exist_ok=True)
    (root / "train" / "masks").mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 3)).save(root / "train" / "images" / "a.png")
    Image.fromarray(np.array([[0, 1, 1, 255]] * 3, np.uint8)).save(root / "train" / "masks" / "a.png")
    (root / "classes.txt").write_bytes(data)
    run_check(["--dataset", "folder", "--data-root", str(root)], root / "classes.txt", capsys)


# --- COCO JSON ------------------------------------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=6), kids, max_size=4),
    max_leaves=12,
)


def valid_document() -> dict:
    return {
        "images": [{"id": 1, "file_name": "a.png", "width": 6, "height": 4}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 2, "segmentation": [[0, 0, 4, 0, 4, 3, 0, 3]], "area": 12},
            {"id": 2, "image_id": 1, "category_id": 5, "segmentation": {"size": [4, 6], "counts": [4, 8, 12]}},
        ],
        "categories": [{"id": 2, "name": "road"}, {"id": 5, "name": "car"}],
    }


PATHS = [("images",), ("images", 0), ("images", 0, "id"), ("images", 0, "file_name"), ("images", 0, "width"),
         ("annotations",), ("annotations", 0), ("annotations", 0, "image_id"), ("annotations", 0, "category_id"),
         ("annotations", 0, "segmentation"), ("annotations", 0, "segmentation", 0),
         ("annotations", 0, "segmentation", 0, 1), ("annotations", 1, "segmentation", "size"),
         ("annotations", 1, "segmentation", "counts"), ("annotations", 0, "area"), ("categories",),
         ("categories", 0), ("categories", 0, "id"), ("categories", 0, "name")]  # fmt: skip


def mutate(doc: dict, path: tuple, value, delete: bool) -> dict:
    node = doc
    for key in path[:-1]:
        node = node[key]
    if delete:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return doc


MUTATED = st.builds(
    lambda edits: mutate_all(edits),
    st.lists(st.tuples(st.sampled_from(PATHS), JSON | st.text(string.printable + "é中\x00", max_size=12),
                       st.booleans()), min_size=1, max_size=3),
)  # fmt: skip


def mutate_all(edits) -> dict:
    doc = valid_document()
    for path, value, delete in edits:
        with contextlib.suppress(KeyError, IndexError, TypeError):  # an earlier edit replaced the parent
            doc = mutate(doc, path, value, delete)
    return doc


@FUZZ
@given(doc=st.one_of(MUTATED, JSON, st.binary(max_size=64)))
def test_any_coco_file_is_checked_and_read_or_named(doc, tmp_path, capsys):
    ann = tmp_path / "export" / "result.json"
    ann.parent.mkdir(exist_ok=True)
    Image.new("RGB", (6, 4)).save(ann.parent / "a.png")
    ann.write_bytes(doc if isinstance(doc, bytes) else json.dumps(doc).encode())
    run_check(["--ann-file", str(ann)], ann, capsys)
    try:
        ds = CocoSegmentation.from_file(ann)
    except ValueError as e:
        one_line_naming(str(e), ann)
        return
    check_coco(ds, pixels=True)
    for i in range(len(ds)):
        try:
            image, mask = ds[i]
        except (ValueError, FileNotFoundError) as e:
            assert "\n" not in str(e) and str(ann.parent) in str(e), e
            continue
        assert mask.size == image.size and max(np.asarray(mask).ravel(), default=0) < len(ds.categories)


@pytest.mark.parametrize("n", [254, 255, 1000])
def test_huge_category_counts(n, tmp_path):
    doc = valid_document()
    doc["categories"] = [{"id": 10**12 + i, "name": f"é{i}"} for i in range(n)]
    doc["annotations"] = []
    ann = tmp_path / "result.json"
    ann.write_text(json.dumps(doc))
    Image.new("RGB", (6, 4)).save(tmp_path / "a.png")
    if n <= 254:
        assert len(CocoSegmentation.from_file(ann).categories) == n + 1
    else:
        with pytest.raises(ValueError, match=rf"result\.json: {n} categories, but masks are 8-bit"):
            CocoSegmentation.from_file(ann)


# --- mask values ----------------------------------------------------------------------------------------------

MODES = {"L": np.uint8, "P": np.uint8, "I;16": np.uint16, "LA": np.uint8, "RGB": np.uint8, "RGBA": np.uint8}


def save_mask(raw: np.ndarray, mode: str, path: Path) -> None:
    """``raw`` as a PNG of ``mode``: every channel (alpha too) holds the value, a palette maps index i to grey i."""
    a = raw.astype(MODES[mode])
    channels = {"LA": 2, "RGB": 3, "RGBA": 4}.get(mode)
    if mode == "P":
        img = Image.frombytes("P", a.shape[::-1], a.tobytes())
        img.putpalette([v for i in range(256) for v in (i, i, i)])
    else:  # numpy's dtype and channel count pick the mode: L, I;16, LA, RGB, RGBA
        img = Image.fromarray(np.repeat(a[..., None], channels, axis=2) if channels else a)
    assert img.mode == mode
    img.save(path)


@FUZZ
@given(
    mode=st.sampled_from(sorted(MODES)),
    pixels=st.lists(st.integers(0, 65535), min_size=6, max_size=6),
    k=st.integers(1, 6),
)
def test_mask_values_read_right_or_named(mode, pixels, k, tmp_path, capsys):
    """A plain classes.txt of ``k`` names: each value is its class, 255 is ignored, anything else is named."""
    raw = np.array(pixels, dtype=np.int64).reshape(2, 3) % (65536 if mode == "I;16" else 256)
    root = tmp_path / "ds"
    (root / "train" / "images").mkdir(parents=True, exist_ok=True)
    (root / "train" / "masks").mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text("".join(f"c{i}\n" for i in range(k)))
    Image.new("RGB", (3, 2)).save(root / "train" / "images" / "a.png")
    mask = root / "train" / "masks" / "a.png"
    save_mask(raw, mode, mask)
    try:
        from fcnseg.data import read_mask
        from fcnseg.data.classes import read_class_map

        labels = np.asarray(read_mask(mask, read_class_map(root)))
    except ValueError as e:
        one_line_naming(str(e), mask)
        ok = ((raw < k) | (raw == 255)).all()
        assert mode in ("RGB", "RGBA") or not ok  # colour masks need colours in classes.txt; else a bad value
        return
    np.testing.assert_array_equal(labels, raw)  # plain form: the value is the class
    assert ((raw < k) | (raw == 255)).all()
