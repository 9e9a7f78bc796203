"""Pulling a Label Studio project to train on: its JSON export, its labelling config and its images, into a folder
that :class:`fcnseg.data.LabelStudioSegmentation` reads as it is.

Label Studio's own conventions: the server's URL and an API key (``LABEL_STUDIO_URL``, ``LABEL_STUDIO_API_KEY``,
from *Account & Settings*; every call goes through :class:`~.fetch.ImageFetcher`, which sends it as Label Studio
wants it, a legacy token or a personal access token). Calls made:
``GET /api/projects/ID`` (the labelling config, whose labels fix the class order), ``GET
/api/projects/ID/export?exportType=JSON`` (annotated tasks only, Label Studio's default) and, for each image not
pulled before, the image, fetched by :class:`~.fetch.ImageFetcher` under the server's rules (``/data/upload/...``
and ``/data/local-files/?d=...`` from Label Studio with the key; another host only if ``allow`` names it). An image
the dataset cannot place under its root (another host's URL, cloud storage) is not fetched: the export names it,
and :mod:`fcnseg.data.check` reports it missing.

The folder: ``export.json``, ``label_config.xml``, and each image at its :func:`~fcnseg.data.labelstudio.
reference_path` (``upload/P/NAME``...). An image already there is not fetched again (Label Studio gives every
upload a path of its own); ``cache`` names a folder of earlier pulls whose images are linked instead of fetched,
so that every run keeps a complete copy of what it trained on at the cost of a hard link. Every file is written
to a temporary name and renamed, so an interrupted pull leaves no half image and no half export.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .._atomic import atomic_path
from ..data.labelstudio import image_reference, reference_path
from .fetch import FetchError, ImageFetcher

__all__ = ["KEY_ENV", "URL_ENV", "LabelStudioError", "PullResult", "connection", "pull_project"]

URL_ENV, KEY_ENV = "LABEL_STUDIO_URL", "LABEL_STUDIO_API_KEY"
TIMEOUT_S = 60.0  # per call; an export of a large project takes Label Studio a while
MAX_IMAGE_BYTES = 200 << 20  # a training image may be larger than an upload the server accepts
MAX_EXPORT_BYTES = 4 << 30  # brush regions make an export large; this only bounds a runaway answer


class LabelStudioError(OSError):
    """Label Studio could not be reached, refused the key, or answered something that is not what was asked."""


@dataclass
class PullResult:
    """What a pull wrote: the export's path, its tasks, and how many images were fetched, linked or already there."""

    export: Path
    tasks: int
    fetched: int
    linked: int
    present: int
    not_fetched: list[str]  # why each image that is not there was not fetched; data check reports them missing


def connection(
    url: str | None = None, key: str | None = None, environ: dict[str, str] | None = None
) -> tuple[str, str]:
    """The server URL and API key: as given, else ``$LABEL_STUDIO_URL`` / ``$LABEL_STUDIO_API_KEY``."""
    environ = os.environ if environ is None else environ
    url, key = url or environ.get(URL_ENV), key or environ.get(KEY_ENV)
    if not url:
        raise ValueError(f"name the Label Studio server (--label-studio URL or ${URL_ENV})")
    if urlsplit(url).scheme not in ("http", "https"):
        raise ValueError(f"{url}: not an http(s) URL of a Label Studio server")
    if not key:
        raise ValueError(f"set ${KEY_ENV} to your Label Studio API key (Account & Settings)")
    return url.rstrip("/"), key


def _json(fetcher: ImageFetcher, path: str) -> Any:
    """A Label Studio API answer, as JSON; :class:`LabelStudioError` naming the call when it fails."""
    try:
        return json.loads(fetcher.fetch(path))
    except FetchError as e:
        raise LabelStudioError(f"Label Studio: {e}") from None
    except ValueError:
        raise LabelStudioError(
            f"{fetcher.label_studio_url}{path}: the answer is not JSON (is this Label Studio?)"
        ) from None


def pull_project(url: str, key: str, project: int, out: str | Path, cache: str | Path | None = None) -> PullResult:
    """Pull project ``project`` into the folder ``out`` (see the module docstring); returns what was written."""
    out = Path(out)
    fetcher = ImageFetcher(url, key, max_bytes=MAX_IMAGE_BYTES, timeout=TIMEOUT_S)
    info = _json(fetcher, f"/api/projects/{project}")
    tasks = _json(replace(fetcher, max_bytes=MAX_EXPORT_BYTES), f"/api/projects/{project}/export?exportType=JSON")
    if not isinstance(info, dict) or not isinstance(info.get("label_config"), str) or not isinstance(tasks, list):
        raise LabelStudioError(f"{url}: project {project} answered without a labelling config or a task list")
    out.mkdir(parents=True, exist_ok=True)
    result = PullResult(out / "export.json", len(tasks), 0, 0, 0, [])
    for task in tasks:
        try:
            reference = image_reference(task)
            relative = reference_path(reference)
        except (ValueError, AttributeError):
            result.not_fetched.append(str(task.get("data") if isinstance(task, dict) else task)[:200])
            continue
        target = out / relative
        if target.is_file():
            result.present += 1
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        cached = Path(cache) / relative if cache is not None else None
        if cached is not None and cached.is_file():
            _link(cached, target)
            result.linked += 1
            continue
        try:
            data = fetcher.fetch(reference)
        except FetchError as e:  # the other images still come; data check names this one
            result.not_fetched.append(str(e))
            continue
        with atomic_path(target) as tmp:
            tmp.write_bytes(data)
        result.fetched += 1
    with atomic_path(out / "label_config.xml") as tmp:
        tmp.write_text(info["label_config"], encoding="utf-8")
    with atomic_path(result.export) as tmp:  # last: a folder with an export has all it could fetch
        tmp.write_text(json.dumps(tasks), encoding="utf-8")
    return result


def _link(source: Path, target: Path) -> None:
    """``target`` as a hard link to ``source`` (a copy across file systems), appearing whole or not at all."""
    with atomic_path(target) as tmp:
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copyfile(source, tmp)
