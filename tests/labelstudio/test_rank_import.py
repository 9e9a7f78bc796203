"""``fcnseg rank``'s tasks JSON imports into the real Label Studio: tasks in rank order, pre-annotations attached."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
from checkpoints import THREE_CLASSES, write_checkpoint
from label_studio_sdk.converter.brush import decode_rle
from PIL import Image

from fcnseg.weights import sha256_file


def test_ranked_tasks_import_with_pre_annotations(label_studio, tmp_path):
    checkpoint = write_checkpoint(tmp_path / "random3.pth", THREE_CLASSES)
    photos = []
    for i in range(4):
        photos.append(tmp_path / f"photo{i}.png")
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (24, 32, 3), dtype=np.uint8)).save(photos[-1])
    out = tmp_path / "ranked"
    cmd = [sys.executable, "-m", "fcnseg", "rank", *map(str, photos), "-o", str(out), "--weights", str(checkpoint),
           "--size", "32", "--quiet"]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    tasks = json.loads((out / "tasks.json").read_text())

    project = label_studio.create_project("fcnseg rank", (out / "label_config.xml").read_text())
    label_studio.api("POST", f"/api/projects/{project}/import", json=tasks)
    stored = label_studio.tasks(project)  # in id order: the order of the file, most doubtful first
    assert [t["data"]["image"] for t in stored] == [t["data"]["image"] for t in tasks]
    doubts = [t["data"]["fcnseg_doubt"] for t in stored]
    assert doubts == sorted(doubts, reverse=True)
    version = f"random3.pth-{sha256_file(checkpoint)[:12]}"
    for task, sent in zip(stored, tasks, strict=True):
        (prediction,) = task["predictions"]  # the pre-annotation, as Label Studio shows it
        assert prediction["model_version"] == version and prediction["score"] == sent["predictions"][0]["score"]
        assert prediction["result"] == sent["predictions"][0]["result"]
        with Image.open(task["data"]["image"]) as im:
            shape = (im.height, im.width)
        for region in prediction["result"]:  # Label Studio's own decoder reads masks of the image's size
            alpha = decode_rle(region["value"]["rle"]).reshape(*shape, 4)[:, :, 3]
            assert (alpha == 255).any()
