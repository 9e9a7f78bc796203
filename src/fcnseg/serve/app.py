"""The HTTP API and web page: ``create_app(segmenter)`` returns a FastAPI app to run with uvicorn.

Imported only by ``fcnseg serve`` and users of :mod:`fcnseg.serve`, so FastAPI stays an optional dependency.

Request path, cheapest refusals first (:mod:`.admission`): 401 without the API key when one is set
(:mod:`.security`) -> 503 at once when every slot is taken -> media type checked -> body read under a size cap,
a deadline and a minimum rate, its bytes charged to the memory budget (:mod:`.upload`) -> a slot taken (within
the client's share) -> the image header gives the pixel count (nothing decoded yet), checked against the limits,
charged to the memory budget and the backlog, refused with 503 when it cannot finish before its deadline ->
decoded in a small bounded pool by :func:`fcnseg.imageio.load_image` ->
queued for the micro-batching worker (:mod:`.batching`), dropped there if the client left or the deadline can
no longer be met -> encoded (PNG / overlay / JSON) in the same pool. Every bad input has its own 4xx status;
every error body is ``{"detail": ..., "request_id": ...}`` (:mod:`.errors`).

Connections are guarded by uvicorn itself (:func:`.config.uvicorn_options`): request headers within a deadline
(:mod:`.protocol`), idle keep-alive connections closed, open connections capped.

API v1's JSON answer has one mask format: COCO compressed RLE per class (what pycocotools and COCO tools read).
"""

from __future__ import annotations

import asyncio
import io
import os
import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from PIL import Image
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..coco_results import coco_rle
from ..imageio import ImageDecodeError, load_image
from ..labelstudio import ImageFetcher
from ..transforms import palette, resized_size
from .admission import SAFETY, Admission, OverloadError, ServiceTime
from .batching import DeadlineExceededError, MicroBatcher
from .config import ServeConfig, check_dependencies
from .errors import HTTPError, RequestIds, error_body, logger
from .labelstudio import label_studio_router
from .security import BearerAuth, openapi_bearer
from .upload import ClientGoneError, upload
from .warmup import WarmupReport, warm_up, warmup_image

__all__ = ["create_app"]

STATIC = Path(__file__).parent / "static"
NATIVE_WARMUP_SIDE = 256  # warm-up image side when the model runs at each image's native size
# memory an upload holds per pixel: RGB (3) and mask (1), plus the float32 RGB copy preprocessing makes (12);
# measured: five 16-bit 4000x4000 uploads in flight raised peak RSS by about 300 MB each
BYTES_PER_PIXEL = 16


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _busy(e: OverloadError) -> HTTPError:
    return HTTPError(503, f"server busy: {e.reason}", {"Retry-After": str(e.retry_after)})


def _header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the image header alone (PIL opens lazily); None when unreadable (decoding says why).

    A file so large that Pillow refuses to open it comes back as (its pixel count, 1): only the count is known.
    """
    try:
        with Image.open(io.BytesIO(data)) as im:
            return im.size
    except Image.DecompressionBombError as e:  # Pillow refuses to open it at all; its message has the count
        m = re.search(r"\((\d+) pixels\)", str(e))
        return (int(m.group(1)), 1) if m else (Image.MAX_IMAGE_PIXELS * 2 + 1, 1)
    except Exception:
        return None


@dataclass(frozen=True)
class _Detailed:
    """A batch item whose result also carries each pixel's confidence and entropy (Label Studio's scores)."""

    image: Image.Image


def _batch_function(segmenter: Any) -> Any:
    """The micro-batcher's function: images get the mask alone (the fast path), :class:`_Detailed` items the
    mask with confidence and entropy; a mixed batch is two calls, its results in the items' order."""

    def run(items: list[Any]) -> list[Any]:
        detailed = [i for i, item in enumerate(items) if isinstance(item, _Detailed)]
        plain = [i for i, item in enumerate(items) if not isinstance(item, _Detailed)]
        results: list[Any] = [None] * len(items)
        if plain:
            for i, r in zip(plain, segmenter.predict_batch([items[i] for i in plain]), strict=True):
                results[i] = r
        if detailed:
            found = segmenter.predict_batch([items[i].image for i in detailed], confidence=True)
            for i, r in zip(detailed, found, strict=True):
                results[i] = r
        return results

    return run


async def _until_disconnect(request: Request) -> None:
    """Returns when the client has closed the connection (the body is already read, so nothing else arrives)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def create_app(
    segmenter: Any,
    *,
    config: ServeConfig | None = None,
    model_info: dict[str, Any] | None = None,
) -> FastAPI:
    """A FastAPI app serving ``segmenter`` (a :class:`fcnseg.predict.Segmenter`).

    Args:
        segmenter: anything with ``predict_batch(list_of_PIL) -> results`` and ``categories``.
        config: limits, admission and batching; defaults to :class:`ServeConfig()`.
        model_info: extra fields for ``GET /v1/models`` (name, weights, metrics...).
    """
    from fastapi_offline import FastAPIOffline

    from .. import __version__

    check_dependencies()
    cfg = config or ServeConfig()
    service, pool_time = ServiceTime(), ServiceTime()
    batcher = MicroBatcher(_batch_function(segmenter), max_batch=cfg.max_batch, service=service)
    admission = Admission(
        service, pool_time, pool_workers=cfg.decode_workers, max_inflight=cfg.max_inflight,
        max_bytes=cfg.max_decoded_mb << 20, max_per_client=cfg.client_share,
    )  # fmt: skip
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

    def model_pixels(width: int, height: int) -> int:
        """Pixels the model computes for a ``width`` x ``height`` image."""
        h, w = resized_size(height, width, input_size) if input_size is not None else (height, width)
        return h * w

    def model_cost(width: int, height: int) -> int:
        """The model thread's work for an upload, in model-input pixels (see :class:`.warmup.WarmupReport`)."""
        weight = app.state.warmup.image_pixel_weight if app.state.warmup else 0.0
        return model_pixels(width, height) + round(weight * width * height)

    async def warm() -> None:
        """Warm up and time the model; the server is ready once one image fits well within the timeout."""
        side = cfg.warmup_side or input_size or NATIVE_WARMUP_SIDE
        large = warmup_image(4 * side, 4 * side) if input_size else None  # the same model input, 16x the pixels
        try:
            report = await warm_up(batcher, warmup_image(side, side), model_pixels(side, side), cfg.max_batch, large)
        except Exception:
            logger.exception("warm-up failed: the server stays unready")
            app.state.status = "warm-up failed"
            return
        app.state.warmup = report
        slow = report.single_s * SAFETY > cfg.timeout_s
        app.state.status = "too slow for the timeout" if slow else "ready"
        logger.info("warm-up: %s", report)
        if slow:
            logger.error("not ready: one image takes %.2f s, too slow for the %g s timeout", report.single_s,
                         cfg.timeout_s)  # fmt: skip
        else:
            logger.info("ready: %s answers one image in %.2f s (batches of up to %d)", info["name"], report.single_s,
                        report.max_batch)  # fmt: skip

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.pool = ThreadPoolExecutor(cfg.decode_workers, thread_name_prefix="fcnseg-decode")
        batcher.start()
        warming = asyncio.get_running_loop().create_task(warm()) if cfg.warmup else None
        app.state.status = "warming up" if cfg.warmup else "ready"
        yield
        for close in app.state.closers:  # e.g. a fine-tuning run (.loop): stopped so that it can resume
            close()
        if warming is not None:
            warming.cancel()
        await batcher.stop()
        app.state.pool.shutdown(wait=False, cancel_futures=True)

    app = FastAPIOffline(
        title="fcnseg",
        version=__version__,
        description="Semantic segmentation with FCN-ResNet. POST an image to `/v1/segment`; the web page is at `/`.",
        lifespan=lifespan,
        swagger_ui_parameters={"validatorUrl": None},  # Swagger UI's validator badge would call swagger.io
        redoc_url=None,  # ReDoc's sidebar logo loads from cdn.redoc.ly; Swagger UI at /docs is self-contained
    )
    if cfg.api_key:
        app.add_middleware(BearerAuth, api_key=cfg.api_key)
    if cfg.cors_origins:
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware, allow_origins=list(cfg.cors_origins), allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"], expose_headers=["X-Request-ID"],
        )  # fmt: skip
    app.add_middleware(RequestIds)  # the outermost: every answer, refusals included, has a request id
    app.state.batcher, app.state.admission, app.state.config = batcher, admission, cfg
    app.state.status, app.state.warmup = "starting", None
    app.state.info, app.state.closers = info, []  # what /v1/models says (a model swap updates it); run at shutdown

    @app.exception_handler(HTTPError)
    async def _http_error(request: Request, exc: HTTPError) -> JSONResponse:
        rid = request.state.request_id
        return JSONResponse(error_body(exc.detail, rid), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(StarletteHTTPException)  # 404, 405 from the router
    async def _routing_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        rid = request.state.request_id
        return JSONResponse(error_body(exc.detail, rid), status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)  # bad query parameters, e.g. alpha=3
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{k: e[k] for k in ("loc", "msg", "type") if k in e} for e in exc.errors()]
        return JSONResponse(error_body(errors, request.state.request_id), status_code=422)

    @app.exception_handler(ClientGoneError)
    async def _client_gone(request: Request, exc: ClientGoneError) -> Response:
        logger.info("request %s: %s", request.state.request_id, exc)
        return Response(status_code=400)  # nobody reads it: the connection is closed

    async def offload(fn: Any, *args: Any) -> tuple[Any, float]:
        """``fn(*args)`` in the bounded decode/encode pool; returns its result and the seconds it ran."""

        def timed() -> tuple[Any, float]:
            t = time.perf_counter()
            return fn(*args), time.perf_counter() - t

        return await asyncio.get_running_loop().run_in_executor(app.state.pool, timed)

    def checked_pixels(size: tuple[int, int], name: str) -> None:
        """413 when an image of ``size``, or the model's input for it, is over the limits."""
        w, h = size
        if w * h > cfg.max_pixels:
            raise HTTPError(413, f"{name}: image has {w * h} pixels, over the {cfg.max_pixels} limit; not decoded")
        pixels = model_pixels(w, h)
        if pixels > cfg.max_model_pixels:
            raise HTTPError(
                413, f"{name}: {w}x{h} is {pixels} pixels for the model, over the {cfg.max_model_pixels} pixel "
                "limit (image too large, or aspect ratio too extreme)",
            )  # fmt: skip

    def decode(data: bytes, name: str) -> Image.Image:
        try:
            return load_image(data, max_pixels=cfg.max_pixels, name=name)
        except ImageDecodeError as e:
            raise HTTPError(400, str(e)) from None

    def render(result: Any, fmt: str, alpha: float) -> Response:
        if fmt == "png":
            return Response(_png(result.to_image()), media_type="image/png")
        if fmt == "overlay":
            return Response(_png(result.overlay(alpha)), media_type="image/png")
        h, w = result.mask.shape
        classes = [
            {"index": s["index"], "name": s["name"], "area": s["share"], "pixels": s["pixels"],
             "segmentation": coco_rle(result.mask == s["index"])}  # COCO compressed RLE, as every tool reads
            for s in result.class_stats(confidence=False)  # largest first
        ]  # fmt: skip
        return JSONResponse({"model": info["name"], "width": w, "height": h, "classes": classes})

    async def infer(request: Request | None, image: Any, cost: int, deadline: float) -> Any:
        """The model's result for ``image`` (an image or a :class:`_Detailed` one), unless the client leaves first
        (when ``request`` is given) or the deadline passes."""
        work = asyncio.ensure_future(batcher.submit(image, cost=cost, deadline=deadline))
        gone = asyncio.ensure_future(_until_disconnect(request) if request else asyncio.Event().wait())
        try:
            await asyncio.wait({work, gone}, timeout=deadline - time.monotonic(), return_when="FIRST_COMPLETED")
        finally:
            gone.cancel()
        if not work.done():
            work.cancel()  # dropped if still queued; a running batch finishes without it
            if gone.done():
                raise HTTPError(503, "client went away")  # nobody reads this; the log shows it
            raise HTTPError(504, f"no result within {cfg.timeout_s:g} s")
        try:
            return work.result()
        except DeadlineExceededError:
            retry = {"Retry-After": str(max(1, round(admission.backlog_seconds())))}
            raise HTTPError(503, "server busy: the request waited too long to finish in time", retry) from None
        except Exception:  # the model itself failed (e.g. out of memory): the server goes on
            logger.exception("request %s: inference failed", request.state.request_id)
            raise HTTPError(503, "inference failed; see the server log", {"Retry-After": "1"}) from None

    auth = [Depends(openapi_bearer())] if cfg.api_key else []  # declares the key to /docs; BearerAuth checks it

    @contextmanager
    def slot(client: str) -> Iterator[Any]:
        """A request's admission ticket, held until it ends however it ends: refused while the server is not ready
        (503) or when it or ``client`` is at its limit (:func:`_busy`)."""
        if app.state.status != "ready":
            raise HTTPError(503, f"not ready: {app.state.status}", {"Retry-After": "1"})
        try:
            ticket = admission.arrive(client)
        except OverloadError as e:
            raise _busy(e) from None
        try:
            yield ticket
        finally:
            admission.leave(ticket)

    def admit(ticket: Any, data: bytes, name: str, deadline: float) -> None:
        """An image's bytes in: its slot taken and its cost charged from the header's size (a header that says
        nothing is left to decoding, which says what is wrong); ``OverloadError`` when it cannot be."""
        admission.enter(ticket)
        size = _header_size(data)
        if size is not None:
            checked_pixels(size, name)
            admission.charge(ticket, cost=model_cost(*size), image_pixels=size[0] * size[1],
                             nbytes=BYTES_PER_PIXEL * size[0] * size[1], deadline=deadline)  # fmt: skip

    @app.post(
        "/v1/segment",
        dependencies=auth,
        summary="Segment one image",
        response_class=Response,
        responses={
            200: {
                "description": "The mask as a palette PNG, the overlay PNG, or JSON: per class its area and its "
                "mask as COCO compressed RLE (column-major counts, as pycocotools.mask.decode reads)",
                "content": {"image/png": {}, "application/json": {}},
            },
            400: {"description": "Not an image, corrupt, or a malformed multipart body"},
            401: {"description": "Missing or wrong API key (when the server has one)"},
            408: {"description": "The upload arrived too slowly (see --body-timeout, --min-upload-rate)"},
            413: {"description": "Upload too large, or too many pixels"},
            415: {"description": "Unsupported media type"},
            503: {"description": "Busy (it could not be answered in time), warming up, or inference failed; "
                  "retry after the Retry-After header"},
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
    )  # fmt: skip
    async def segment(
        request: Request,
        format: Literal["json", "png", "overlay"] | None = Query(
            None, description="Response kind; when absent, chosen from Accept (image/png gives the mask PNG)."
        ),
        alpha: float = Query(0.5, ge=0.0, le=1.0, description="Overlay opacity"),
    ) -> Response:
        """Upload an image (multipart field ``file``, or the raw image as the body) and get its segmentation."""
        deadline = time.monotonic() + cfg.timeout_s
        if format is None:
            accept = request.headers.get("accept", "")
            format = "png" if "image/png" in accept and "application/json" not in accept else "json"
        with slot(request.client.host if request.client else "") as ticket:  # before the body is read
            try:
                data, name = await upload(request, cfg.body_limits, lambda n: admission.hold_upload(ticket, n))
                admit(ticket, data, name, deadline)
            except OverloadError as e:
                raise _busy(e) from None
            image, decode_s = await offload(decode, data, name)
            admission.decoded(ticket)
            del data
            result = await infer(request, image, model_cost(image.width, image.height), deadline)
            admission.computed(ticket)
            response, render_s = await offload(render, result, format, alpha)
            pool_time.observe(decode_s + render_s, image.width * image.height)
            return response

    async def segment_fetched(client: str, data: bytes, name: str) -> Any:
        """An image the server fetched itself (Label Studio's tasks), through the upload path from the header
        check on, one admission slot each; segmented with each pixel's confidence and entropy. Errors are
        :class:`HTTPError`, as an upload's would be."""
        deadline = time.monotonic() + cfg.timeout_s
        with slot(client) as ticket:
            try:
                admit(ticket, data, name, deadline)
            except OverloadError as e:
                raise _busy(e) from None
            image, _ = await offload(decode, data, name)
            admission.decoded(ticket)
            del data
            result = await infer(None, _Detailed(image), model_cost(image.width, image.height), deadline)
            admission.computed(ticket)
            return result

    app.include_router(label_studio_router(segment_fetched, categories, info, ImageFetcher(
        cfg.label_studio_url, cfg.label_studio_api_key, cfg.label_studio_allow, cfg.max_upload_bytes, cfg.timeout_s,
    ), concurrency=2 * cfg.max_batch, max_body=cfg.max_upload_bytes))  # fmt: skip

    @app.get("/v1/models", dependencies=auth, summary="The served model: classes, palette, metrics")
    async def models() -> dict[str, Any]:
        return {"models": [info]}

    @app.get("/healthz", summary="Liveness: the process answers")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", summary="Readiness: warmed up, and one image is answered well within the timeout",
             responses={503: {}})  # fmt: skip
    async def readyz() -> JSONResponse:
        ready = app.state.status == "ready" and batcher.running
        report: WarmupReport | None = app.state.warmup
        body = {
            "status": app.state.status if batcher.running else "starting",
            "pid": os.getpid(),  # which process answered, behind a balancer or with --workers
            "inflight": admission.inflight,
            "queued": batcher.queued,
            "max_batch": batcher.max_batch,
            "batches": batcher.stats.batches,
            "items": batcher.stats.items,
            "expired": batcher.stats.expired,
            "abandoned": batcher.stats.abandoned,
            "model_s_per_megapixel": None if service.per_pixel is None else round(service.per_pixel * 1e6, 4),
            "pool_s_per_megapixel": None if pool_time.per_pixel is None else round(pool_time.per_pixel * 1e6, 4),
            "warmup": report.as_dict() if report else None,
        }
        return JSONResponse(body, status_code=200 if ready else 503)

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> FileResponse:
        return FileResponse(STATIC / "favicon.ico", media_type="image/x-icon")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
