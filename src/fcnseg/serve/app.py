"""The HTTP API and web page: ``create_app(segmenter)`` returns a FastAPI app to run with uvicorn.

Imported only by ``fcnseg serve`` and users of :mod:`fcnseg.serve`, so FastAPI stays an optional dependency.

Request path: body read with a size cap -> media type checked -> image header checked for its pixel
count (nothing decoded yet) -> decoded off the event loop by :func:`fcnseg.imageio.load_image` ->
queued for the micro-batching worker (:mod:`.batching`) -> encoded (PNG / overlay / JSON) off the loop.
Every bad input has its own 4xx status and a JSON ``{"detail": ...}`` body.
"""

from __future__ import annotations

import asyncio
import base64
import io
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from PIL import Image
from starlette.concurrency import run_in_threadpool

from ..coco_results import coco_rle
from ..imageio import ImageDecodeError, load_image
from ..transforms import palette, resized_size
from .batching import MicroBatcher, QueueFullError

__all__ = ["ServeConfig", "create_app", "rle_decode", "rle_encode"]

STATIC = Path(__file__).parent / "static"
RAW_TYPES = ("application/octet-stream",)  # besides image/*


@dataclass
class ServeConfig:
    """Limits and batching knobs of the server (the flags of ``fcnseg serve``)."""

    max_upload_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 16_000_000  # of the uploaded image, checked from its header before decoding
    max_model_pixels: int = 4_000_000  # of the image resized for the model (refuses extreme aspect ratios)
    max_batch: int = 8
    max_wait_ms: float = 5.0
    max_queue: int = 32
    timeout_s: float = 60.0
    retry_after_s: int = 1


class HTTPError(Exception):
    """An expected failure, answered as ``{"detail": ...}`` with its status."""

    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.detail, self.headers = status, detail, headers


def rle_encode(mask: np.ndarray) -> dict[str, Any]:
    """Row-major run-length code of an (H, W) label map: ``values[i]`` repeated ``lengths[i]`` times."""
    flat = np.asarray(mask).reshape(-1)
    if flat.size == 0:
        return {"encoding": "rle", "size": list(np.shape(mask)), "values": [], "lengths": []}
    starts = np.flatnonzero(np.r_[True, flat[1:] != flat[:-1]])
    lengths = np.diff(np.r_[starts, flat.size])
    return {"encoding": "rle", "size": list(mask.shape), "values": flat[starts].tolist(), "lengths": lengths.tolist()}


def rle_decode(rle: dict[str, Any]) -> np.ndarray:
    """Inverse of :func:`rle_encode`."""
    flat = np.repeat(np.asarray(rle["values"], dtype=np.uint8), np.asarray(rle["lengths"], dtype=np.int64))
    return flat.reshape(rle["size"])


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _header_pixels(data: bytes) -> int | None:
    """Pixel count from the image header alone (PIL opens lazily); None when unreadable (decoding will say why)."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            return im.width * im.height
    except Image.DecompressionBombError:
        return 1 << 62
    except Exception:
        return None


def create_app(
    segmenter: Any,
    *,
    config: ServeConfig | None = None,
    model_info: dict[str, Any] | None = None,
) -> FastAPI:
    """A FastAPI app serving ``segmenter`` (a :class:`fcnseg.predict.Segmenter`).

    Args:
        segmenter: anything with ``predict_batch(list_of_PIL) -> results`` and ``categories``.
        config: limits and batching; defaults to :class:`ServeConfig()`.
        model_info: extra fields for ``GET /v1/models`` (name, weights, metrics...).
    """
    from .. import __version__

    cfg = config or ServeConfig()
    batcher = MicroBatcher(
        segmenter.predict_batch, max_batch=cfg.max_batch, max_wait=cfg.max_wait_ms / 1000, max_queue=cfg.max_queue
    )
    categories = list(segmenter.categories)
    input_size = getattr(getattr(segmenter, "preprocess", None), "resize_size", None)
    info = {
        "name": getattr(segmenter, "model_name", "model"),
        "num_classes": len(categories),
        "categories": categories,
        "palette": palette(len(categories)).tolist(),
        "input_size": input_size,
        **(model_info or {}),
    }

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(
        title="fcnseg",
        version=__version__,
        description="Semantic segmentation with FCN-ResNet. POST an image to `/v1/segment`; the web page is at `/`.",
        lifespan=lifespan,
    )
    app.state.batcher = batcher
    app.state.config = cfg

    @app.exception_handler(HTTPError)
    async def _http_error(request: Request, exc: HTTPError) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status, headers=exc.headers)

    async def read_capped(request: Request) -> bytes:
        """The body, refusing (413) as soon as it is known to exceed the limit: from Content-Length or while read."""
        limit = cfg.max_upload_bytes + 64 * 1024  # room for multipart framing around a file at the limit
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            raise HTTPError(413, f"upload of {int(length)} bytes exceeds the {cfg.max_upload_bytes} byte limit")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise HTTPError(413, f"upload exceeds the {cfg.max_upload_bytes} byte limit")
            chunks.append(chunk)
        return b"".join(chunks)

    async def upload(request: Request) -> tuple[bytes, str]:
        """(image bytes, name) from a multipart form field ``file`` or a raw image body."""
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "multipart/form-data" and not ctype.startswith("image/") and ctype not in RAW_TYPES:
            raise HTTPError(
                415, f"unsupported media type {ctype or '(none)'!r}; send multipart/form-data or an image/* body"
            )
        body = await read_capped(request)
        if ctype != "multipart/form-data":
            return _checked_size(body), "upload"
        sent = False

        async def replay() -> dict[str, Any]:  # feed the already-read body to the form parser
            nonlocal sent
            if sent:
                return {"type": "http.disconnect"}
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        try:
            form = await Request(request.scope, replay).form(max_files=4, max_fields=16)
        except Exception as e:  # starlette's MultiPartException and parser errors
            raise HTTPError(400, f"malformed multipart body: {getattr(e, 'message', e)}") from None
        try:
            file = form.get("file")
            if file is None or isinstance(file, str):
                raise HTTPError(422, "multipart body has no file field named 'file'")
            ftype = (file.content_type or "application/octet-stream").split(";")[0].strip().lower()
            if not ftype.startswith("image/") and ftype not in RAW_TYPES:
                raise HTTPError(415, f"{file.filename}: unsupported media type {ftype!r}; upload an image")
            data = await file.read()
        finally:
            await form.close()  # the parser spools parts to temporary files
        return _checked_size(data), file.filename or "upload"

    def _checked_size(data: bytes) -> bytes:
        if len(data) > cfg.max_upload_bytes:
            raise HTTPError(413, f"upload of {len(data)} bytes exceeds the {cfg.max_upload_bytes} byte limit")
        return data

    def decode(data: bytes, name: str) -> Image.Image:
        pixels = _header_pixels(data)
        if pixels is not None and pixels > cfg.max_pixels:
            raise HTTPError(413, f"{name}: image has {pixels} pixels, over the {cfg.max_pixels} limit; not decoded")
        try:
            image = load_image(data, max_pixels=cfg.max_pixels, name=name)
        except ImageDecodeError as e:
            raise HTTPError(400, str(e)) from None
        if input_size is not None:
            h, w = resized_size(image.height, image.width, input_size)
            if h * w > cfg.max_model_pixels:
                raise HTTPError(
                    413, f"{name}: {image.width}x{image.height} resizes to {w}x{h} for the model, over the "
                    f"{cfg.max_model_pixels} pixel limit (aspect ratio too extreme)",
                )  # fmt: skip
        return image

    def render(result: Any, fmt: str, mask_encoding: str, alpha: float) -> Response:
        if fmt == "png":
            return Response(_png(result.to_image()), media_type="image/png")
        if fmt == "overlay":
            return Response(_png(result.overlay(alpha)), media_type="image/png")
        h, w = result.mask.shape
        if mask_encoding == "png":
            mask = {"encoding": "png_base64", "data": base64.b64encode(_png(result.to_image())).decode("ascii")}
        else:
            mask = rle_encode(result.mask)
        index = {name: i for i, name in enumerate(categories)}
        classes = [
            {"index": index[name], "name": name, "area": float(share), "pixels": round(share * h * w),
             "segmentation": coco_rle(result.mask == index[name])}  # COCO compressed RLE, as every tool reads
            for name, share in result.class_areas().items()  # largest first
        ]  # fmt: skip
        return JSONResponse({"model": info["name"], "width": w, "height": h, "classes": classes, "mask": mask})

    @app.post(
        "/v1/segment",
        summary="Segment one image",
        response_class=Response,
        responses={
            200: {
                "description": "The mask as a palette PNG, the overlay PNG, or JSON with class areas and the mask",
                "content": {"image/png": {}, "application/json": {}},
            },
            400: {"description": "Not an image, corrupt, or a malformed multipart body"},
            413: {"description": "Upload too large, or too many pixels"},
            415: {"description": "Unsupported media type"},
            503: {"description": "Queue full or inference failed; retry after the Retry-After header"},
            504: {"description": "Timed out waiting for the model"},
        },
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "multipart/form-data": {
                        "schema": {
                            "type": "object",
                            "properties": {"file": {"type": "string", "format": "binary"}},
                            "required": ["file"],
                        }
                    },
                    "image/png": {"schema": {"type": "string", "format": "binary"}},
                    "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
                    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                },
            }
        },
    )
    async def segment(
        request: Request,
        format: Literal["json", "png", "overlay"] | None = Query(
            None, description="Response kind; when absent, chosen from Accept (image/png gives the mask PNG)."
        ),
        mask_encoding: Literal["rle", "png"] = Query("rle", description="Mask in JSON responses: RLE or base64 PNG"),
        alpha: float = Query(0.5, ge=0.0, le=1.0, description="Overlay opacity"),
    ) -> Response:
        """Upload an image (multipart field ``file``, or the raw image as the body) and get its segmentation."""
        if format is None:
            accept = request.headers.get("accept", "")
            format = "png" if "image/png" in accept and "application/json" not in accept else "json"
        data, name = await upload(request)
        image = await run_in_threadpool(decode, data, name)
        retry = {"Retry-After": str(cfg.retry_after_s)}
        try:
            result = await batcher.submit(image, timeout=cfg.timeout_s)
        except QueueFullError as e:
            raise HTTPError(503, f"server busy: {e}", retry) from None
        except asyncio.TimeoutError:
            raise HTTPError(504, f"no result within {cfg.timeout_s:g} s") from None
        except Exception as e:  # the model itself failed (e.g. out of memory): the server goes on
            raise HTTPError(503, f"inference failed ({type(e).__name__}: {e})", retry) from None
        return await run_in_threadpool(render, result, format, mask_encoding, alpha)

    @app.get("/v1/models", summary="The served model: classes, palette, metrics")
    async def models() -> dict[str, Any]:
        return {"models": [info]}

    @app.get("/healthz", summary="Liveness: the process answers")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", summary="Readiness: model loaded and the batch worker running", responses={503: {}})
    async def readyz() -> JSONResponse:
        ready = batcher.running
        stats = {"queued": batcher.queued, "batches": batcher.stats.batches, "items": batcher.stats.items}
        return JSONResponse({"status": "ready" if ready else "starting", **stats}, status_code=200 if ready else 503)

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
