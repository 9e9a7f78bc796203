"""A missing extra is one line naming the extra to install, said before any work: modules are hidden (an import
of them refused, as on a machine without the extra) and each command that needs one is run."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from fcnseg.cli import main
from fcnseg.cli._extras import EXTRAS

ROOT = Path(__file__).resolve().parents[2]
IMPORT_NAMES = {
    "scikit-image": "skimage", "python-multipart": "multipart", "fastapi-offline": "fastapi_offline",
    "pillow-heif": "pillow_heif", "pillow-avif-plugin": "pillow_avif", "universal-pathlib": "upath",
}  # fmt: skip


def _pyproject_extras() -> dict[str, set[str]]:
    tomllib = pytest.importorskip("tomllib", reason="Python 3.10 has no tomllib")
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    names = lambda reqs: {IMPORT_NAMES.get(n, n) for n in (re.split(r"[<>=\[ ]", r, maxsplit=1)[0] for r in reqs)}  # noqa: E731
    return {extra: names(reqs) for extra, reqs in extras.items() if extra != "dev"}


def test_the_table_of_extras_is_pyprojects():
    assert {extra: set(modules) for extra, modules in EXTRAS.items()} == _pyproject_extras()


def test_readme_names_every_extra_and_what_it_is_for():
    readme = (ROOT / "README.md").read_text()
    for extra in _pyproject_extras():
        assert re.search(rf"^\| `{extra}` \| .+ \|", readme, re.M), extra


def hide(monkeypatch, *modules: str) -> None:
    """Imports of ``modules`` (and their submodules) fail as if they were not installed."""
    for name in list(sys.modules):
        if name.partition(".")[0] in modules:
            monkeypatch.delitem(sys.modules, name)
    for name in modules:
        monkeypatch.setitem(sys.modules, name, None)


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    return err


# The whole export, in a fresh interpreter whose finder refuses onnxscript (as tests/serve/test_serve_extra.py
# hides modules): the line comes before torch is even imported, so before any model is built.
EXPORT_SCRIPT = r"""
import importlib.abc, sys
class Hide(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.partition(".")[0] == "onnxscript":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, Hide())
from fcnseg.cli import main
code = main(["export", "--weights", "none", "-o", sys.argv[1]])
print(code, "torch" in sys.modules)
"""


def test_export_without_the_export_extra_is_one_line_before_any_work(tmp_path):
    out = tmp_path / "m.onnx"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run([sys.executable, "-c", EXPORT_SCRIPT, str(out)], env=env, capture_output=True, text=True)
    assert run.stdout.split() == ["1", "False"], run.stderr[-2000:]
    assert run.stderr == "fcnseg export: error: ONNX export needs onnxscript: pip install 'fcnseg[export]'\n"
    assert not out.exists()


def test_torchscript_export_needs_no_extra(tmp_path, monkeypatch, capsys):
    hide(monkeypatch, "onnx", "onnxscript", "onnxruntime")
    argv = ["export", "--format", "torchscript", "--weights", str(tmp_path / "no.pth"), "-o", str(tmp_path / "m.pt")]
    assert main(argv) == 1
    assert "no.pth: no such checkpoint file" in _one_line(capsys)  # got past the extras, to the weights


@pytest.mark.parametrize(
    "flags, hidden, line",
    [
        (["--backend", "openvino"], ("openvino",), "--backend openvino needs openvino: pip install 'fcnseg[openvino]'"),
        (["--backend", "onnxruntime"], ("onnxruntime", "onnx"),
         "--backend onnxruntime needs onnxruntime, onnx: pip install 'fcnseg[speed]'"),
        (["--precision", "int8"], ("torchao",), "--precision int8 needs torchao: pip install 'fcnseg[speed]'"),
        (["--source", "0"], ("av",), "a live stream needs av: pip install 'fcnseg[video]'"),
    ],
    ids=["openvino", "onnxruntime", "int8", "live"],
)  # fmt: skip
def test_segment_says_which_extra_before_reading_any_input(flags, hidden, line, tmp_path, monkeypatch, capsys):
    hide(monkeypatch, *hidden)
    out = tmp_path / "out"
    argv = ["segment", str(tmp_path / "missing.jpg"), "-o", str(out), "--weights", "none"]
    assert main([*argv, *flags]) == 1
    assert _one_line(capsys) == f"fcnseg segment: error: {line}"
    assert not out.exists()


def test_a_video_input_without_pyav_stops_before_the_model(tmp_path, monkeypatch, capsys):
    hide(monkeypatch, "av")
    (tmp_path / "clip.mp4").write_bytes(b"not read")
    out = tmp_path / "out"
    # the weights file does not exist: reaching the model would fail on it instead
    assert main(["segment", str(tmp_path / "clip.mp4"), "-o", str(out), "--weights", str(tmp_path / "no.pth")]) == 1
    assert (
        _one_line(capsys)
        == f"fcnseg segment: error: {tmp_path / 'clip.mp4'} (a video) needs av: pip install 'fcnseg[video]'"
    )
    assert not (out / "summary.csv").exists()


@pytest.mark.parametrize(
    "command",
    [["data", "check", "--json"], ["train", "-o", "{run}"], ["eval", "--weights", "none", "-o", "{run}"]],
    ids=lambda c: c[0],
)
def test_coco_without_pycocotools(command, tmp_path, monkeypatch, capsys):
    from seg_datasets import make_coco_export

    make_coco_export(tmp_path / "export", "cvat")
    hide(monkeypatch, "pycocotools")
    argv = [a.replace("{run}", str(tmp_path / "run")) for a in command]
    assert main([*argv, "--data-root", str(tmp_path / "export")]) == 1
    err = capsys.readouterr().err.strip().splitlines()  # what was detected (eval: the split too), then the error
    assert err[0] == "dataset: detected coco (annotations/instances_default.json)"
    assert err[-1].startswith(f"fcnseg {command[0]}: error: ") and err[-1].endswith(" pip install 'fcnseg[coco]'")
    assert "Traceback" not in "\n".join(err) and not (tmp_path / "run").exists()


def test_a_safetensors_checkpoint_without_safetensors(tmp_path, monkeypatch, capsys):
    hide(monkeypatch, "safetensors")
    (tmp_path / "m.safetensors").write_bytes(b"\0" * 16)
    assert main(["export", "--format", "torchscript", "--weights", str(tmp_path / "m.safetensors"), "-o",
                 str(tmp_path / "m.pt")]) == 1  # fmt: skip
    assert _one_line(capsys).endswith("m.safetensors: reading .safetensors needs safetensors: pip install "
                                      "'fcnseg[safetensors]'")  # fmt: skip


def test_a_missing_extra_met_part_way_is_one_line_too(monkeypatch, capsys):
    """The net under the checks: a module an extra installs, imported by code no check foresaw."""
    import fcnseg.cli.models as models

    def needs_openvino(args):
        import openvino  # noqa: F401

    hide(monkeypatch, "openvino")
    monkeypatch.setattr(models, "_models", needs_openvino)
    assert main(["models"]) == 1
    assert _one_line(capsys) == "fcnseg models: error: openvino is missing: pip install 'fcnseg[openvino]'"
