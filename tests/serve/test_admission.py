"""Admission control and load shedding: refuse at once what cannot finish in time, drop what is no longer wanted.

The model is a gated fake (the test decides when it finishes) and the service-time estimate is set by the test,
so every decision here is deterministic, not a race against the clock.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlparse

import httpx
import pytest

from fcnseg.serve import Admission, OverloadError, ServiceTime, create_app
from fcnseg.serve.admission import SAFETY


def post(url: str, body: bytes, **kw) -> httpx.Response:
    return httpx.post(f"{url}/v1/segment", content=body, headers={"content-type": "image/png"}, timeout=30, **kw)


@pytest.fixture(scope="module")
def good(helpers):
    return helpers.encode(helpers.make_image(0, (48, 40)))  # 1920 pixels, at native size


# -- the bookkeeping alone ------------------------------------------------------------------------------------


def test_service_time_is_a_moving_average_plus_jitter():
    s = ServiceTime(alpha=0.5, beta=0.5, k=2)
    assert s.per_pixel is None and s.seconds(1000) == 0.0
    s.observe(2.0, 1000)  # 2 ms per pixel; the first deviation is half the rate: 1 ms
    assert s.seconds(1000) == pytest.approx(2.0 + 2 * 1.0)
    s.observe(1.0, 1000)  # 1 ms per pixel: the mean goes halfway, the deviation towards |1 - 2| = 1 ms
    assert s.per_pixel == pytest.approx(1.5e-3) and s.deviation == pytest.approx(1e-3)
    assert s.seconds(2000) == pytest.approx(2 * (1.5 + 2 * 1.0))
    for _ in range(30):  # a steady rate: the jitter margin fades
        s.observe(1.0, 1000)
    assert s.seconds(1000) == pytest.approx(1.0, rel=1e-3)


def test_slots_memory_and_deadline():
    service, pool = ServiceTime(), ServiceTime()
    service.per_pixel = 0.001  # the model: 1 s per 1000 units of cost
    pool.per_pixel = 0.0005  # decoding and encoding: 1 s per 2000 uploaded pixels, on 2 threads
    adm = Admission(service, pool, pool_workers=2, max_inflight=3, max_bytes=1000)
    now = time.monotonic()
    a, b, c, d = (adm.arrive(f"10.0.0.{i}") for i in range(4))
    for t in (a, b, c):
        adm.enter(t)
    with pytest.raises(OverloadError, match="3 requests in flight"):
        adm.enter(d)
    with pytest.raises(OverloadError, match="3 requests in flight"):
        adm.arrive("10.0.0.9")  # a full server refuses before reading the body
    adm.charge(a, cost=4000, image_pixels=4000, nbytes=900, deadline=now - 1)  # idle: admitted whatever the estimate
    with pytest.raises(OverloadError, match="exceed"):
        adm.charge(b, cost=1, image_pixels=1, nbytes=200, deadline=now + 100)  # 900 + 200 bytes > 1000
    # model (4000 + 1000) * 1 ms = 5 s, pool (4000 + 4000) * 0.5 ms / 2 threads = 2 s: 7 s, x SAFETY, > 3 s
    with pytest.raises(OverloadError, match="after its deadline") as shed:
        adm.charge(b, cost=1000, image_pixels=4000, nbytes=10, deadline=now + 3)
    assert shed.value.retry_after == pytest.approx(SAFETY * 7 - 3, abs=1)  # when the backlog has drained enough
    adm.charge(b, cost=1000, image_pixels=4000, nbytes=10, deadline=now + 10)
    assert (adm.backlog, adm.pool_backlog, adm.held_bytes) == (5000, 8000, 910)
    adm.decoded(a)  # a is decoded: its pixels leave the pool's backlog
    adm.computed(a)  # the model is done with a: its cost leaves the model's backlog, its bytes stay until answered
    assert (adm.backlog, adm.pool_backlog, adm.held_bytes) == (1000, 4000, 910)
    for t in (a, b, c, d):
        adm.leave(t)
    assert (adm.inflight, adm.backlog, adm.pool_backlog, adm.held_bytes) == (0, 0, 0, 0)


def test_upload_bytes_charged_from_the_first_byte():
    adm = Admission(ServiceTime(), ServiceTime(), pool_workers=1, max_inflight=4, max_bytes=1000)
    a, b = adm.arrive("a"), adm.arrive("b")
    adm.hold_upload(a, 1)
    assert adm.held_bytes == 1 and adm.inflight == 0  # a reader holds bytes, not a slot
    adm.hold_upload(a, 1500)  # alone, an upload may use the whole budget (and more: the upload limit caps it)
    with pytest.raises(OverloadError, match="uploads and images in flight would exceed"):
        adm.hold_upload(b, 10)
    adm.enter(a)
    adm.charge(a, cost=1, image_pixels=1, nbytes=16, deadline=time.monotonic() + 10)
    adm.decoded(a)  # the upload is decoded: its bytes leave the budget, the decoded image's stay
    assert adm.held_bytes == 16
    adm.hold_upload(b, 900)
    adm.leave(b)  # a refused reader gives its bytes back
    adm.leave(a)
    assert (adm.inflight, adm.held_bytes) == (0, 0)


def test_one_client_cannot_take_every_slot():
    adm = Admission(ServiceTime(), ServiceTime(), pool_workers=1, max_inflight=4, max_bytes=1000, max_per_client=2)
    mine = [adm.arrive("10.0.0.1") for _ in range(3)]
    adm.enter(mine[0])
    adm.enter(mine[1])
    with pytest.raises(OverloadError, match="its share"):
        adm.enter(mine[2])
    with pytest.raises(OverloadError, match="its share"):
        adm.arrive("10.0.0.1")  # refused before its body is read
    other = adm.arrive("10.0.0.2")
    adm.enter(other)  # the rest stay free for other clients
    adm.leave(mine[0])
    adm.enter(mine[2])  # a slot given back is this client's again
    assert adm.per_client == {"10.0.0.1": 2, "10.0.0.2": 1}
    for t in (*mine, other):
        adm.leave(t)
    assert adm.inflight == 0 and not adm.per_client


# -- over HTTP, with a gated model ----------------------------------------------------------------------------


def raw_request(url: str, headers: str, body: bytes = b"") -> socket.socket:
    """Send a request by hand (so the body can be withheld); returns the open socket."""
    u = urlparse(url)
    sock = socket.create_connection((u.hostname, u.port), timeout=10)
    sock.sendall(headers.encode() + b"\r\n" + body)
    return sock


def read_answer(sock: socket.socket) -> str:
    """Headers and JSON body of one answer (the server keeps the connection open)."""
    data = b""
    while not data.endswith(b"}"):
        data += sock.recv(4096)
    return data.decode()


def test_full_server_refuses_before_reading_the_body(segmenter, helpers, good):
    gated = helpers.Gated(segmenter)
    app = create_app(gated, config=helpers.config(max_inflight=1, warmup=False))
    with helpers.live_server(app) as url, ThreadPoolExecutor(1) as pool:
        first = pool.submit(post, url, good)
        assert gated.started.wait(10)  # the only slot is taken: request 0 is in the model
        # a 10 MB upload announced, not one byte of it sent: the 503 comes anyway, at once
        t = time.perf_counter()
        sock = raw_request(url, "POST /v1/segment HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                                "Content-Length: 10000000\r\n")  # fmt: skip
        answer = read_answer(sock)
        elapsed = time.perf_counter() - t
        sock.close()
        gated.gate.set()
        assert first.result().status_code == 200
    assert answer.startswith("HTTP/1.1 503") and "retry-after: " in answer.lower()
    assert "1 requests in flight" in answer and "x-request-id" in answer.lower()
    assert elapsed < 2  # no waiting for the body (or for the model); generous for a shared CPU


def test_shed_when_the_expected_wait_exceeds_the_deadline(segmenter, helpers, good):
    gated = helpers.Gated(segmenter)
    app = create_app(gated, config=helpers.config(timeout_s=10, warmup=False))
    # 1920 px at 1/600 s per pixel = 3.2 s a request, 4 s with the safety factor: 2 fit in 10 s, the third not
    app.state.batcher.service.per_pixel = 4 / SAFETY / 1920
    with helpers.live_server(app) as url, ThreadPoolExecutor(2) as pool:
        first = pool.submit(post, url, good)
        assert gated.started.wait(10)
        second = pool.submit(post, url, good)
        helpers.wait_until(lambda: app.state.batcher.queued == 1)
        t = time.perf_counter()
        r = post(url, good)
        elapsed = time.perf_counter() - t
        gated.gate.set()
        codes = [first.result().status_code, second.result().status_code]
    assert r.status_code == 503 and "after its deadline" in r.json()["detail"]
    # 12 s expected - 10 s deadline (less the milliseconds since arrival), rounded up: the backlog drains that far
    assert r.headers["retry-after"] in ("2", "3")
    assert elapsed < 2 and codes == [200, 200] and gated.batches == [1, 1]


def test_queued_request_dropped_when_it_can_no_longer_finish(segmenter, helpers, good):
    gated = helpers.Gated(segmenter)
    app = create_app(gated, config=helpers.config(timeout_s=30, warmup=False))
    with helpers.live_server(app) as url, ThreadPoolExecutor(2) as pool:
        first = pool.submit(post, url, good)
        assert gated.started.wait(10)
        second = pool.submit(post, url, good)  # admitted: nothing measured yet, so no expected wait
        helpers.wait_until(lambda: app.state.batcher.queued == 1)
        app.state.batcher.service.per_pixel = 1.0  # now the model looks far too slow for the second one
        gated.gate.set()
        r0, r1 = first.result(), second.result()
    assert r0.status_code == 200
    assert r1.status_code == 503 and "waited too long" in r1.json()["detail"] and "retry-after" in r1.headers
    assert gated.batches == [1] and app.state.batcher.stats.expired == 1  # it never reached the model


def test_request_dropped_when_its_client_went_away(segmenter, helpers, good):
    gated = helpers.Gated(segmenter)
    app = create_app(gated, config=helpers.config(warmup=False))
    with helpers.live_server(app) as url, ThreadPoolExecutor(1) as pool:
        first = pool.submit(post, url, good)
        assert gated.started.wait(10)
        sock = raw_request(url, "POST /v1/segment HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                                f"Content-Length: {len(good)}\r\n", good)  # fmt: skip
        helpers.wait_until(lambda: app.state.batcher.queued == 1)
        sock.close()  # the client gives up while its request waits
        helpers.wait_until(lambda: app.state.admission.inflight == 1)  # the server noticed and let it go
        gated.gate.set()
        assert first.result().status_code == 200
        helpers.wait_until(lambda: app.state.batcher.stats.abandoned == 1)
    assert gated.batches == [1]  # the abandoned request never reached the model


# -- warm-up and readiness ------------------------------------------------------------------------------------


def _unready(app):
    """A TestClient with the lifespan running, not waiting for readiness (``helpers.client`` waits)."""
    from fastapi.testclient import TestClient

    return TestClient(app, raise_server_exceptions=False)


class Timed:
    """A fake model with its own clock: each call takes ``per_call + per_image * n`` seconds of it (``now``), so
    what warm-up measures does not depend on the machine's load; ``hold`` blocks calls until set."""

    categories, model_name = ["bg", "fg"], "timed"

    def __init__(self, per_call: float, per_image: float, inner=None) -> None:
        self.per_call, self.per_image, self.inner = per_call, per_image, inner
        self.hold = threading.Event()
        self.hold.set()
        self.calls: list[int] = []
        self.now = 0.0

    def clock(self) -> float:
        return self.now

    def predict_batch(self, images):
        self.hold.wait(30)
        self.calls.append(len(images))
        self.now += self.per_call + self.per_image * len(images)
        return self.inner.predict_batch(images) if self.inner else [None] * len(images)


def timed_app(fake: Timed, config):
    app = create_app(fake, config=config)
    app.state.batcher.clock = fake.clock  # the batcher times the fake on the fake's clock
    return app


def test_not_ready_until_warmed_up(segmenter, helpers, good):
    fake = Timed(0.0, 0.0, inner=segmenter)
    fake.categories = segmenter.categories
    fake.hold.clear()  # warm-up cannot finish yet
    app = timed_app(fake, helpers.config(max_batch=1))
    with _unready(app) as c:
        ready = c.get("/readyz")
        assert ready.status_code == 503 and ready.json()["status"] == "warming up"
        r = c.post("/v1/segment", content=good, headers={"content-type": "image/png"})
        assert r.status_code == 503 and r.json()["detail"] == "not ready: warming up" and r.headers["retry-after"]
        fake.hold.set()
        helpers.wait_until(lambda: c.get("/readyz").status_code == 200)
        assert c.post("/v1/segment", content=good, headers={"content-type": "image/png"}).status_code == 200
    assert fake.calls[:3] == [1, 1, 1]  # warm-up: one untimed call, then two timed ones


@pytest.mark.parametrize(
    ("per_call", "per_image", "kept"),
    [(0.06, 0.0, 8), (0.0, 0.06, 1)],  # a batch of two costs one call's time / twice one call's time
)
def test_warm_up_keeps_batching_only_when_it_pays(helpers, per_call, per_image, kept):
    fake = Timed(per_call, per_image)
    app = timed_app(fake, helpers.config(max_batch=8, timeout_s=5))
    with _unready(app) as c:
        helpers.wait_until(lambda: c.get("/readyz").json()["warmup"] is not None)
        report = c.get("/readyz").json()["warmup"]
    assert report["max_batch"] == kept and app.state.batcher.max_batch == kept
    assert (
        report["single_s"] == pytest.approx(0.06) and report["pixels"] == 32 * 32 and report["image_pixel_weight"] == 0
    )
    if kept > 1:  # every batch size the server may form was run once
        assert set(range(1, 9)) <= set(fake.calls)


def test_too_slow_for_the_timeout_is_never_ready(helpers):
    fake = Timed(0.05, 0.0)
    app = timed_app(fake, helpers.config(max_batch=1, timeout_s=0.01))
    with _unready(app) as c:
        helpers.wait_until(lambda: c.get("/readyz").json()["warmup"] is not None)
        r = c.get("/readyz")
    assert r.status_code == 503 and r.json()["status"] == "too slow for the timeout"


def test_the_warm_up_log_line_reads_as_a_sentence(helpers, caplog):
    """Not the report's Python repr: what was timed and what was decided, in words."""
    fake = Timed(0.06, 0.0)  # a pair costs one call: batching pays
    app = timed_app(fake, helpers.config(max_batch=8, timeout_s=5))
    with caplog.at_level(logging.INFO, logger="fcnseg.serve"), _unready(app) as c:
        helpers.wait_until(lambda: c.get("/readyz").json()["warmup"] is not None)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("warm-up: ")]
    assert lines == [
        "warm-up: one image 0.06 s (1024 model pixels); a batch of two 0.03 s per image: batching on "
        "(batches of up to 8)"
    ]
