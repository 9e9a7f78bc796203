"""Every bad request gets its own 4xx/5xx-but-not-500 status and a JSON ``detail``; the server keeps serving."""

from __future__ import annotations

import struct
import zlib

import httpx
import pytest

from fcnseg.predict import Segmenter
from fcnseg.serve import create_app


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` but holds no pixel data: any decoding attempt fails."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def client(segmenter, helpers):
    config = helpers.config(max_upload_bytes=50_000, max_pixels=20_000)
    with helpers.client(create_app(segmenter, config=config)) as c:
        yield c


@pytest.fixture(scope="module")
def good(helpers):
    return helpers.encode(helpers.make_image(0, (48, 40)))


def check(r: httpx.Response, status: int, words: str) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    assert words in str(r.json()["detail"])
    assert r.json()["request_id"] == r.headers["x-request-id"] and len(r.headers["x-request-id"]) == 16


def test_upload_too_large_by_content_length(client):
    r = client.post("/v1/segment", content=b"\0" * 200_000, headers={"content-type": "image/png"})
    check(r, 413, "exceeds the 50000 byte limit")


def test_upload_too_large_chunked(client):
    def body():  # no Content-Length: the server must count while reading
        for _ in range(20):
            yield b"\0" * 10_000

    r = client.post("/v1/segment", content=body(), headers={"content-type": "application/octet-stream"})
    check(r, 413, "exceeds the 50000 byte limit")


def test_multipart_file_too_large(client):
    # under the body limit plus framing allowance, over the file limit
    r = client.post("/v1/segment", files={"file": ("big.png", b"\0" * 60_000, "image/png")})
    check(r, 413, "60000 bytes exceeds")


def test_too_many_pixels_refused_from_header(client):
    # 1000 x 1000 = 1 MP > 20 000: refused with 413, not the 400 a decoding attempt of this pixel-less file gives
    check(client.post("/v1/segment", content=png_header_only(1000, 1000), headers={"content-type": "image/png"}),
          413, "over the 20000 limit; not decoded")  # fmt: skip
    check(client.post("/v1/segment", content=png_header_only(100, 100), headers={"content-type": "image/png"}),
          400, "corrupt or truncated")  # fmt: skip


def test_decompression_bomb_header(client):
    r = client.post("/v1/segment", content=png_header_only(100_000, 100_000), headers={"content-type": "image/png"})
    check(r, 413, "image has 10000000000 pixels, over the 20000 limit; not decoded")  # the real count


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"", "empty file"),
        (b"this is text, not an image", "not an image"),
        ("truncated", "corrupt or truncated"),
    ],
)
def test_not_an_image(client, good, data, words):
    data = good[: len(good) // 2] if data == "truncated" else data
    check(client.post("/v1/segment", content=data, headers={"content-type": "image/png"}), 400, words)
    check(client.post("/v1/segment", files={"file": ("x.png", data, "image/png")}), 400, words)


@pytest.mark.parametrize("ctype", ["text/plain", "application/json", "application/x-www-form-urlencoded", None])
def test_unsupported_media_type(client, good, ctype):
    headers = {"content-type": ctype} if ctype else {}
    check(client.post("/v1/segment", content=good, headers=headers), 415, "unsupported media type")


def test_multipart_part_not_an_image_type(client, good):
    check(client.post("/v1/segment", files={"file": ("notes.txt", good, "text/plain")}), 415, "notes.txt")


def test_multipart_without_file_field(client, good):
    check(client.post("/v1/segment", files={"image": ("x.png", good, "image/png")}), 422, "no file field")
    check(client.post("/v1/segment", data={"file": "just text"}, files={"other": ("a", b"1")}), 422, "no file field")


def test_malformed_multipart(client):
    r = client.post(
        "/v1/segment", content=b"--xyz\r\ngarbage", headers={"content-type": "multipart/form-data; boundary=xyz"}
    )
    check(r, 400, "malformed multipart body")
    r = client.post("/v1/segment", content=b"whatever", headers={"content-type": "multipart/form-data"})
    check(r, 400, "malformed multipart body")


def test_truncated_multipart_is_400(client, good):
    """A whole form cut short (the closing boundary never came): the client's broken upload, not a missing field."""
    form = httpx.Request("POST", "http://x", files={"file": ("p.png", good, "image/png")})
    ctype, whole = form.headers["content-type"], form.read()
    boundary = ctype.split("boundary=")[1]
    assert whole.rstrip().endswith(f"--{boundary}--".encode())  # the test's form is well made...
    for cut in (len(whole) // 2, len(whole) - 10):  # ...and cut short, in the file or in the closing boundary
        r = client.post("/v1/segment", content=whole[:cut], headers={"content-type": ctype})
        check(r, 400, "no closing boundary")


@pytest.mark.parametrize(
    "query", ["format=gif", "alpha=1.5", "alpha=3", "alpha=-0.1", "alpha=abc", "format=overlay&alpha=nan"]
)
def test_bad_parameters(client, good, query):
    r = client.post(f"/v1/segment?{query}", content=good, headers={"content-type": "image/png"})
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"][0] == "query"
    assert r.json()["request_id"] == r.headers["x-request-id"]  # validation errors keep the error shape
    assert set(r.json()) == {"detail", "request_id"}


def test_extreme_aspect_ratio_refused(segmenter, helpers):
    # a 1 x 600 strip resized to a shorter side of 32 would become 32 x 19200 = 614 400 model pixels
    resized = Segmenter(segmenter.model, None, device="cpu", size=32, categories=segmenter.categories)
    with helpers.client(create_app(resized, config=helpers.config(max_model_pixels=100_000))) as c:
        strip = helpers.encode(helpers.make_image(0, (600, 1)))
        check(c.post("/v1/segment", content=strip, headers={"content-type": "image/png"}), 413, "aspect ratio")


def test_model_pixel_limit_at_native_size(segmenter, helpers):
    # size None (``--size native``): the model sees the image as it is, and the model-input limit still applies
    with helpers.client(create_app(segmenter, config=helpers.config(max_model_pixels=1000))) as c:
        big = helpers.encode(helpers.make_image(0, (40, 40)))
        check(
            c.post("/v1/segment", content=big, headers={"content-type": "image/png"}), 413, "1600 pixels for the model"
        )


def test_method_and_path_errors(client):
    check(client.get("/v1/segment"), 405, "Method Not Allowed")
    check(client.get("/nope"), 404, "Not Found")


def test_server_still_serves_after_errors(client, good):
    for data in (b"", b"junk", png_header_only(5000, 5000)):
        client.post("/v1/segment", content=data, headers={"content-type": "image/png"})
    assert client.post("/v1/segment", content=good, headers={"content-type": "image/png"}).status_code == 200


def test_timeout_504(segmenter, helpers, good):
    gated = helpers.Gated(segmenter)
    app = create_app(gated, config=helpers.config(timeout_s=2, warmup=False))
    with helpers.live_server(app) as url:
        r = httpx.post(f"{url}/v1/segment", content=good, headers={"content-type": "image/png"}, timeout=30)
        check(r, 504, "no result within 2 s")
        gated.gate.set()  # the worker finishes the abandoned request and keeps serving
        helpers.wait_until(lambda: app.state.batcher.stats.batches == 1)
        r = httpx.post(f"{url}/v1/segment", content=good, headers={"content-type": "image/png"}, timeout=30)
        assert r.status_code == 200


def test_worker_survives_a_failing_batch(segmenter, helpers, good, caplog):
    class Failing:
        categories, model_name = segmenter.categories, "failing"
        calls = 0

        def predict_batch(self, images):
            Failing.calls += 1
            if Failing.calls == 1:
                raise MemoryError("simulated")
            return segmenter.predict_batch(images)

    with helpers.client(create_app(Failing(), config=helpers.config(warmup=False))) as c:
        r = c.post("/v1/segment", content=good, headers={"content-type": "image/png"})
        check(r, 503, "inference failed")
        assert "simulated" not in r.text and "MemoryError" not in r.text  # no internal text for clients...
        logged = [rec for rec in caplog.records if r.json()["request_id"] in rec.getMessage()]
        assert logged and "MemoryError: simulated" in caplog.text  # ...it is in the log, with the request id
        assert c.post("/v1/segment", content=good, headers={"content-type": "image/png"}).status_code == 200


def test_unexpected_error_is_500_with_id_and_logged(segmenter, helpers, good, caplog):
    class Broken:  # results that break while the answer is encoded: an error no handler expects
        categories, model_name = segmenter.categories, "broken"

        def predict_batch(self, images):
            return [object() for _ in images]

    with helpers.client(create_app(Broken(), config=helpers.config(warmup=False))) as c:
        r = c.post("/v1/segment?format=png", content=good, headers={"content-type": "image/png"})
    check(r, 500, "internal server error")
    assert r.json() == {"detail": "internal server error", "request_id": r.headers["x-request-id"]}
    record = next(rec for rec in caplog.records if r.headers["x-request-id"] in rec.getMessage())
    assert record.exc_info is not None and "to_image" in caplog.text
