"""The ML-backend routes under /label-studio, driven as Label Studio drives them (its request shapes), with the
task images on a loopback HTTP server standing in for Label Studio's /data/upload."""

from __future__ import annotations

import base64
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from label_studio_sdk.converter.brush import decode_rle

from fcnseg.serve import create_app

CONFIG = """<View><Image name="image" value="$image"/>
<BrushLabels name="tag" toName="image"><Label value="Road"/></BrushLabels></View>"""  # no label for "tree"
KEY = "ls-test-key"


@pytest.fixture(scope="module")
def uploads(helpers):
    """A loopback server with two task images; it records the Authorization header it was sent."""
    images = {f"/data/upload/1/{i}.png": helpers.encode(helpers.make_image(i, (40, 30))) for i in range(2)}
    seen = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            seen.append(self.headers.get("Authorization"))
            body = images.get(self.path)
            self.send_response(200 if body else 404)
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", images, seen
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def backend(segmenter, helpers, uploads):
    url, _, _ = uploads
    cfg = helpers.config(api_key=KEY, label_studio_url=url, label_studio_api_key="ls-token")
    app = create_app(segmenter, config=cfg, model_info={"model_version": "model.pth-0123456789ab"})
    with helpers.client(app) as c:
        yield c


def _basic(password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"label-studio:{password}".encode()).decode()}


def test_health_and_setup(backend):
    assert backend.get("/label-studio/health", headers=_basic(KEY)).json()["status"] == "UP"
    answer = backend.post("/label-studio/setup", json={"project": "1.1", "schema": CONFIG}, headers=_basic(KEY))
    assert answer.json() == {"model_version": "model.pth-0123456789ab"}
    bad = backend.post("/label-studio/setup", json={"schema": "<View/>"}, headers=_basic(KEY))
    assert bad.status_code == 400 and "no <BrushLabels>" in bad.json()["detail"]


@pytest.mark.parametrize(
    ("path", "headers", "status"),
    [
        ("/label-studio/health", {}, 401),
        ("/label-studio/health", _basic("wrong"), 401),
        ("/label-studio/health", {"Authorization": "Basic !!!"}, 401),
        ("/label-studio/health", {"Authorization": f"Bearer {KEY}"}, 200),
        ("/v1/models", _basic(KEY), 401),  # the rest of the API keeps Bearer
        ("/v1/models", {"Authorization": f"Bearer {KEY}"}, 200),
    ],
)
def test_basic_auth_on_label_studio_routes_only(backend, path, headers, status):
    assert backend.get(path, headers=headers).status_code == status


def test_predict_answers_each_task_in_order(backend, segmenter, uploads, helpers):
    _, images, seen = uploads
    tasks = [
        {"id": 7, "data": {"image": "/data/upload/1/0.png"}},
        {"id": 8, "data": {"image": "/data/upload/1/missing.png"}},
        {"id": 9, "data": {"image": "http://169.254.169.254/latest/meta-data/"}},
        {"id": 10, "data": {"image": "/data/upload/1/1.png"}},
    ]
    body = {"tasks": tasks, "project": "1.1", "label_config": CONFIG, "params": {}}
    first = backend.post("/label-studio/predict", json=body, headers=_basic(KEY)).json()
    again = backend.post("/label-studio/predict", json=body, headers=_basic(KEY)).json()
    assert first == again and first["model_version"] == "model.pth-0123456789ab"
    results = first["results"]
    assert [("result" in r, r.get("task")) for r in results] == [(True, None), (False, 8), (False, 9), (True, None)]
    assert "HTTP 404" in results[1]["error"] and "not allowed" in results[2]["error"]
    assert set(seen) == {"Token ls-token"}  # Label Studio's key went to Label Studio only
    for answer, path in ((results[0], "/data/upload/1/0.png"), (results[3], "/data/upload/1/1.png")):
        expected = segmenter.predict(helpers.make_image(int(path[-5]), (40, 30)), confidence=True)
        assert answer["score"] == pytest.approx(1 - expected.doubt(), abs=1e-5)
        assert answer["model_version"] == "model.pth-0123456789ab"
        road = expected.mask == 1
        regions = answer["result"]
        assert len(regions) == int(road.any())  # "tree" has no label: never sent; background never sent
        for region in regions:
            assert region["value"]["brushlabels"] == ["Road"]
            alpha = decode_rle(region["value"]["rle"]).reshape(30, 40, 4)[:, :, 3]
            assert np.array_equal(alpha == 255, road)
            assert region["score"] == pytest.approx(float(expected.confidence[road].mean()), abs=1e-5)


def test_unmatched_classes_logged_once_per_config(backend, caplog):
    config = CONFIG.replace("Road", "ROAD")  # a config this server has not seen yet
    with caplog.at_level(logging.INFO, logger="fcnseg.serve"):
        backend.post("/label-studio/setup", json={"schema": config}, headers=_basic(KEY))
        for _ in range(2):
            body = {"tasks": [], "label_config": config}
            assert backend.post("/label-studio/predict", json=body, headers=_basic(KEY)).json()["results"] == []
    unmatched = [r.getMessage() for r in caplog.records if "names no label" in r.getMessage()]
    assert len(unmatched) == 1 and "tree" in unmatched[0] and "road" not in unmatched[0]


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"[1, 2]", 400),
        (b"{not json", 400),
        (b'{"tasks": 3, "label_config": "<View/>"}', 400),
        (b'{"tasks": [], "label_config": "<View"}', 400),
    ],  # fmt: skip
)
def test_bad_predict_requests(backend, body, status):
    answer = backend.post("/label-studio/predict", content=body, headers=_basic(KEY))
    assert answer.status_code == status and answer.json()["detail"]
