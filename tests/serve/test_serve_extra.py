"""``pip install 'fcnseg[serve]'`` alone serves every answer format: a fresh interpreter in which the modules of every
other extra (and of the dev tools) cannot be imported runs the server and asks for each format over HTTP."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
IMPORT_NAMES = {"scikit-image": "skimage"}  # distributions whose import name is not their own


def hidden_modules() -> list[str]:
    """Import names of everything pyproject's other extras (dev included) install and the serve extra does not."""
    tomllib = pytest.importorskip("tomllib", reason="Python 3.10 has no tomllib")
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]

    def names(reqs: list[str]) -> set[str]:
        return {re.split(r"[<>=\[ ]", r, maxsplit=1)[0].lower() for r in reqs}

    others = set().union(*(names(reqs) for extra, reqs in extras.items() if extra != "serve"))
    return sorted(IMPORT_NAMES.get(p, p).replace("-", "_") for p in others - names(extras["serve"]))


SCRIPT = r"""
import importlib.abc, io, json, sys, threading, urllib.request
HIDDEN = set(sys.argv[1].split(","))

class Hide(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.partition(".")[0] in HIDDEN:
            raise ModuleNotFoundError(f"No module named {name!r} (hidden: not in the serve extra)", name=name)

sys.meta_path.insert(0, Hide())
import numpy as np, torch, uvicorn
from PIL import Image
from pycocotools import mask as coco_mask
from fcnseg.models import fcn_resnet50
from fcnseg.predict import Segmenter
from fcnseg.serve import ServeConfig, create_app, uvicorn_options

torch.manual_seed(0)
model = fcn_resnet50(weights=None, num_classes=3, aux_loss=False)
segmenter = Segmenter(model, None, device="cpu", size="native", categories=["a", "b", "c"])
config = ServeConfig(warmup_side=32, max_batch=1)
server = uvicorn.Server(uvicorn.Config(create_app(segmenter, config=config), host="127.0.0.1", port=0,
                                       log_level="warning", **uvicorn_options(config)))
threading.Thread(target=server.run, daemon=True).start()
while not server.started:
    threading.Event().wait(0.05)
url = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
while True:
    try:
        urllib.request.urlopen(url + "/readyz")
        break
    except Exception:
        threading.Event().wait(0.05)
image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (24, 32, 3), dtype=np.uint8))
buf = io.BytesIO()
image.save(buf, "PNG")
want = segmenter.predict(image).mask
for fmt in ("json", "png", "overlay"):
    req = urllib.request.Request(f"{url}/v1/segment?format={fmt}", data=buf.getvalue(),
                                 headers={"content-type": "image/png"})
    body = urllib.request.urlopen(req).read()
    if fmt == "json":
        got = np.zeros_like(want)
        for c in json.loads(body)["classes"]:
            rle = {"size": c["segmentation"]["size"], "counts": c["segmentation"]["counts"].encode()}
            got[coco_mask.decode(rle).astype(bool)] = c["index"]
    else:
        got = Image.open(io.BytesIO(body))
        got = np.asarray(got) if fmt == "png" else np.asarray(got.convert("RGB"))
    assert (np.array_equal(got, want) if fmt != "overlay" else got.shape == (24, 32, 3)), fmt
    print(fmt, "ok")
still_hidden = sorted(m for m in sys.modules if m.partition(".")[0] in HIDDEN)
assert not still_hidden, still_hidden
server.should_exit = True
"""


@pytest.mark.slow
def test_every_format_with_only_the_serve_extra():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}  # fmt: skip
    hidden = hidden_modules()
    assert {"pytest", "httpx", "onnxruntime", "matplotlib", "torchao"} <= set(hidden)
    run = subprocess.run([sys.executable, "-c", SCRIPT, ",".join(hidden)], env=env, capture_output=True, text=True,
                         timeout=600)  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.split("\n")[:3] == ["json ok", "png ok", "overlay ok"]
