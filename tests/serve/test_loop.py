"""The labelling loop's machinery without Label Studio: one run at a time, resuming an interrupted run in its own
folder, the swap decision and its record, the atomic swap between batches, hostile webhook bodies, and scoring a
model whose classes are named differently. (tests/labelstudio/test_loop.py runs the whole loop against a real
Label Studio.)"""

from __future__ import annotations

import json
import socket
import threading
from pathlib import Path
from types import SimpleNamespace

import torch
from fastapi.testclient import TestClient

from fcnseg.serve import ServeConfig, create_app
from fcnseg.serve.finetune import ClassRemap, Job
from fcnseg.serve.loop import MAX_WEBHOOK_BYTES, TrainingLoop, add_loop_routes
from fcnseg.serve.swap import ServedModel, Version


class FakeSegmenter:
    """Stands for a Segmenter: answers each image with its own name; ``gate`` holds a batch until the test says."""

    def __init__(self, name: str, categories: tuple[str, ...] = ("background", "cat")) -> None:
        self.name, self.categories, self.model_name = name, list(categories), "fake"
        self.gate, self.started = threading.Event(), threading.Event()
        self.gate.set()
        self.weights = SimpleNamespace(source=f"{name}.pth")

    def predict_batch(self, images: list) -> list:
        self.started.set()
        assert self.gate.wait(timeout=30), "test gate never opened"
        return [SimpleNamespace(name=self.name) for _ in images]


class HoldingServer:
    """A TCP server that accepts connections and answers nothing until released: a Label Studio that hangs, so a
    run stays in progress for as long as the test needs, whatever the machine's speed."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.connected, self.release = threading.Event(), threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        conn, _ = self.sock.accept()
        self.connected.set()
        self.release.wait(timeout=120)
        conn.close()  # the pull fails: the run ends, reported as failed
        self.sock.close()


def _loop(tmp_path: Path, url: str, served: ServedModel | None = None, **kw) -> TrainingLoop:
    served = served or ServedModel(FakeSegmenter("old"), Version("fake-old", "old.pth"))
    job = Job(url, 7, "fcn_resnet50", "old.pth", 64, ["--epochs", "1"])
    return TrainingLoop(served, tmp_path / "runs", job, load=lambda path: FakeSegmenter("new"), **kw)


def _client(loop: TrainingLoop) -> TestClient:
    app = create_app(loop.served, config=ServeConfig(warmup=False))
    add_loop_routes(app, loop)
    return TestClient(app)


def _closed_port_url() -> str:
    with socket.create_server(("127.0.0.1", 0)) as s:
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def test_one_run_at_a_time_and_a_failed_run_says_why(tmp_path, monkeypatch):
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", "key")
    hanging = HoldingServer()
    loop = _loop(tmp_path, hanging.url)
    with _client(loop) as client:
        start = {"action": "START_TRAINING", "project": {"id": 7, "title": "shapes"}}
        r = client.post("/label-studio/webhook", json=start)
        assert r.status_code == 201 and r.json() == {"status": "started", "run": str(tmp_path / "runs/run-0001")}
        assert hanging.connected.wait(timeout=120)  # the run is pulling: in progress until released
        r = client.post("/label-studio/webhook", json=start)
        assert r.status_code == 200 and r.json() == {
            "status": "already training",
            "run": str(tmp_path / "runs/run-0001"),
        }
        assert client.get("/label-studio/versions").json()["training"]["state"] == "training"
        other = client.post("/label-studio/webhook", json={**start, "project": {"id": 8}}).json()["status"]
        assert other == "ignored: this server trains on project 7, not 8"
        hanging.release.set()
        loop.wait(timeout=120)
        status = client.get("/label-studio/versions").json()
    assert status["training"]["state"] == "idle" and status["training"]["outcome"].startswith("failed (exit 1)")
    assert any(f"Label Studio: {hanging.url}/api/projects/7" in line for line in status["training"]["log_tail"])
    assert status["served"] == "fake-old" and [v["version"] for v in status["versions"]] == ["fake-old"]
    job = json.loads((tmp_path / "runs/run-0001/job.json").read_text())
    assert job["weights"] == "old.pth" and "key" not in json.dumps(job)  # the API key is never written


def test_an_interrupted_run_continues_in_its_own_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", "key")
    run = tmp_path / "runs" / "run-0003"
    run.mkdir(parents=True)
    (run / "last.pth").write_bytes(b"a saved step")
    url = _closed_port_url()
    (run / "job.json").write_text(json.dumps({**Job(url, 7, "fcn_resnet50", "then.pth", 64).__dict__}))
    loop = _loop(tmp_path, url)
    code, answer = loop.start("test")
    loop.wait(timeout=120)
    assert code == 201 and answer["run"] == str(run)
    assert json.loads((run / "job.json").read_text())["weights"] == "then.pth"  # its own settings, kept
    assert (run / "last.pth").read_bytes() == b"a saved step"
    (run / "verdict.json").write_text("{}")  # decided: the next trigger starts a new folder
    assert loop._interrupted() is None and loop._new_run() == tmp_path / "runs" / "run-0004"


def _names(results: list) -> list[str]:
    return [r.name for r in results]


class _Ended:
    def wait(self) -> int:
        return 0


def test_the_verdict_decides_the_swap_and_every_version_is_recorded(tmp_path):
    served = ServedModel(FakeSegmenter("old"), Version("fake-old", "old.pth"))
    swapped = []
    loop = _loop(tmp_path, "http://ls", served, on_swap=swapped.append)
    for n, (better, miou) in enumerate([(False, 0.2), (True, 0.6)], 1):
        run = tmp_path / "runs" / f"run-{n:04d}"
        run.mkdir(parents=True)
        (run / "best.pth").write_bytes(f"weights {n}".encode())
        verdict = {"better": better, "miou": miou, "served_miou": 0.4, "reason": f"reason {n}"}
        (run / "verdict.json").write_text(json.dumps(verdict))
        loop._finish(_Ended(), run)
        if not better:
            assert _names(served.predict_batch([1])) == ["old"] and not swapped
    assert _names(served.predict_batch([1])) == ["new"] and len(swapped) == 1
    status = loop.status()
    assert status["served"] == served.version.version != "fake-old"
    assert [(v["swapped"], v["served"], v["miou"]) for v in status["versions"]] == [
        (None, False, None), (False, False, 0.2), (True, True, 0.6)]  # fmt: skip
    again = _loop(tmp_path, "http://ls", served)  # a restarted server reads the record
    assert [v.version for v in again.history] == [v["version"] for v in status["versions"]]


def test_a_swap_lets_the_running_batch_finish_on_the_old_model():
    old, new = FakeSegmenter("old"), FakeSegmenter("new")
    served = ServedModel(old, Version("v1", None))
    old.gate.clear()
    result = []
    batch = threading.Thread(target=lambda: result.append(served.predict_batch([1, 2])))
    batch.start()
    assert old.started.wait(timeout=30)  # the batch is running on the old model
    served.swap(new, Version("v2", None))
    (answer,) = served.predict_batch([3])
    assert answer.name == "new" and answer.model_version == "v2" and served.version.version == "v2"
    old.gate.set()
    batch.join(timeout=30)
    assert [(r.name, r.model_version) for r in result[0]] == [("old", "v1"), ("old", "v1")]


def test_hostile_webhook_bodies_get_4xx_and_annotation_events_are_counted(tmp_path, monkeypatch):
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", "key")
    loop = _loop(tmp_path, _closed_port_url(), train_every=2)
    with _client(loop) as client:
        post = lambda body: client.post("/label-studio/webhook", content=body)  # noqa: E731
        assert post(b"{not json").status_code == 400
        assert post(b"[1, 2]").status_code == 400
        assert post(b" " * (MAX_WEBHOOK_BYTES + 1)).status_code == 413
        assert post(json.dumps({"action": "PROJECT_UPDATED"}).encode()).json()["status"].startswith("ignored")
        event = json.dumps({"action": "ANNOTATION_CREATED", "project": {"id": 7}}).encode()
        assert post(event).json() == {"status": "counted: 1 of 2 annotation events"}
        r = post(event)
        assert r.status_code == 201 and r.json()["status"] == "started"
        loop.wait(timeout=120)


def test_a_model_with_other_class_names_is_scored_as_label_studio_would_see_it():
    class Logits(torch.nn.Module):
        def forward(self, x):
            return {"out": x}

    # source classes: background, cat, dog, person; target (the project): __background__, Dog, Cat, Bird
    remap = ClassRemap(Logits(), ["background", "cat", "dog", "person"], ["__background__", "Dog", "Cat", "Bird"])
    pixels = torch.tensor([[5.0, 1, 0, 0], [0, 5, 0, 0], [0, 0, 5, 0], [0, 0, 0, 5]])  # argmax bg, cat, dog, person
    x = pixels.T.reshape(1, 4, 4, 1)  # (N, K, H, W): one pixel a row
    labels = remap(x)["out"].argmax(1).flatten().tolist()
    assert labels == [0, 2, 1, 0]  # cat -> Cat (2), dog -> Dog (1), person: not in the project -> background
