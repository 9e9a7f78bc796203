"""fcnseg as Label Studio's model, end to end with the real thing: a Label Studio project gets photos, ``fcnseg
serve`` is connected as its ML backend (Basic auth, the server's API key as password), Label Studio is asked to
retrieve predictions, and what it stored, decoded by label-studio-sdk's own brush decoder, is ``fcnseg segment``'s
masks for the same files, pixel for pixel. Polygons are checked against the same masks after rasterising."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from label_studio_sdk.converter.brush import decode_rle
from label_studio_sdk.label_interface import LabelInterface
from PIL import Image, ImageDraw
from waiting import wait_until

from fcnseg.models import fcn_resnet50
from fcnseg.weights import sha256_file

httpx = pytest.importorskip("httpx")

ASSETS = Path(__file__).resolve().parents[2] / "src" / "fcnseg" / "assets"
PHOTOS = ("chelsea.jpg", "coffee.jpg", "astronaut.jpg")
CATEGORIES = ["background", "thing", "stuff"]
BRUSH = """<View>
  <Image name="image" value="$image"/>
  <BrushLabels name="tag" toName="image"><Label value="Thing"/><Label value="STUFF"/></BrushLabels>
</View>"""
POLYGONS = """<View>
  <Image name="image" value="$image"/>
  <PolygonLabels name="outline" toName="image"><Label value="thing"/></PolygonLabels>
</View>"""


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("photos")
    return [Path(shutil.copy(ASSETS / name, folder / name)) for name in PHOTOS]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A seeded random-init 3-class FCN; trained at 64 px (its ``base_size``), so every command runs it at 64."""
    torch.manual_seed(0)
    model = fcn_resnet50(num_classes=len(CATEGORIES), aux_loss=False)
    path = tmp_path_factory.mktemp("weights") / "model.pth"
    torch.save({"model": model.state_dict(), "categories": CATEGORIES, "config": {"base_size": 64}}, path)
    return path


def _cli_env(**extra: str) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", **extra}


@pytest.fixture(scope="module")
def segment_masks(photos, checkpoint, tmp_path_factory) -> dict[str, np.ndarray]:
    """``fcnseg segment``'s masks of the photos, by file name."""
    out = tmp_path_factory.mktemp("segment")
    cmd = [sys.executable, "-m", "fcnseg", "segment", *map(str, photos), "--weights", str(checkpoint), "-o",
           str(out), "--save", "mask", "--quiet"]  # fmt: skip
    done = subprocess.run(cmd, env=_cli_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return {p.name: np.array(Image.open(out / f"{p.stem}_mask.png")) for p in photos}


@pytest.fixture(scope="module")
def fcnseg_serve(label_studio, checkpoint, free_port, tmp_path_factory):
    """``fcnseg serve`` on 127.0.0.1 with an API key, fetching task images from the Label Studio under test."""
    key, port = secrets.token_hex(16), free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    env = _cli_env(LABEL_STUDIO_URL=label_studio.url, LABEL_STUDIO_API_KEY=label_studio.token)
    cmd = [sys.executable, "-m", "fcnseg", "serve", "--weights", str(checkpoint), "--port", str(port), "--api-key",
           key, "--threads", "1", "--device", "cpu"]  # fmt: skip
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        assert proc.poll() is None, f"fcnseg serve exited:\n{log.read_text()}"
        try:
            return httpx.get(f"{url}/readyz", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(ready, timeout=300, interval=0.2)
        yield url, key, log
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _project_with_predictions(label_studio, fcnseg_serve, photos, title: str, config: str) -> list[dict]:
    """A project with ``photos`` uploaded, fcnseg connected, predictions retrieved: its tasks."""
    url, key, _ = fcnseg_serve
    project = label_studio.create_project(title, config)
    files = [(f"file{i}", (p.name, p.read_bytes(), "image/jpeg")) for i, p in enumerate(photos)]
    label_studio.api("POST", f"/api/projects/{project}/import", files=files)
    label_studio.api("POST", "/api/ml", json={
        "url": f"{url}/label-studio", "project": project, "title": "fcnseg",
        "auth_method": "BASIC_AUTH", "basic_auth_user": "label-studio", "basic_auth_pass": key,
    })  # fmt: skip
    label_studio.api("POST", "/api/dm/actions", params={"id": "retrieve_tasks_predictions", "project": project},
                     json={"selectedItems": {"all": True, "excluded": []}})  # fmt: skip
    tasks = label_studio.tasks(project)
    assert len(tasks) == len(photos)
    return tasks


def _photo_name(task: dict) -> str:
    """The uploaded file's name: Label Studio stores ``/data/upload/<project>/<8 hex>-<name>``."""
    return task["data"]["image"].rsplit("/", 1)[-1].split("-", 1)[1]


def test_brush_predictions_are_fcnseg_segment_masks(label_studio, fcnseg_serve, photos, checkpoint, segment_masks):
    tasks = _project_with_predictions(label_studio, fcnseg_serve, photos, "fcnseg brush", BRUSH)
    version = f"model.pth-{sha256_file(checkpoint)[:12]}"
    for task in tasks:
        mask = segment_masks[_photo_name(task)]
        (stored,) = task["predictions"]
        assert stored["model_version"] == version
        assert 0.0 <= stored["score"] <= 1.0
        assert LabelInterface(BRUSH).validate_prediction(stored, return_errors=True) == []
        seen = np.zeros(mask.shape, bool)
        for region in stored["result"]:
            (label,) = region["value"]["brushlabels"]
            index = {"Thing": 1, "STUFF": 2}[label]  # the config's own spelling, matched case-insensitively
            h, w = region["original_height"], region["original_width"]
            alpha = decode_rle(region["value"]["rle"]).reshape(h, w, 4)[:, :, 3]
            assert np.array_equal(alpha == 255, mask == index) and not (alpha[alpha != 255]).any()
            assert 0.0 < region["score"] <= 1.0
            seen |= alpha == 255
        # every pixel of a class other than background is in a region; background is never sent
        assert np.array_equal(seen, mask != 0) and seen.any()


def test_polygon_predictions_outline_the_masks(label_studio, fcnseg_serve, photos, segment_masks):
    tasks = _project_with_predictions(label_studio, fcnseg_serve, photos, "fcnseg polygons", POLYGONS)
    for task in tasks:
        mask = segment_masks[_photo_name(task)]
        (stored,) = task["predictions"]
        assert LabelInterface(POLYGONS).validate_prediction(stored, return_errors=True) == []
        h, w = mask.shape
        drawn = Image.new("L", (w, h))
        for region in stored["result"]:
            assert region["value"]["polygonlabels"] == ["thing"]
            ImageDraw.Draw(drawn).polygon([(x / 100 * w, y / 100 * h) for x, y in region["value"]["points"]], 1, 1)
        drawn = np.array(drawn).astype(bool)
        truth = mask == 1
        iou = (drawn & truth).sum() / (drawn | truth).sum()
        assert iou > 0.9, f"{_photo_name(task)}: polygons cover the class with IoU {iou:.3f}"


def test_unmatched_classes_logged_once(label_studio, fcnseg_serve, photos):
    """The polygon config names no label for ``stuff``: the server says so once, however often it is asked."""
    _, _, log = fcnseg_serve
    _project_with_predictions(label_studio, fcnseg_serve, photos, "fcnseg polygons again", POLYGONS)
    lines = [line for line in log.read_text().splitlines() if "names no label for the classes" in line]
    assert len(lines) == 1 and "stuff" in lines[0]
