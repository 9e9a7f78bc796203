"""Where the model actors go: how many, what each asks of Ray, and how many threads a CPU actor runs."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

__all__ = ["Placement", "placement", "pool_args"]


@dataclass(frozen=True)
class Placement:
    """How many model actors, and what each asks of Ray: a GPU each, or one CPU (and threads for its node's share of
    the cores)."""

    workers: int
    gpus: int  # per actor: 1 or 0
    threads: int | None  # torch's threads in a CPU actor

    @property
    def device(self) -> str:
        return "cuda" if self.gpus else "cpu"


def placement(ray: Any, workers: int | None, device: str) -> Placement:
    """Actors for this cluster: on GPUs one per GPU, on CPUs one per node, unless ``workers`` says how many.

    A CPU actor is scheduled as one CPU (the rest stay free for the decoding tasks) but runs its model on its node's
    cores divided among the actors there, were they spread evenly: torch's threads, not Ray's CPU count, decide how
    fast a CPU forward pass runs (Ray sets ``OMP_NUM_THREADS`` to the CPU count asked for, 1).
    """
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    gpus = int(sum(n["Resources"].get("GPU", 0) for n in nodes))
    use_gpu = device == "cuda" or (device == "auto" and gpus > 0)
    if device == "cuda" and not gpus:
        raise ValueError("--device cuda: the Ray cluster has no GPU")
    if workers is not None and workers < 1:
        raise ValueError(f"--workers must be at least 1, got {workers}")
    if use_gpu:
        return Placement(workers or gpus, 1, None)
    n = workers or len(nodes)
    cores = min(int(node["Resources"].get("CPU", 1)) for node in nodes)
    return Placement(n, 0, max(1, cores // math.ceil(n / len(nodes))))


def pool_args(ray: Any, place: Placement, batch_size: int) -> dict[str, Any]:
    """The keywords of ``Dataset.map_batches`` that run a model class in ``place``'s actor pool."""
    return {
        "batch_size": batch_size,
        "compute": ray.data.ActorPoolStrategy(size=place.workers),
        "num_gpus": place.gpus,
        "num_cpus": 1,
        "batch_format": "numpy",
    }
