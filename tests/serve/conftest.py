"""Fixtures for the server tests: a tiny random-init segmenter, images as bytes, and a live uvicorn on loopback."""

from __future__ import annotations

import io
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from waiting import wait_until

from fcnseg.models import fcn_resnet50
from fcnseg.predict import Segmenter
from fcnseg.serve import ServeConfig

CATEGORIES = ["background", "road", "tree"]


@pytest.fixture(scope="session")
def segmenter() -> Segmenter:
    """FCN-ResNet50 with 3 classes, random but fixed weights, at native resolution (inputs stay tiny)."""
    torch.manual_seed(0)
    model = fcn_resnet50(weights=None, num_classes=3, aux_loss=False)
    return Segmenter(model, None, device="cpu", size="native", categories=CATEGORIES)


def make_image(seed: int = 0, size: tuple[int, int] = (64, 48)) -> Image.Image:
    """A random RGB image with some structure (smooth blobs), ``size`` = (width, height)."""
    rng = np.random.default_rng(seed)
    w, h = size
    small = rng.integers(0, 256, (max(h // 8, 1), max(w // 8, 1), 3), dtype=np.uint8)
    return Image.fromarray(small).resize((w, h), Image.BILINEAR)


def mask_of(body: dict) -> np.ndarray:
    """The (H, W) label map of a JSON answer, rebuilt from its per-class COCO RLEs by pycocotools (an independent
    decoder); every pixel must belong to exactly one class."""
    from pycocotools import mask as coco_mask

    mask, covered = np.zeros((body["height"], body["width"]), np.uint8), 0
    for c in body["classes"]:
        rle = {"size": c["segmentation"]["size"], "counts": c["segmentation"]["counts"].encode()}
        pixels = coco_mask.decode(rle).astype(bool)
        mask[pixels] = c["index"]
        covered += int(pixels.sum())
    assert covered == mask.size  # the classes partition the image
    return mask


def encode(image: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return buf.getvalue()


class GatedSegmenter:
    """Wraps a segmenter so the test decides when each batch may run (``gate.set()``); records batch sizes."""

    def __init__(self, inner: Segmenter) -> None:
        self.inner, self.categories, self.model_name = inner, inner.categories, "gated"
        self.gate, self.started = threading.Event(), threading.Event()
        self.batches: list[int] = []

    def predict_batch(self, images):
        self.started.set()
        if not self.gate.wait(timeout=30):
            raise RuntimeError("test gate never opened")
        self.batches.append(len(images))
        return self.inner.predict_batch(images)


def config(**kw) -> ServeConfig:
    """Server settings for tests: warm-up on a 32-pixel image, so it costs a fraction of a second."""
    return ServeConfig(**{"warmup_side": 32, **kw})


@contextmanager
def client(app) -> Iterator:
    """A TestClient with the app's lifespan running, once ``/readyz`` says ready (warm-up done)."""
    from fastapi.testclient import TestClient

    with TestClient(app, raise_server_exceptions=False) as c:
        wait_until(lambda: c.get("/readyz").status_code == 200, timeout=120)
        yield c


@contextmanager
def live_server(app, **options) -> Iterator[str]:
    """Run ``app`` on uvicorn at 127.0.0.1 with an ephemeral port, guarded as ``fcnseg serve`` guards it, until
    ready; yields the base URL. ``options`` go to ``uvicorn.Config`` (e.g. TLS files)."""
    import httpx
    import uvicorn

    from fcnseg.serve import uvicorn_options

    settings = {**uvicorn_options(app.state.config), **options}
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on",
                                           **settings))  # fmt: skip
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    scheme = "https" if "ssl_certfile" in options else "http"
    url = f"{scheme}://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    verify = ssl.create_default_context(cafile=options["ssl_certfile"]) if "ssl_certfile" in options else True
    try:
        wait_until(lambda: httpx.get(f"{url}/readyz", verify=verify).status_code == 200, timeout=120)
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=30)


# The helpers as one fixture, so test modules need not import this conftest by name.
@pytest.fixture(scope="session")
def helpers() -> SimpleNamespace:
    return SimpleNamespace(
        make_image=make_image, encode=encode, live_server=live_server, wait_until=wait_until, Gated=GatedSegmenter,
        config=config, client=client, mask_of=mask_of,
    )  # fmt: skip
