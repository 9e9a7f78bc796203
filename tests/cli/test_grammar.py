"""One grammar for every command: ``-o/--output``, ``--quiet``/``--no-progress``, ``--dataset``/``--data-root`` with
the kind detected from the folder; the old spellings still work, hidden, with a deprecation note."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from checkpoints import THREE_CLASSES
from seg_datasets import make_coco, make_coco_export, make_folder, make_voc

from fcnseg.cli import build_parser, main
from fcnseg.data.detect import detect_dataset


def _parse(argv: list[str]) -> dict:
    return vars(build_parser().parse_args(argv))


# (old spelling, new spelling): the same namespace, and the old one says on stderr what to use instead
DEPRECATED = [
    (["train", "--output-dir", "runs/a"], ["train", "-o", "runs/a"]),
    (["data", "check", "ds"], ["data", "check", "--data-root", "ds"]),
]


@pytest.mark.parametrize("old, new", DEPRECATED, ids=lambda argv: " ".join(argv))
def test_old_spellings_still_work_and_warn(old, new, capsys):
    assert _parse(old) == _parse(new)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is deprecated, use" in err[0] and err[0].startswith(f"fcnseg {' '.join(new[:-2])}")


def test_a_root_given_both_ways_must_agree(capsys):
    with pytest.raises(SystemExit):
        _parse(["data", "check", "--data-root", "a", "b"])
    assert "name different values" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [["segment"], ["eval"], ["train"], ["weights", "download"]],
    ids=" ".join,
)
def test_quiet_and_no_progress_are_one_switch(argv, capsys):
    assert _parse([*argv, "--quiet"]) == _parse([*argv, "--no-progress"])
    assert _parse([*argv, "--quiet"])["quiet"] is True and _parse(argv)["quiet"] is False
    assert capsys.readouterr().err == ""


def _help(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit):
        main([*argv, "--help"])
    return " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize(
    "argv, flags",
    [
        (["segment"], ["-o OUT_DIR, --output OUT_DIR", "--quiet, --no-progress"]),
        (["export"], ["-o FILE, --output FILE"]),
        (["eval"], ["-o FILE.json, --output FILE.json", "--quiet, --no-progress", "--dataset", "--data-root"]),
        (["train"], ["-o RUN_DIR, --output RUN_DIR", "--quiet, --no-progress", "--dataset", "--data-root"]),
        (["data", "check"], ["--dataset", "--data-root DATA_ROOT"]),
        (["weights", "download"], ["--quiet, --no-progress"]),
    ],
    ids=["segment", "export", "eval", "train", "data check", "weights download"],
)
def test_help_shows_the_new_grammar_only(argv, flags, capsys):
    text = _help(argv, capsys)
    for flag in flags:
        assert flag in text, flag
    assert "--output-dir" not in text and "[root]" not in text.lower()  # the old spellings are hidden
    assert ("detected from --data-root" in text) == ("--dataset" in flags)


# --- detection ---------------------------------------------------------------------------------------------------


def test_detects_a_folder_dataset(tmp_path):
    make_folder(tmp_path, ["bg", "a"], {"val": [(8, 8)]})
    (tmp_path / "annotations").mkdir()  # classes.txt decides, even beside COCO-looking files
    (tmp_path / "annotations" / "instances_val.json").write_text("{}")
    found = detect_dataset(tmp_path)
    assert (found.kind, found.describe()) == ("folder", "dataset: detected folder (classes.txt)")


def test_detects_coco_2017_with_its_splits(tmp_path):
    make_coco(tmp_path, splits=("train", "val"))
    found = detect_dataset(tmp_path)
    assert found.kind == "coco" and found.splits == ("train", "val")
    assert found.describe() == (
        "dataset: detected coco (annotations/instances_train2017.json, annotations/instances_val2017.json)"
    )


@pytest.mark.parametrize("style, split, file", [("cvat", "default", "annotations/instances_default.json"),
                                                ("labelstudio", "result", "result.json")])  # fmt: skip
def test_detects_coco_exports(tmp_path, style, split, file):
    make_coco_export(tmp_path, style)
    (tmp_path / "notes.json").write_text('{"not": "coco"}')  # other JSON is not taken for an annotation file
    found = detect_dataset(tmp_path)
    assert (found.kind, found.splits, found.describe()) == ("coco", (split,), f"dataset: detected coco ({file})")


def test_detects_a_label_studio_json_export_and_data_check_reads_it(capsys):
    """The export file itself is the root (a list of tasks); label-studio-converter's real test export."""
    export = Path(__file__).parents[1] / "realfiles" / "labelstudio_json" / "data_polygon.json"
    found = detect_dataset(export)
    assert (found.kind, found.describe()) == ("label-studio", "dataset: detected label-studio (data_polygon.json)")
    main(["data", "check", "--data-root", str(export)])
    assert "dataset: detected label-studio" in capsys.readouterr().err


@pytest.mark.parametrize("below", ["", "VOCdevkit", "VOCdevkit/VOC2012"])
def test_detects_voc_from_the_devkit_or_inside_it(tmp_path, below):
    make_voc(tmp_path)
    found = detect_dataset(tmp_path / below)
    assert found.kind == "voc"
    assert str(found.evidence[0]).endswith("ImageSets/Segmentation")


def test_an_unknown_folder_says_what_was_looked_for(tmp_path, capsys):
    (tmp_path / "photos").mkdir()
    for argv in (["data", "check", "--data-root"], ["train", "--data-root"], ["eval", "--weights", "none",
                                                                                 "--data-root"]):  # fmt: skip
        assert main([*argv, str(tmp_path)]) == 1
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and "cannot tell which kind of dataset" in err and "classes.txt" in err, err
        assert "--dataset" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == [tmp_path / "photos"]  # train wrote nothing


@pytest.mark.parametrize("style", ["cvat", "labelstudio"])
def test_data_check_on_a_coco_export_without_dataset(tmp_path, style, capsys):
    make_coco_export(tmp_path, style)
    assert main(["data", "check", "--data-root", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    file = "annotations/instances_default.json" if style == "cvat" else "result.json"
    assert captured.err.strip() == f"dataset: detected coco ({file})"
    assert "annotations: tree 2  car 3  unused 0" in captured.out and "classes.txt" not in captured.out


def test_data_check_of_a_voc_devkit_says_so(tmp_path, capsys):
    make_voc(tmp_path)
    assert main(["data", "check", "--data-root", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0] == "dataset: detected voc (VOCdevkit/VOC2012/ImageSets/Segmentation)"
    assert err[1].startswith("fcnseg data: error:") and "folder datasets and COCO" in err[1]


def test_eval_detects_a_folder_dataset_and_writes_to_output(tmp_path, checkpoint, capsys):
    make_folder(tmp_path / "f", THREE_CLASSES, {"val": [(12, 16), (12, 16)]})
    out = tmp_path / "r.json"
    argv = ["eval", "--data-root", str(tmp_path / "f"), "--weights", str(checkpoint), "--size", "12", "--no-plot",
            "--workers", "0", "--quiet", "-o", str(out)]  # fmt: skip
    assert main(argv) == 0
    assert "dataset: detected folder (classes.txt)" in capsys.readouterr().err
    r = json.loads(out.read_text())
    assert (r["dataset"], r["split"], r["num_images"]) == ("folder", "val", 2)


def test_eval_takes_the_one_split_of_a_coco_export(tmp_path, capsys):
    make_coco_export(tmp_path, "cvat")
    # the export has 4 categories (background, tree, car, unused): a 21-class model is refused after the split is
    # found, which is all this test needs to see (scoring is the eval tests' job)
    assert main(["eval", "--data-root", str(tmp_path), "--weights", "none", "--no-plot", "--workers", "0"]) == 1
    err = capsys.readouterr().err
    assert "dataset: detected coco (annotations/instances_default.json)" in err
    assert "split: default, the only one" in err and "predicts 21 classes but the coco dataset" in err
