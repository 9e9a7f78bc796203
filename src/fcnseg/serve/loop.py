"""Closing the labelling loop in the server: Label Studio's webhook starts a fine-tuning run, and the server swaps
to its model only when that model scores better on validation than the one it serves.

``POST /label-studio/webhook``: ``START_TRAINING`` (the *Start Training* button of Label Studio's model settings)
starts a run; with ``train_every`` N, so does every N-th ``ANNOTATION_CREATED``/``ANNOTATION_UPDATED``. One run
at a time: a trigger during a run is answered ``already training``. Events of other projects are ignored.

A run is :mod:`.finetune` in a process of its own (its own session, so stopping the server stops it and its
training with SIGTERM: the training saves ``last.pth``), in a folder ``RUNS/run-NNNN`` made for it and never
reused. A trigger after an interrupted run (a folder with ``last.pth`` and no verdict) continues that run instead
of starting over: ``fcnseg train --resume``. When the run ends, its verdict decides: a better validation mIoU
swaps the model (:class:`~.swap.ServedModel`, atomic: batches already running finish on the old one); anything
else keeps the served one and says why. ``GET /label-studio/versions`` lists every version (the served one
marked, each with its mIoU, run folder and reason), the run in progress, and the end of its log;
``RUNS/versions.json`` keeps the list across restarts.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse

from .._atomic import atomic_path
from ..weights import file_identity
from .errors import HTTPError, logger
from .finetune import LOG, VERDICT, Job
from .swap import ServedModel, Version

__all__ = ["TRAIN_EVENTS", "TrainingLoop", "add_loop_routes"]

TRAIN_EVENTS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED")
MAX_WEBHOOK_BYTES = 1 << 20  # Label Studio's event carries the task and its annotation: far less than this
LOG_TAIL = 20  # lines of the running (or last) run's log that /versions shows


class TrainingLoop:
    """Starts fine-tuning runs (one at a time), and swaps ``served`` to a run's model when its verdict says so.

    Args:
        served: the model the server answers with.
        runs: the folder of run folders.
        job: the run's settings, with the served weights filled in at each start.
        load: builds a segmenter for a checkpoint path, set up as the served one (device, size, speed path).
        on_swap: called with the new segmenter after a swap (the app updates what it says about the model).
        train_every: start a run after this many annotation events (None: only on START_TRAINING).
    """

    def __init__(
        self,
        served: ServedModel,
        runs: str | Path,
        job: Job,
        load: Callable[[str], Any],
        on_swap: Callable[[Any], None] = lambda segmenter: None,
        train_every: int | None = None,
    ) -> None:
        self.served, self.runs, self.job, self.load, self.on_swap = served, Path(runs), job, load, on_swap
        self.train_every, self.events = train_every, 0
        self._lock = threading.Lock()
        self._process: subprocess.Popen | None = None
        self._run: Path | None = None  # the run in progress, else the last one
        self._watcher: threading.Thread | None = None
        self.outcome: str | None = None  # how the last run ended
        self.runs.mkdir(parents=True, exist_ok=True)
        self.history: list[Version] = self._read_history()
        if not any(v.version == served.version.version for v in self.history):
            self.history.append(served.version)

    def _read_history(self) -> list[Version]:
        try:
            return [Version(**v) for v in json.loads((self.runs / "versions.json").read_text())]
        except (OSError, ValueError, TypeError):
            return []

    def _write_history(self) -> None:
        with atomic_path(self.runs / "versions.json") as tmp:
            tmp.write_text(json.dumps([v.as_dict() for v in self.history], indent=2))

    @property
    def training(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def webhook(self, event: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """Act on one Label Studio event; (HTTP status, answer)."""
        action = event.get("action")
        project = event.get("project")
        project_id = project.get("id") if isinstance(project, dict) else project
        if project_id is not None and str(project_id).split(".")[0] != str(self.job.project):
            return 200, {"status": f"ignored: this server trains on project {self.job.project}, not {project_id}"}
        if action == "START_TRAINING":
            return self.start(f"{action}")
        if action in TRAIN_EVENTS and self.train_every:
            with self._lock:
                self.events += 1
                due = self.events >= self.train_every
                if due:
                    self.events = 0
            if due:
                return self.start(f"{self.train_every} annotation events")
            return 200, {"status": f"counted: {self.events} of {self.train_every} annotation events"}
        return 200, {"status": f"ignored: {action!r} starts no training"}

    def start(self, reason: str) -> tuple[int, dict[str, Any]]:
        """Start a run (or continue the interrupted one) unless one is running."""
        with self._lock:
            if self.training:
                return 200, {"status": "already training", "run": str(self._run)}
            run = self._interrupted() or self._new_run()
            served = self.served.version
            if not (run / "job.json").is_file():
                job = Job(**{**self.job.__dict__, "weights": served.weights, "cache": self._last_data()})
                job.write(run)
            with open(run / LOG, "ab") as log:
                log.write(f"started by {reason}, serving {served.version}\n".encode())
                self._process = subprocess.Popen(
                    [sys.executable, "-m", "fcnseg.serve.finetune", str(run)],
                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=os.environ.copy(),
                )  # fmt: skip
            self._run = run
            self._watcher = threading.Thread(target=self._finish, args=(self._process, run), daemon=True)
            self._watcher.start()
        logger.info("label studio: training started in %s (%s)", run, reason)
        return 201, {"status": "started", "run": str(run)}

    def _interrupted(self) -> Path | None:
        """The latest run folder if its training saved a step but the run never reached a verdict."""
        runs = self._run_folders()
        if runs and (runs[-1] / "last.pth").is_file() and not (runs[-1] / VERDICT).is_file():
            return runs[-1]
        return None

    def _run_folders(self) -> list[Path]:
        return sorted(p for p in self.runs.glob("run-[0-9][0-9][0-9][0-9]") if p.is_dir())

    def _new_run(self) -> Path:
        """A fresh folder ``run-NNNN``, one more than the highest; made exclusively, so it is never shared."""
        runs = self._run_folders()
        n = int(runs[-1].name.split("-")[1]) + 1 if runs else 1
        while True:
            run = self.runs / f"run-{n:04d}"
            try:
                run.mkdir()
                return run
            except FileExistsError:
                n += 1

    def _last_data(self) -> str | None:
        done = [p / "data" for p in self._run_folders() if (p / "data" / "export.json").is_file()]
        return str(done[-1]) if done else None

    def _finish(self, process: subprocess.Popen, run: Path) -> None:
        """When the run's process ends: read the verdict, swap if better, record the version."""
        code = process.wait()
        best = run / "best.pth"
        try:
            verdict = json.loads((run / VERDICT).read_text()) if code == 0 else None
        except (OSError, ValueError):
            verdict = None
        if verdict is None:
            self.outcome = f"failed (exit {code}); see {run / LOG}"
            logger.error("label studio: run %s %s", run, self.outcome)
            return
        if not best.is_file():
            self.outcome = f"{verdict['reason']}; nothing to swap"
            logger.info("label studio: run %s: %s", run, self.outcome)
            return
        version = Version(
            file_identity(best), str(best), run=str(run), miou=verdict.get("miou"),
            served_miou=verdict.get("served_miou"), swapped=bool(verdict["better"]), reason=verdict["reason"],
        )  # fmt: skip
        if version.swapped:
            try:
                segmenter = self.load(str(best))
            except Exception as e:  # a checkpoint that does not load is not served
                version.swapped, version.reason = False, f"{version.reason}; but it failed to load: {e}"
            else:
                self.served.swap(segmenter, version)
                self.on_swap(segmenter)
        with self._lock:
            self.history.append(version)
            self._write_history()
        self.outcome = f"{version.reason}; {'swapped' if version.swapped else 'kept the served model'}"
        logger.info("label studio: run %s: %s", run, self.outcome)

    def wait(self, timeout: float | None = None) -> None:
        """Until the run in progress has ended and been decided (tests and shutdown)."""
        if self._watcher is not None:
            self._watcher.join(timeout)

    def close(self) -> None:
        """Stop the run in progress: SIGTERM to its process group, so the training saves ``last.pth``."""
        process = self._process
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            process.wait()

    def status(self) -> dict[str, Any]:
        """What ``/label-studio/versions`` answers."""
        served = self.served.version
        with self._lock:
            versions = [{**v.as_dict(), "served": v.version == served.version} for v in self.history]
        run = self._run
        training = {"state": "training" if self.training else "idle", "run": None if run is None else str(run),
                    "outcome": None if self.training else self.outcome}  # fmt: skip
        if run is not None and (run / LOG).is_file():
            training["log"] = str(run / LOG)
            training["log_tail"] = (run / LOG).read_text(errors="replace").splitlines()[-LOG_TAIL:]
        return {"served": served.version, "versions": versions, "training": training}


def add_loop_routes(app: Any, loop: TrainingLoop) -> None:
    """``POST /label-studio/webhook`` and ``GET /label-studio/versions`` on ``app``; the run stops with the app."""
    app.state.closers.append(loop.close)

    @app.post("/label-studio/webhook", summary="Label Studio's events: START_TRAINING starts a fine-tuning run")
    async def webhook(request: Request) -> JSONResponse:
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_WEBHOOK_BYTES:
                raise HTTPError(413, f"a webhook event is at most {MAX_WEBHOOK_BYTES} bytes")
        try:
            event = json.loads(body)
        except ValueError:
            raise HTTPError(400, "the webhook body is not JSON") from None
        if not isinstance(event, dict):
            raise HTTPError(400, "the webhook body is not a JSON object with an 'action'")
        status, answer = loop.webhook(event)
        return JSONResponse(answer, status_code=status)

    @app.get("/label-studio/versions", summary="The model versions: the served one, their mIoU, the run in progress")
    async def versions() -> dict[str, Any]:
        return loop.status()
