"""``fcnseg serve``: the HTTP API and web page on uvicorn, bound to loopback unless told otherwise."""

from __future__ import annotations

import argparse
import ipaddress
import sys

from ..optimize import add_speed_arguments
from . import add_model_arguments


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _serve(args: argparse.Namespace) -> int:
    import torch
    import uvicorn

    from ..optimize import speed_options_from_args
    from ..predict import Segmenter
    from ..serve import ServeConfig, create_app

    if args.threads:
        torch.set_num_threads(args.threads)
    weights = args.weights
    segmenter = Segmenter(
        args.model,
        weights,
        device=args.device,
        size=args.size or None,
        batch_size=max(1, args.max_batch),
        optimize=speed_options_from_args(args),
    )
    info: dict = {"weights": str(weights) if weights is not None else None}
    if weights is not None:
        from ..models import find_weights

        member = find_weights(args.model, weights)
        if member is not None:
            info["weights"], info["metrics"] = repr(member), member.meta["metrics"]
    config = ServeConfig(
        max_upload_bytes=int(args.max_upload_mb * 1024 * 1024),
        max_pixels=int(args.max_pixels),
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
        max_queue=args.max_queue,
        timeout_s=args.timeout,
    )
    if not _is_loopback(args.host):
        print(f"fcnseg serve: warning: listening on {args.host}, reachable from other machines", file=sys.stderr)
    app = create_app(segmenter, config=config, model_info=info)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="serve the model over HTTP (JSON API + web page)",
        description="FastAPI + uvicorn server: POST /v1/segment, GET /v1/models, /healthz, /readyz, /docs, "
        "and a web page at /. Binds to 127.0.0.1 by default.",
    )
    add_model_arguments(p)
    add_speed_arguments(p)
    p.add_argument("--size", type=int, default=520, help="shorter side fed to the model; 0 = native (default 520)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, loopback only)")
    p.add_argument("--port", type=int, default=8000, help="port (default: 8000; 0 picks a free one)")
    p.add_argument("--max-upload-mb", type=float, default=20.0, help="largest accepted upload (default: 20 MB)")
    p.add_argument("--max-pixels", type=float, default=16e6, help="largest accepted image in pixels (default 16e6)")
    p.add_argument("--max-batch", type=int, default=8, help="micro-batch size limit; 1 disables batching")
    p.add_argument("--max-wait-ms", type=float, default=5.0, help="wait for more requests to batch (default: 5)")
    p.add_argument("--max-queue", type=int, default=32, help="waiting requests before answering 503 (default: 32)")
    p.add_argument("--timeout", type=float, default=60.0, help="per-request timeout in seconds (default: 60)")
    p.add_argument("--threads", type=int, default=0, help="limit CPU threads (0: torch default)")
    p.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))
    p.set_defaults(func=_serve)
