"""One fine-tuning run of the labelling loop, in a process of its own (``python -m fcnseg.serve.finetune RUN``):
pull the Label Studio project, train from the served model, then score the new model and the served one on the
same validation split and write the verdict. The server (:mod:`.loop`) starts it and reads the verdict.

The run folder ``RUN`` holds everything: ``job.json`` (what to do, written by the server), ``data/`` (the pulled
export, config and images), the training run itself (``last.pth``, ``best.pth``, ``log.jsonl``), ``train.log``
(everything this process and the training print) and, at the end, ``verdict.json``. Started again on the same
folder it continues: the pull is kept, the training resumes from ``last.pth`` (``fcnseg train --resume``, exact),
the scoring is redone. The API key comes from the environment (``LABEL_STUDIO_API_KEY``), never from a file.

The comparison is fair by construction: both models are scored on the new export's validation split (one task in
five, by id, see :mod:`fcnseg.data.labelstudio`), at the size the server serves at. A served model whose classes
differ from the project's labels (the first fine-tuning, from VOC's classes) is scored as its predictions would
reach Label Studio: each of its classes counts as the project's label of the same name (case-insensitive), and
every other one as background.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .._atomic import atomic_path
from ..data.labelstudio import LabelStudioSegmentation
from ..labelstudio.pull import connection, pull_project

__all__ = ["JOB", "LOG", "VERDICT", "Job", "ClassRemap", "run_job", "score"]

JOB, VERDICT, LOG = "job.json", "verdict.json", "train.log"


@dataclass
class Job:
    """What one run does: the project to pull, the model to start from, how to train, the size to score at."""

    url: str
    project: int
    model: str
    weights: str | None  # the served model's weights (a checkpoint path or a registered name)
    size: int | None  # the served resize size: both models are scored at it
    train_args: list[str] = field(default_factory=list)  # further `fcnseg train` flags (epochs, sizes, lr...)
    cache: str | None = None  # an earlier run's data folder: its images are linked, not fetched again

    def write(self, run: Path) -> None:
        with atomic_path(run / JOB) as tmp:
            tmp.write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def read(cls, run: Path) -> Job:
        return cls(**json.loads((run / JOB).read_text()))


class ClassRemap(nn.Module):
    """A model's logits as those of other classes: each target class takes the source class of its name
    (case-insensitive), the target's background takes the best of every source class it does not name, and a
    target class no source class names never wins. The argmax is then the source's argmax, renamed."""

    def __init__(self, model: nn.Module, source: list[str], target: list[str]) -> None:
        super().__init__()
        self.model = model
        index = {name.lower(): i for i, name in enumerate(source)}
        self.take = [index.get(name.lower(), -1) for name in target]
        self.take[0] = -1  # background: whatever the source calls it
        named = {i for i in self.take if i >= 0}
        self.rest = [i for i in range(len(source)) if i not in named]

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        logits = self.model(x)["out"]  # (N, K_source, H, W)
        low = torch.full_like(logits[:, :1], torch.finfo(logits.dtype).min)
        cols = [logits[:, i : i + 1] if i >= 0 else low for i in self.take]
        cols[0] = logits[:, self.rest].amax(1, keepdim=True) if self.rest else low
        return {"out": torch.cat(cols, 1)}  # (N, K_target, H, W)


def score(model_name: str, weights: str | None, size: int | None, dataset: LabelStudioSegmentation) -> float:
    """Validation mIoU of a model on ``dataset`` at ``size``, its classes matched to the dataset's by name."""
    from ..evaluate import evaluate_dataset
    from ..predict import Segmenter

    seg = Segmenter(model_name, weights, device="cpu", size=size, optimize="none")
    model = seg.model
    if [c.lower() for c in seg.categories] != [c.lower() for c in dataset.categories]:
        model = ClassRemap(model, list(seg.categories), list(dataset.categories))
    run = evaluate_dataset(model, dataset, len(dataset.categories), resize_size=seg.preprocess.resize_size)
    return float(run.confusion.compute()["miou"])


def _train(job: Job, run: Path, export: Path, log: Any) -> None:
    """``fcnseg train`` in a process of its own, printing into ``log``: a new run, or the resumed one."""
    last = run / "last.pth"
    if last.is_file():
        args = ["--resume", str(last)]
    else:
        args = ["--dataset", "label-studio", "--data-root", str(export), "--output-dir", str(run), *job.train_args]
        if job.weights is not None:
            args += ["--weights", job.weights]
    command = [sys.executable, "-m", "fcnseg", "train", "--no-progress", *args]
    print(f"$ {' '.join(command)}", file=log, flush=True)
    code = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT).returncode
    if code != 0:
        raise RuntimeError(f"fcnseg train exited with {code} (see {run / LOG})")


def run_job(run: str | Path) -> dict[str, Any]:
    """Pull, train, score both models, write ``verdict.json``; returns the verdict."""
    run = Path(run)
    job = Job.read(run)
    with open(run / LOG, "a", buffering=1) as log:
        export = run / "data" / "export.json"
        if not export.is_file():
            url, key = connection(job.url)
            pulled = pull_project(url, key, job.project, run / "data", cache=job.cache)
            print(f"pulled project {job.project}: {pulled.tasks} tasks, {pulled.fetched} images fetched, "
                  f"{pulled.linked} linked", file=log)  # fmt: skip
        val = LabelStudioSegmentation(export, "val")
        if len(val) == 0:
            verdict = {"better": False, "reason": "no annotated task is in the validation split yet (one in five)"}
        else:
            _train(job, run, export, log)
            candidate = score(job.model, str(run / "best.pth"), job.size, val)
            served = score(job.model, job.weights, job.size, val)
            better = candidate > served
            verdict = {
                "better": better, "miou": candidate, "served_miou": served, "val_tasks": len(val),
                "reason": f"validation mIoU {100 * candidate:.1f} {'>' if better else '<='} served {100 * served:.1f} "
                f"on {len(val)} validation tasks",
            }  # fmt: skip
        print(f"verdict: {verdict['reason']}", file=log)
    with atomic_path(run / VERDICT) as tmp:
        tmp.write_text(json.dumps(verdict, indent=2))
    return verdict


if __name__ == "__main__":
    run_job(sys.argv[1])
