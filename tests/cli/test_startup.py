"""``fcnseg --help``, every command's ``--help``, ``fcnseg models`` and ``weights list`` answer without importing
torch (seconds of start-up; benchmarks/bench_startup.py measures it), and the choices the parsers repeat to stay
torch-free agree with the modules they come from."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from fcnseg.cli import build_parser

HEAVY = ("torch", "torchvision", "onnx", "onnxruntime", "openvino", "fastapi", "uvicorn", "matplotlib", "av", "ray")


def _commands(parser, prefix=()):
    """Every (sub)command's argv prefix, nested ones (``weights download``, ``data check``) included."""
    for action in parser._actions:
        if action.__class__.__name__ == "_SubParsersAction":
            for name, child in action.choices.items():
                yield (*prefix, name)
                yield from _commands(child, (*prefix, name))


# One interpreter runs them all (a fresh one each would cost a second apiece): after each, no heavy module is loaded.
SCRIPT = r"""
import contextlib, io, json, sys
from fcnseg.cli import main
heavy, report = json.loads(sys.argv[1]), {}
for argv in json.loads(sys.argv[2]):
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            main(argv)
        except SystemExit:
            pass
    report[" ".join(argv)] = sorted(m for m in heavy if m in sys.modules)
print(json.dumps(report))
"""


def test_help_and_listing_import_no_heavy_module(tmp_path):
    commands = [list(c) for c in _commands(build_parser())]
    assert ["segment"] in commands and ["weights", "download"] in commands and ["data", "check"] in commands
    argvs = [["--help"], *([*c, "--help"] for c in commands), ["models"], ["models", "--json"], ["weights", "list"]]
    env = {"TORCH_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    env.update({k: v for k, v in os.environ.items() if k in ("PYTHONPATH", "HOME")})
    run = subprocess.run(
        [sys.executable, "-c", SCRIPT, json.dumps(HEAVY), json.dumps(argvs)], env=env, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr[-2000:]
    report = json.loads(run.stdout)
    assert len(report) == len(argvs)
    assert {argv: loaded for argv, loaded in report.items() if loaded} == {}


def test_weights_list_is_the_models_table(capsys):
    from fcnseg.cli import main

    assert main(["weights", "list", "--json"]) == 0
    listed = capsys.readouterr().out
    assert main(["models", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == json.loads(listed)


def test_repeated_choices_agree_with_their_sources():
    from fcnseg.cli import speed
    from fcnseg.models import list_models
    from fcnseg.optimize import plans
    from fcnseg.predict import TTA_SCALES
    from fcnseg.weights import MODEL_WEIGHTS

    assert (speed.PRECISIONS, speed.BACKENDS) == (plans.PRECISIONS, plans.BACKENDS)
    assert list(MODEL_WEIGHTS) == list_models()
    segment = build_parser()._subparsers._group_actions[0].choices["segment"]
    assert f"default: {','.join(map(str, TTA_SCALES))}," in segment.format_help().replace("\n", " ")


CACHE_SCRIPT = r"""
import json, os, sys
from fcnseg.weights import checkpoints_dir
def each():
    out = []
    for env in json.loads(sys.argv[1]):
        for k in ("TORCH_HOME", "XDG_CACHE_HOME"):
            os.environ.pop(k, None)
        os.environ.update(env)
        out.append(str(checkpoints_dir()))
    return out
before = each()
assert "torch" not in sys.modules
import torch
print(json.dumps([before, each()]))
"""


def test_cache_folder_without_torch_is_torch_hubs(tmp_path):
    """The checkpoint cache worked out before torch is imported is the one torch.hub.get_dir() names after."""
    envs = [{}, {"XDG_CACHE_HOME": "/x/c"}, {"TORCH_HOME": "/t/home"}, {"TORCH_HOME": "~/th", "XDG_CACHE_HOME": "/x"}]
    base = {k: v for k, v in os.environ.items() if k in ("PYTHONPATH", "PATH")}
    run = subprocess.run(
        [sys.executable, "-c", CACHE_SCRIPT, json.dumps(envs)], env={**base, "HOME": str(tmp_path)},
        capture_output=True, text=True,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    before, after = json.loads(run.stdout)
    assert before == after
    assert before[0] == str(tmp_path / ".cache/torch/hub/checkpoints") and before[2] == "/t/home/hub/checkpoints"
