"""The API's answers against the Segmenter called directly (independent truth: same image, no HTTP)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from fcnseg.serve import create_app
from fcnseg.transforms import palette


@pytest.fixture(scope="module")
def client(segmenter, helpers):
    with helpers.client(create_app(segmenter, config=helpers.config(), model_info={"weights": None})) as c:
        yield c


@pytest.fixture(scope="module")
def photo(helpers):
    image = helpers.make_image(1, (72, 40))
    return image, helpers.encode(image)


@pytest.fixture(scope="module")
def expected(segmenter, photo):
    return segmenter.predict(photo[0])


def test_json_multipart_coco_rle(client, photo, expected, helpers):
    r = client.post("/v1/segment", files={"file": ("p.png", photo[1], "image/png")})
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    body = r.json()
    assert (body["width"], body["height"]) == photo[0].size
    assert set(body) == {"model", "width", "height", "classes"}  # v1: the mask once, as COCO RLE per class
    assert np.array_equal(helpers.mask_of(body), expected.mask)
    counts = np.bincount(expected.mask.ravel(), minlength=3)
    assert {c["name"]: c["pixels"] for c in body["classes"]} == {
        name: int(n) for name, n in zip(expected.categories, counts, strict=True) if n
    }
    assert sum(c["area"] for c in body["classes"]) == pytest.approx(1.0)
    assert [c["area"] for c in body["classes"]] == sorted((c["area"] for c in body["classes"]), reverse=True)


def test_json_raw_body(client, photo, expected, helpers):
    r = client.post("/v1/segment", content=photo[1], headers={"content-type": "image/png"})
    assert r.status_code == 200 and np.array_equal(helpers.mask_of(r.json()), expected.mask)


@pytest.mark.parametrize("how", ["param", "accept"])
def test_png_mask(client, photo, expected, how):
    url, headers = ("/v1/segment?format=png", {}) if how == "param" else ("/v1/segment", {"accept": "image/png"})
    r = client.post(url, content=photo[1], headers={"content-type": "image/png", **headers})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    png = Image.open(io.BytesIO(r.content))
    assert png.mode == "P" and np.array_equal(np.asarray(png), expected.mask)
    assert np.array_equal(np.asarray(png.getpalette()[:9]).reshape(3, 3), palette(3))


def test_overlay(client, photo, expected):
    r = client.post("/v1/segment?format=overlay&alpha=0.25", files={"file": ("p.png", photo[1], "image/png")})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    got = np.asarray(Image.open(io.BytesIO(r.content)).convert("RGB"))
    # by hand: non-background pixels are 0.75 photo + 0.25 class colour, background pixels the photo itself
    rgb = np.asarray(photo[0], dtype=np.float64)
    colour = palette(3)[expected.mask].astype(np.float64)
    a = np.where(expected.mask[..., None] == 0, 0.0, 0.25)
    assert np.abs(got - (rgb * (1 - a) + colour * a)).max() <= 1


def test_jpeg_upload(client, helpers, segmenter):
    image = helpers.make_image(3, (40, 56))
    data = helpers.encode(image, "JPEG")
    r = client.post("/v1/segment", files={"file": ("p.jpg", data, "image/jpeg")})
    assert r.status_code == 200
    decoded = Image.open(io.BytesIO(data)).convert("RGB")
    assert np.array_equal(helpers.mask_of(r.json()), segmenter.predict(decoded).mask)


def test_models_health_ready_docs(client, segmenter):
    info = client.get("/v1/models").json()["models"][0]
    assert info["categories"] == segmenter.categories and info["num_classes"] == 3
    assert info["palette"] == palette(3).tolist()
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["warmup"]["pixels"] == 32 * 32
    schema = client.get("/openapi.json").json()
    assert "/v1/segment" in schema["paths"] and "multipart/form-data" in str(schema["paths"]["/v1/segment"])


def test_readyz_before_startup(segmenter):
    c = TestClient(create_app(segmenter))  # not entered: lifespan not run, worker not started
    assert c.get("/readyz").status_code == 503
    assert c.get("/healthz").status_code == 200


def test_web_page_and_assets(client):
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    for asset in ("/static/app.js", "/static/style.css"):
        assert asset in page.text
        assert client.get(asset).status_code == 200
