"""``fcnseg serve``: the HTTP API and web page on uvicorn, bound to loopback unless told otherwise.

Safe by default: loopback only; listening on another address needs an API key (``--api-key-file``,
``FCNSEG_API_KEY`` or ``--api-key``), or ``--no-auth`` to say that anyone who reaches the port may use it.
Slow and idle clients are cut off (header, body and keep-alive deadlines, a minimum upload rate), connections
are capped, and one client address gets at most a share of the admission slots.

``--workers N`` runs N server processes on one port (uvicorn's process manager; the kernel spreads
connections over them). Each loads its own model and uses ``cores / N`` torch threads, so the processes do
not fight over the cores; each has its own queue, admission control and warm-up. The API key reaches them in a
file only its owner may read (in a private temporary folder, removed when the server stops), never in an environment
variable, which every process they start would inherit; ``$FCNSEG_API_KEY`` is removed from the environment once read.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import ipaddress
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from . import CLIError, add_model_arguments, add_size_argument
from .speed import add_speed_arguments, require_speed_extras

WORKER_ARGS = "FCNSEG_SERVE_ARGS"  # how the parent hands its parsed arguments to uvicorn's worker processes
KEY_ENV = "FCNSEG_API_KEY"


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


def api_key(args: argparse.Namespace, environ: dict[str, str] | None = None) -> str | None:
    """The API key from ``--api-key``, ``--api-key-file`` or ``$FCNSEG_API_KEY`` (at most one may be given);
    None when there is none. :class:`CLIError` for an empty or unreadable key, or several sources."""
    environ = os.environ if environ is None else environ
    sources = {"--api-key": args.api_key, "--api-key-file": args.api_key_file, KEY_ENV: environ.get(KEY_ENV)}
    given = {name: value for name, value in sources.items() if value is not None}
    if len(given) > 1:
        raise CLIError(f"give the API key one way, not {' and '.join(given)}")
    if not given:
        return None
    (name, value), = given.items()  # fmt: skip
    if name == "--api-key-file":
        try:
            value = Path(value).read_text().strip()
        except OSError as e:
            raise CLIError(f"{args.api_key_file}: cannot read the API key file ({e.strerror})") from None
    if not value.strip():
        raise CLIError(f"the API key from {name} is empty")
    return value.strip()


def check_exposure(host: str, key: str | None, no_auth: bool) -> None:
    """Refuse to listen beyond loopback without a key unless ``--no-auth`` says so; warn when it does."""
    if key is not None and no_auth:
        raise CLIError("--no-auth and an API key contradict each other; drop one")
    if _is_loopback(host) or key is not None:
        return
    if not no_auth:
        raise CLIError(
            f"refusing to listen on {host} without an API key: anyone who can reach the port could use the model "
            f"and its CPU/GPU. Set --api-key-file FILE or ${KEY_ENV}, or pass --no-auth to accept that"
        )
    print(f"fcnseg serve: warning: --no-auth on {host}: anyone who can reach this port can use the model, and a "
          "flood of requests can keep it busy for everyone", file=sys.stderr)  # fmt: skip


def serve_config(args: argparse.Namespace) -> Any:
    """The server's limits and access settings from parsed arguments (the model is not loaded)."""
    from ..serve import ServeConfig

    return ServeConfig(
        max_upload_bytes=int(args.max_upload_mb * 1024 * 1024),
        max_pixels=int(args.max_pixels),
        max_batch=args.max_batch,
        max_inflight=args.max_inflight,
        max_per_client=args.max_per_client or None,
        max_decoded_mb=args.max_decoded_mb,
        timeout_s=args.timeout,
        body_timeout_s=args.body_timeout,
        min_upload_rate=args.min_upload_rate,
        header_timeout_s=args.header_timeout,
        keep_alive_s=args.keep_alive,
        max_connections=args.max_connections,
        api_key=args.resolved_key,
        cors_origins=tuple(args.cors_origin),
        label_studio_url=os.environ.get("LABEL_STUDIO_URL") or None,
        label_studio_api_key=os.environ.get("LABEL_STUDIO_API_KEY") or None,
        label_studio_allow=tuple(args.label_studio_allow_host),
    )


def build_app(args: argparse.Namespace) -> Any:
    """The FastAPI app for parsed ``fcnseg serve`` arguments: the model loaded, the limits set."""
    import torch

    from ..predict import Segmenter
    from ..serve import create_app
    from ..serve.app import NATIVE_WARMUP_SIDE
    from .speed import speed_options_from_args

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
    if args.fast and (line := segmenter.prepare_serving(segmenter.preprocess.resize_size or NATIVE_WARMUP_SIDE)):
        print(f"fcnseg serve: --fast runs {line}", file=sys.stderr)
        print(*(f"  {line}" for line in segmenter.speed_details() * args.verbose), sep="\n", end="", file=sys.stderr)
    info = model_info(segmenter.weights)
    if getattr(args, "label_studio_runs", None) is None:
        return create_app(segmenter, config=serve_config(args), model_info=info)
    return _with_training_loop(args, segmenter, info)


def model_info(loaded: Any) -> dict[str, Any]:
    """What ``GET /v1/models`` says of the weights: the registry entry (and its scores), or a local file's name and
    sha256, never its path (which tells a client about the server's folders and users); ``model_version``, the
    weights' identity that Label Studio's predictions carry."""
    import torch

    from ..weights import sha256_file, weights_identity

    info: dict[str, Any] = {
        "weights": None,
        "threads": torch.get_num_threads(),
        "model_version": weights_identity(loaded),
    }
    if loaded is not None and loaded.member is not None:
        info.update(weights=loaded.source, metrics=loaded.member.meta["metrics"])
    elif loaded is not None:
        info.update(weights=loaded.path.name, weights_sha256=sha256_file(loaded.path))
    return info


@contextlib.contextmanager
def _key_file(key: str | None) -> Iterator[str | None]:
    """``key`` in a file only this user can read, in a fresh private folder, for the ``--workers`` processes; the
    folder is removed when the block ends (uvicorn restarts a dead worker, which reads it again)."""
    if key is None:
        yield None
        return
    folder = tempfile.mkdtemp(prefix="fcnseg-serve-")  # mode 0700
    try:
        path = os.path.join(folder, "api-key")
        with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
            f.write(key)
        yield path
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _with_training_loop(args: argparse.Namespace, segmenter: Any, info: dict[str, Any]) -> Any:
    """The app with Label Studio's training loop (``--label-studio-runs``): the model behind a swappable holder."""
    import shlex

    from ..labelstudio.pull import connection
    from ..predict import Segmenter
    from ..serve import create_app
    from ..serve.finetune import Job
    from ..serve.loop import TrainingLoop, add_loop_routes
    from ..serve.swap import ServedModel, Version
    from ..transforms import palette
    from .speed import speed_options_from_args

    weights = None if args.weights is None else str(args.weights)
    served = ServedModel(segmenter, Version(info["model_version"], weights))
    app = create_app(served, config=serve_config(args), model_info=info)
    size = segmenter.preprocess.resize_size or "native"

    def load(path: str) -> Segmenter:  # set up as the served model: same device, size and speed path
        return Segmenter(args.model, path, device=args.device, size=size, batch_size=max(1, args.max_batch),
                         optimize=speed_options_from_args(args))  # fmt: skip

    def on_swap(new: Segmenter) -> None:  # what the API says about the model; the same list object everywhere
        info = app.state.info
        info["categories"][:] = new.categories
        info.pop("metrics", None)  # a registry entry's published scores; the new model's are in /versions
        info.update(
            model_info(new.weights),
            num_classes=len(new.categories),
            model_version=served.version.version,
            palette=palette(len(new.categories)).tolist(),
        )  # fmt: skip (a file's name, never its path)

    url, _ = connection()
    job = Job(url, args.label_studio_project, args.model, weights, segmenter.preprocess.resize_size,
              shlex.split(args.label_studio_train))  # fmt: skip
    add_loop_routes(app, TrainingLoop(served, args.label_studio_runs, job, load, on_swap, args.train_every))
    return app


def _worker_args() -> argparse.Namespace:
    """The parent's arguments in a ``--workers`` process, the API key read from the parent's key file."""
    args = argparse.Namespace(**json.loads(os.environ[WORKER_ARGS]))
    args.resolved_key = Path(args.key_file).read_text() if args.key_file else None
    return args


def worker_app() -> Any:
    """uvicorn's app factory in each ``--workers`` process: the parent's arguments, from the environment."""
    return build_app(_worker_args())


@functools.cache
def _worker_protocol() -> type:
    from ..serve import uvicorn_options

    return uvicorn_options(serve_config(_worker_args()))["http"]


def __getattr__(name: str) -> Any:
    """``WorkerProtocol``: the header-deadline protocol for ``--workers`` processes, which uvicorn imports by name
    (a class made at run time cannot be handed to a process it spawns)."""
    if name == "WorkerProtocol":
        return _worker_protocol()
    raise AttributeError(name)


def _log_config(level: str) -> dict[str, Any]:
    """uvicorn's logging, with the server's own lines (ready, refusals, slow clients) on the same handler."""
    from uvicorn.config import LOGGING_CONFIG

    config = json.loads(json.dumps(LOGGING_CONFIG))
    config["loggers"]["fcnseg.serve"] = {"handlers": ["default"], "level": level.upper(), "propagate": False}
    return config


def _check_loop_flags(args: argparse.Namespace) -> None:
    """The training loop's flags: a project, one server process, a key and URL for Label Studio, valid train flags."""
    if args.label_studio_runs is None:
        if args.label_studio_project is not None or args.train_every is not None:
            raise CLIError("--label-studio-project and --train-every go with --label-studio-runs DIR")
        return
    import shlex

    from ..labelstudio.pull import connection

    if args.label_studio_project is None:
        raise CLIError("--label-studio-runs needs the project to train on: --label-studio-project ID")
    if args.workers != 1:
        raise CLIError("--label-studio-runs swaps the model of one server process: use --workers 1")
    if args.train_every is not None and args.train_every < 1:
        raise CLIError(f"--train-every must be at least 1, got {args.train_every}")
    connection()  # LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY, now rather than at the first run
    owned = {"--resume", "--data-root", "--dataset", "--output-dir", "--label-studio", "--project", "--weights"}
    flags = shlex.split(args.label_studio_train)
    given = {a.split("=")[0] for a in flags if a.startswith("--")}
    if given & owned:
        raise CLIError(f"--label-studio-train sets how to train, not {', '.join(sorted(given & owned))}")
    _check_train_flags(flags)


def _check_train_flags(flags: list[str]) -> None:
    """``fcnseg train``'s own parser on ``--label-studio-train``: a typo is refused now, not at the first run."""
    from . import train

    parser = argparse.ArgumentParser(prog="fcnseg", add_help=False, exit_on_error=False)
    train.register(parser.add_subparsers())
    try:
        _, unknown = parser.parse_known_args(["train", *flags])
    except argparse.ArgumentError as e:
        raise CLIError(f"--label-studio-train: {e}") from None
    except SystemExit:  # the train parser said what is wrong on the line above
        raise CLIError("--label-studio-train: not flags fcnseg train takes") from None
    if unknown:
        raise CLIError(f"--label-studio-train: fcnseg train has no {' '.join(unknown)}")


def _serve(args: argparse.Namespace) -> int:
    _check_loop_flags(args)

    from ..models import model_for

    args.model = model_for(args.model, args.weights)  # a checkpoint's own model, unless --model names another
    args.resolved_key = api_key(args)
    os.environ.pop(KEY_ENV, None)  # read: the processes the server starts need not inherit it
    check_exposure(args.host, args.resolved_key, args.no_auth)
    if bool(args.ssl_certfile) != bool(args.ssl_keyfile):
        raise CLIError("--ssl-certfile and --ssl-keyfile go together")
    require_speed_extras(args)
    try:  # every module answering needs, now rather than at the first request
        import uvicorn

        from ..serve import check_dependencies, uvicorn_options

        check_dependencies()
    except ImportError as e:
        raise CLIError(f"{e.msg if e.name is None else f'{e.name} is missing'}: pip install 'fcnseg[serve]'") from None
    options = {
        "host": args.host, "port": args.port, "log_level": args.log_level, "log_config": _log_config(args.log_level),
        "ssl_certfile": args.ssl_certfile, "ssl_keyfile": args.ssl_keyfile,
        "proxy_headers": bool(args.forwarded_allow_ips), "forwarded_allow_ips": args.forwarded_allow_ips or "",
        **uvicorn_options(serve_config(args)),
    }  # fmt: skip
    if args.workers == 1:
        uvicorn.run(build_app(args), **options)
        return 0
    shared = {k: v for k, v in vars(args).items() if k not in ("func", "api_key", "resolved_key")}
    options["http"] = "fcnseg.cli.serve:WorkerProtocol"
    with _key_file(args.resolved_key) as key_file:
        os.environ[WORKER_ARGS] = json.dumps({**shared, "key_file": key_file})
        uvicorn.run("fcnseg.cli.serve:worker_app", factory=True, workers=args.workers, **options)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="serve the model over HTTP (JSON API + web page)",
        description="FastAPI + uvicorn server: POST /v1/segment, GET /v1/models, /healthz, /readyz, /docs, "
        "and a web page at /. Binds to 127.0.0.1 by default; another address needs an API key (or --no-auth). "
        "Requests that cannot be answered before --timeout are refused at once with 503 and Retry-After; "
        "uploads slower than --min-upload-rate or --body-timeout get 408.",
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
    p.add_argument(
        "--max-per-client",
        type=int,
        default=0,
        help="admitted requests one client address may hold (default 0: half of --max-inflight)",
    )
    p.add_argument(
        "--max-decoded-mb",
        type=int,
        default=1024,
        help="memory uploads and decoded images may hold at once (default 1024 MB)",
    )
    p.add_argument("--timeout", type=float, default=60.0, help="per-request deadline in seconds (default: 60)")
    p.add_argument("--threads", type=int, default=0, help="torch threads per process (0: cores / workers)")
    p.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))
    slow = p.add_argument_group("slow and idle clients")
    slow.add_argument(
        "--body-timeout", type=float, default=60.0, help="seconds an upload may take in all, else 408 (default 60)"
    )
    slow.add_argument(
        "--min-upload-rate",
        type=float,
        default=240.0,
        help="bytes/s an upload must average after its first 5 s, else 408 (default 240, as "
        "ASP.NET Kestrel; 0: no minimum)",
    )
    slow.add_argument(
        "--header-timeout",
        type=float,
        default=10.0,
        help="seconds a connection may take to send a request's headers, else it is closed (default 10)",
    )
    slow.add_argument(
        "--keep-alive", type=int, default=5, help="seconds an idle keep-alive connection stays open (default 5)"
    )
    slow.add_argument(
        "--max-connections",
        type=int,
        default=512,
        help="open connections per process; beyond it requests get 503 (default 512)",
    )
    access = p.add_argument_group("who may connect")
    access.add_argument(
        "--api-key-file",
        metavar="FILE",
        help=f"require 'Authorization: Bearer KEY' on /v1/..., KEY read from FILE (or set ${KEY_ENV})",
    )
    access.add_argument(
        "--api-key", help="the key on the command line (visible to other local users in ps; prefer --api-key-file)"
    )
    access.add_argument(
        "--no-auth",
        action="store_true",
        help="allow a non-loopback --host without a key: anyone who reaches the port may use it",
    )
    access.add_argument("--ssl-certfile", help="serve HTTPS with this certificate (PEM), with --ssl-keyfile")
    access.add_argument("--ssl-keyfile", help="the certificate's private key (PEM)")
    access.add_argument(
        "--cors-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="a web origin (https://app.example) whose pages may call the API; repeatable "
        "(default: none, browsers block other sites' pages)",
    )
    access.add_argument(
        "--forwarded-allow-ips",
        metavar="IPS",
        help="behind a reverse proxy: its addresses (comma-separated, or *), whose "
        "X-Forwarded-For names the client for the per-client share (default: none trusted)",
    )
    loop = p.add_argument_group(
        "training loop (Label Studio)",
        "POST /label-studio/webhook with START_TRAINING fine-tunes the served model on a Label Studio project in a "
        "background process, one run at a time; the server swaps to the new model only if its validation mIoU "
        "beats the served one's on the same split (GET /label-studio/versions). Needs $LABEL_STUDIO_URL and "
        "$LABEL_STUDIO_API_KEY.",
    )
    loop.add_argument("--label-studio-runs", metavar="DIR", help="turn the loop on: one folder per run under DIR")
    loop.add_argument("--label-studio-project", type=int, metavar="ID", help="the Label Studio project to train on")
    loop.add_argument(
        "--train-every", type=int, metavar="N", help="also start a run after every N annotations created or updated"
    )
    loop.add_argument(
        "--label-studio-train",
        default="",
        metavar="FLAGS",
        help="fcnseg train flags for each run, quoted (e.g. '--epochs 5 --crop-size 320'); the data, the output "
        "folder and the starting weights (the served model's) are the loop's",
    )
    ls = p.add_argument_group(
        "Label Studio",
        "the ML backend at /label-studio (paste http://HOST:PORT/label-studio into a project's Model settings). "
        "Task images on Label Studio (/data/upload/...) are fetched from $LABEL_STUDIO_URL with "
        "$LABEL_STUDIO_API_KEY; with an API key set, Label Studio connects with Basic auth, the key as password",
    )
    ls.add_argument(
        "--label-studio-allow-host",
        action="append",
        default=[],
        metavar="HOST",
        help="another host task images may be fetched from; repeatable; * for any host. Names must resolve to "
        "public addresses; give an address or network (10.0.0.0/8) to allow a private one (default: none)",
    )
    p.set_defaults(func=_serve)
