"""Training from a real Label Studio and closing the loop: annotations submitted through its API are pulled, read
back as the masks that were drawn, trained on, and the server swaps to the new model only when it scores better.

Kept small (64 px shapes, one epoch on the heads): the point is the loop, not the model. The served model at the
start predicts "square" everywhere (a checkpoint whose last layer says so), which any fine-tuning beats; a run
that cannot change the weights (lr 0) gives a model exactly as good as the served one, which is not swapped.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from labelstudio_shapes import BRUSH_CONFIG, LABELS, brush_result, shapes_photos
from waiting import wait_until

from fcnseg.cli import main
from fcnseg.data import LabelStudioSegmentation
from fcnseg.data.check import check_labelstudio
from fcnseg.data.labelstudio import is_val_task
from fcnseg.labelstudio.pull import pull_project
from fcnseg.models import fcn_resnet50

pytestmark = pytest.mark.slow
SRC = Path(__file__).resolve().parents[2] / "src"
TRAIN = "--epochs 1 --base-size 64 --crop-size 64 -b 2 --workers 0 --freeze-backbone"


def _project(label_studio, tmp_path: Path, n: int, seed: int) -> tuple[int, dict[int, np.ndarray]]:
    """A brush project with ``n`` uploaded shapes photos, each annotated with its true mask through the API; more
    photos are added until at least two tasks are in the validation split (which ones are depends on the ids the
    shared server hands out). Returns the project and each task's true mask."""
    project = label_studio.create_project(f"shapes {seed}", BRUSH_CONFIG)
    truth: dict[int, np.ndarray] = {}
    batch = 0
    while len(truth) < n or sum(map(is_val_task, truth)) < 2:
        photos = shapes_photos(tmp_path / f"photos{seed}-{batch}", n if not truth else 2, seed=seed * 100 + batch)
        files = [("files", (p.name, p.read_bytes(), "image/png")) for p, _ in photos]
        label_studio.api("POST", f"/api/projects/{project}/import", files=files)
        masks = {p.name: m for p, m in photos}
        for task in label_studio.tasks(project):
            name = task["data"]["image"].rsplit("/", 1)[-1].split("-", 1)[-1]  # /data/upload/P/<uuid>-<name>
            if task["id"] not in truth and name in masks:
                result = brush_result(masks[name])
                label_studio.api("POST", f"/api/tasks/{task['id']}/annotations", json={"result": result})
                truth[task["id"]] = masks[name]
        batch += 1
    return project, truth


def test_a_pulled_project_reads_back_as_the_annotations_submitted_and_trains(label_studio, tmp_path, monkeypatch):
    project, truth = _project(label_studio, tmp_path, 6, seed=1)
    tasks = label_studio.tasks(project)
    skipped, *_ = [t for t in tasks if t["id"] in truth]
    label_studio.api("POST", f"/api/tasks/{skipped['id']}/annotations", json={"result": [], "was_cancelled": True})
    label_studio.api("POST", f"/api/projects/{project}/import", json=[{"data": {"image": "/data/upload/none.png"}}])

    pulled = pull_project(label_studio.url, label_studio.token, project, tmp_path / "pulled")
    dataset = LabelStudioSegmentation(pulled.export, "all")
    assert dataset.categories == ["__background__", *LABELS]  # from the project's labelling config
    assert pulled.fetched == len(truth) and len(dataset) == len(truth)  # the export holds annotated tasks only
    for i in range(len(dataset)):
        image, mask = dataset[i]
        assert np.array_equal(np.array(mask), truth[dataset.task_id(i)])  # the latest, not the skipped one
        assert image.size == mask.size
    report = check_labelstudio(dataset, pixels=True)
    assert report.ok and report.skipped_annotations == 1

    monkeypatch.setenv("LABEL_STUDIO_API_KEY", label_studio.token)
    out = tmp_path / "run"
    args = ["train", "--label-studio", label_studio.url, "--project", str(project), "--output-dir", str(out)]
    assert main([*args, *TRAIN.split(), "--weights-backbone", "none", "--no-progress", "--json"]) == 0
    best = torch.load(out / "best.pth", weights_only=True, map_location="cpu")
    assert best["categories"] == ["__background__", *LABELS] and best["config"]["dataset"] == "label-studio"


def _all_square(path: Path) -> Path:
    """A checkpoint of the project's classes whose last layer predicts "square" everywhere: any training beats it."""
    torch.manual_seed(0)
    model = fcn_resnet50(num_classes=3, aux_loss=False)
    with torch.no_grad():
        model.classifier[-1].weight.zero_()
        model.classifier[-1].bias.copy_(torch.tensor([0.0, 0.0, 3.0]))
    torch.save({"model": model.state_dict(), "categories": ["__background__", *LABELS]}, path)
    return path


class Server:
    """``fcnseg serve`` with the training loop and an API key, in a process of its own, as a user starts it."""

    def __init__(self, label_studio, weights: Path, runs: Path, project: int, train: str, port: int, key: str) -> None:
        self.url, self.key = f"http://127.0.0.1:{port}", key
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
               "LABEL_STUDIO_URL": label_studio.url, "LABEL_STUDIO_API_KEY": label_studio.token}  # fmt: skip
        command = [sys.executable, "-m", "fcnseg", "serve", "--weights", str(weights), "--size", "64", "--port",
                   str(port), "--device", "cpu", "--threads", "1", "--max-batch", "1", "--api-key", self.key,
                   "--label-studio-runs", str(runs), "--label-studio-project", str(project),
                   "--label-studio-train", train]  # fmt: skip
        self.log = runs.parent / f"serve-{port}-{weights.parent.name}.log"
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        wait_until(lambda: self.proc.poll() is not None or self._ready(), timeout=300, interval=0.2)
        assert self.proc.poll() is None, self.log.read_text()

    def _ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/readyz").status_code == 200
        except httpx.TransportError:
            return False

    def versions(self) -> dict:
        r = httpx.get(f"{self.url}/label-studio/versions", auth=("label-studio", self.key))
        assert r.status_code == 200, r.text
        return r.json()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=60)


def _connect(label_studio, server: Server, project: int) -> int:
    """fcnseg as the project's model, as a user connects it in the project's Model settings (Basic auth)."""
    return label_studio.api("POST", "/api/ml", json={
        "url": f"{server.url}/label-studio", "project": project, "title": "fcnseg",
        "auth_method": "BASIC_AUTH", "basic_auth_user": "label-studio", "basic_auth_pass": server.key,
    })["id"]  # fmt: skip


def _train(label_studio, server: Server, backend: int) -> dict:
    """Label Studio's *Start Training* (its START_TRAINING webhook to fcnseg); /versions once the run is decided."""
    label_studio.api("POST", f"/api/ml/{backend}/train", json={})
    wait_until(lambda: server.versions()["training"]["outcome"] is not None, timeout=900, interval=0.5)
    return server.versions()


def _predicted_versions(label_studio, project: int) -> set[str]:
    """Label Studio asks fcnseg for predictions of every task: the model_version of each task's latest one."""
    label_studio.api("POST", "/api/dm/actions", params={"id": "retrieve_tasks_predictions", "project": project},
                     json={"selectedItems": {"all": True, "excluded": []}})  # fmt: skip
    tasks = label_studio.tasks(project)
    return {max(t["predictions"], key=lambda p: p["id"])["model_version"] for t in tasks}


def test_the_loop_swaps_to_a_better_model_and_keeps_the_served_one_otherwise(label_studio, tmp_path, free_port):
    project, _ = _project(label_studio, tmp_path, 10, seed=2)
    runs, port, key = tmp_path / "runs", free_port(), secrets.token_hex(16)
    first = _all_square(tmp_path / "served.pth")
    server = Server(label_studio, first, runs, project, f"{TRAIN} --lr 0.05", port, key)
    try:
        backend = _connect(label_studio, server, project)
        before = server.versions()["served"]
        assert _predicted_versions(label_studio, project) == {before}
        status = _train(label_studio, server, backend)
        assert "swapped" in status["training"]["outcome"], status
        new = status["versions"][-1]
        assert new["served"] and new["swapped"] and status["served"] == new["version"] != before
        assert new["miou"] > new["served_miou"] and new["run"] == str(runs / "run-0001")
        assert _predicted_versions(label_studio, project) == {new["version"]}  # Label Studio sees the new model
        models = httpx.get(f"{server.url}/v1/models", headers={"Authorization": f"Bearer {server.key}"}).json()
        assert models["models"][0]["model_version"] == new["version"]
    finally:
        server.stop()

    # the swapped model is served again (the same address and key: Label Studio's connection stays); a run that
    # cannot change its weights is not better: kept
    server = Server(label_studio, Path(new["weights"]), runs, project, f"{TRAIN} --lr 0 --freeze-bn", port, key)
    try:
        status = _train(label_studio, server, backend)
        last = status["versions"][-1]
        assert "kept the served model" in status["training"]["outcome"], status
        assert not last["swapped"] and last["miou"] == last["served_miou"] and last["run"] == str(runs / "run-0002")
        assert status["served"] == new["version"] and _predicted_versions(label_studio, project) == {new["version"]}
        log = Path(status["training"]["log"]).read_text()
        assert "--resume" not in log and "verdict:" in log
    finally:
        server.stop()
    recorded = json.loads((runs / "versions.json").read_text())
    assert [v["swapped"] for v in recorded][-2:] == [True, False]
