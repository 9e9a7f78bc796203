"""Label Studio's ML-backend protocol under ``/label-studio``: the URL a user pastes into a project's *Model*
settings is ``http://HOST:PORT/label-studio``.

Label Studio calls (its ``ml/api_connector.py``; the shapes of ``label-studio-ml-backend``'s ``api.py``):

- ``GET /health`` -> ``{"status": "UP"}``; it allows one second, so this does no work.
- ``POST /setup`` with the project's config (``schema``) -> ``{"model_version": ...}``, or 400 when the config has
  no brush or polygon tool on an image. ``model_version`` is the served weights' identity (name and content hash).
- ``POST /predict`` with ``tasks`` and ``label_config`` -> ``{"results": [...], "model_version": ...}``: one entry
  per task, in order: ``{"result": regions, "score": ..., "model_version": ...}``
  (:func:`fcnseg.labelstudio.prediction`). A task whose image cannot be fetched or segmented gets
  ``{"error": ...}`` instead, with no ``result``: Label Studio logs and skips it and keeps the other tasks'.

The images are fetched by :class:`fcnseg.labelstudio.ImageFetcher` (Label Studio's own paths with its API key,
other hosts only when allowed) and segmented through the server's usual admission and batching, a few at a time.
Classes the config names nowhere are listed in the log once per config. ``/webhook`` and ``/versions`` (training
from Label Studio) are not served here.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request

from ..labelstudio import FetchError, ImageFetcher, LabelConfig, parse_label_config, prediction
from .errors import HTTPError, logger

__all__ = ["PREFIX", "label_studio_router"]

PREFIX = "/label-studio"
MAX_CONFIGS = 64  # parsed configs kept (one per project, in practice)

Segment = Callable[[str, bytes, str], Awaitable[Any]]  # (client, image bytes, name) -> result with confidence


async def json_body(request: Request, limit: int) -> dict[str, Any]:
    """The request's JSON object, read up to ``limit`` bytes (413 beyond); 400 if it is not a JSON object."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPError(413, f"request body over the {limit} byte limit")
        chunks.append(chunk)
    try:
        body = json.loads(b"".join(chunks))
    except ValueError as e:
        raise HTTPError(400, f"request body is not JSON: {e}") from None
    if not isinstance(body, dict):
        raise HTTPError(400, "request body must be a JSON object")
    return body


def label_studio_router(
    segment: Segment,
    categories: list[str],
    info: dict[str, Any],
    fetcher: ImageFetcher,
    *,
    concurrency: int = 8,
    max_body: int = 20 << 20,
) -> APIRouter:
    """The ``/label-studio`` routes. ``segment`` runs one fetched image through the server; ``info`` is the served
    model's description (its ``model_version`` is read at each call); at most ``concurrency`` images of one
    ``/predict`` are fetched or segmented at once; a request body may hold ``max_body`` bytes."""
    router = APIRouter(prefix=PREFIX, tags=["Label Studio ML backend"])
    configs: dict[tuple[str, tuple[str, ...]], LabelConfig] = {}

    def config_of(xml: Any, classes: list[str] | None = None) -> LabelConfig:
        """The parsed config for ``classes`` (default: the served model's; cached); its unmatched classes logged the
        first time it is seen; 400 if unusable."""
        if not isinstance(xml, str):
            raise HTTPError(400, "no labelling config (label_config / schema) in the request")
        key = (xml, tuple(categories if classes is None else classes))
        if key not in configs:
            try:
                parsed = parse_label_config(xml, list(key[1]))
            except ValueError as e:
                raise HTTPError(400, str(e)) from None
            if len(configs) >= MAX_CONFIGS:
                configs.clear()
            configs[key] = parsed
            if parsed.unmatched:
                logger.info("Label Studio config names no label for the classes %s: they are left out of its "
                            "predictions", ", ".join(parsed.unmatched))  # fmt: skip
        return configs[key]

    @router.get("/health", summary="Label Studio's health check")
    async def health() -> dict[str, Any]:
        return {"status": "UP", "model_class": "fcnseg", "model_version": info.get("model_version")}

    @router.post("/setup", summary="Label Studio connects a project: check its config, say the model version")
    async def setup(request: Request) -> dict[str, Any]:
        body = await json_body(request, max_body)
        config_of(body.get("schema"))
        return {"model_version": info.get("model_version")}

    @router.post("/predict", summary="Label Studio asks for predictions (pre-annotations) of its tasks")
    async def predict(request: Request) -> dict[str, Any]:
        body = await json_body(request, max_body)
        tasks = body.get("tasks")
        if not isinstance(tasks, list) or not all(isinstance(t, dict) for t in tasks):
            raise HTTPError(400, "tasks must be a list of Label Studio tasks")
        config = config_of(body.get("label_config"))
        version = info.get("model_version")
        client = f"label-studio {request.client.host if request.client else ''}"
        gate = asyncio.Semaphore(concurrency)

        async def one(task: dict[str, Any]) -> dict[str, Any]:
            async with gate:
                try:
                    results = {key: await image_result(client, task, key) for key in config.data_keys}
                except (FetchError, HTTPError) as e:
                    why = e.detail if isinstance(e, HTTPError) else str(e)
                    logger.warning("Label Studio task %s: no prediction: %s", task.get("id"), why)
                    return {"error": str(why), "task": task.get("id")}
                # the model that made them names the classes and the version (a swap may have come in between)
                made_by = next(iter(results.values()))
                by = config_of(body.get("label_config"), made_by.categories)
                return prediction(by, results, getattr(made_by, "model_version", version))

        return {"results": await asyncio.gather(*map(one, tasks)), "model_version": version}

    async def image_result(client: str, task: dict[str, Any], key: str) -> Any:
        data = task.get("data")
        url = data.get(key) if isinstance(data, dict) else None
        if not isinstance(url, str) or not url:
            raise FetchError(f"the task has no image URL under data.{key}")
        content = await asyncio.to_thread(fetcher.fetch, url)
        return await segment(client, content, url)

    return router
