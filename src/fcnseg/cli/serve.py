"""``fcnseg serve``: the HTTP API and web page on uvicorn, bound to loopback unless told otherwise.

``--workers N`` runs N server processes on one port (uvicorn's process manager; the kernel spreads
connections over them). Each loads its own model and uses ``cores / N`` torch threads, so the processes do
not fight over the cores; each has its own queue, admission control and warm-up.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import sys
from typing import Any

from ..optimize import add_speed_arguments
from . import add_model_arguments, add_size_argument

WORKER_ARGS = "FCNSEG_SERVE_ARGS"  # how the parent hands its parsed arguments to uvicorn's worker processes


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _threads(args: argparse.Namespace) -> int:
    """Torch threads per server process: ``--threads``, else this process's cores shared among the workers."""
    return args.threads or max(1, len(os.sched_getaffinity(0)) // args.workers)


def build_app(args: argparse.Namespace) -> Any:
    """The FastAPI app for parsed ``fcnseg serve`` arguments: the model loaded, the limits set."""
    import torch

    from ..optimize import speed_options_from_args
    from ..predict import Segmenter
    from ..serve import ServeConfig, create_app

    torch.set_num_threads(_threads(args))
    weights = args.weights
    segmenter = Segmenter(
        args.model,
        weights,
        device=args.device,
        size=args.size,
        batch_size=max(1, args.max_batch),
        optimize=speed_options_from_args(args),
    )
    print(f"fcnseg serve: {segmenter.describe_size()}", file=sys.stderr)
    loaded = segmenter.weights
    info: dict = {"weights": None if loaded is None else loaded.source, "threads": torch.get_num_threads()}
    if loaded is not None and loaded.member is not None:
        info["metrics"] = loaded.member.meta["metrics"]
    config = ServeConfig(
        max_upload_bytes=int(args.max_upload_mb * 1024 * 1024),
        max_pixels=int(args.max_pixels),
        max_batch=args.max_batch,
        max_inflight=args.max_inflight,
        max_decoded_mb=args.max_decoded_mb,
        timeout_s=args.timeout,
    )
    return create_app(segmenter, config=config, model_info=info)


def worker_app() -> Any:
    """uvicorn's app factory in each ``--workers`` process: the parent's arguments, from the environment."""
    return build_app(argparse.Namespace(**json.loads(os.environ[WORKER_ARGS])))


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    if not _is_loopback(args.host):
        print(f"fcnseg serve: warning: listening on {args.host}, reachable from other machines", file=sys.stderr)
    where = {"host": args.host, "port": args.port, "log_level": args.log_level}
    if args.workers == 1:
        uvicorn.run(build_app(args), **where)
        return 0
    os.environ[WORKER_ARGS] = json.dumps({k: v for k, v in vars(args).items() if k != "func"})
    uvicorn.run("fcnseg.cli.serve:worker_app", factory=True, workers=args.workers, **where)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="serve the model over HTTP (JSON API + web page)",
        description="FastAPI + uvicorn server: POST /v1/segment, GET /v1/models, /healthz, /readyz, /docs, "
        "and a web page at /. Binds to 127.0.0.1 by default. Requests that cannot be answered before --timeout "
        "are refused at once with 503 and Retry-After.",
    )
    add_model_arguments(p)
    add_speed_arguments(p)
    add_size_argument(p)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, loopback only)")
    p.add_argument("--port", type=int, default=8000, help="port (default: 8000; 0 picks a free one)")
    p.add_argument("--workers", type=int, default=1, help="server processes on the port, each with its own model")
    p.add_argument("--max-upload-mb", type=float, default=20.0, help="largest accepted upload (default: 20 MB)")
    p.add_argument("--max-pixels", type=float, default=16e6, help="largest accepted image in pixels (default 16e6)")
    p.add_argument("--max-batch", type=int, default=8, help="micro-batch limit, used only if batching pays (default 8)")
    p.add_argument("--max-inflight", type=int, default=32, help="requests admitted at once per process (default 32)")
    p.add_argument("--max-decoded-mb", type=int, default=1024, help="decoded images held at once (default 1024 MB)")
    p.add_argument("--timeout", type=float, default=60.0, help="per-request deadline in seconds (default: 60)")
    p.add_argument("--threads", type=int, default=0, help="torch threads per process (0: cores / workers)")
    p.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))
    p.set_defaults(func=_serve)
