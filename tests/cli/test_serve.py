"""``fcnseg serve`` as a user runs it: a real uvicorn process on 127.0.0.1, an ephemeral port, a real request."""

from __future__ import annotations

import io
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from checkpoints import write_checkpoint
from PIL import Image

from fcnseg.cli import CLIError, build_parser, main
from fcnseg.cli.serve import _is_loopback, _threads, api_key, check_exposure, serve_config

SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.mark.parametrize(
    ("host", "loopback"), [("127.0.0.1", True), ("localhost", True), ("::1", True), ("0.0.0.0", False)]
)
def test_is_loopback(host, loopback):
    assert _is_loopback(host) is loopback


def test_defaults_bind_loopback(capsys):
    from fcnseg.cli import build_parser

    args = build_parser().parse_args(["serve"])
    assert (args.host, args.port, args.max_upload_mb, args.max_batch) == ("127.0.0.1", 8000, 20.0, 8)


def test_thread_budget_shared_by_workers():
    from fcnseg.cli import build_parser

    cores = len(os.sched_getaffinity(0))
    for argv, want in ((["serve"], cores), (["serve", "--workers", "2"], max(1, cores // 2)),
                       (["serve", "--workers", "2", "--threads", "3"], 3)):  # fmt: skip
        assert _threads(build_parser().parse_args(argv)) == want


def test_api_key_sources(tmp_path):
    keyfile = tmp_path / "key"
    keyfile.write_text("  from-file\n")
    parse = build_parser().parse_args
    assert api_key(parse(["serve"]), {}) is None
    assert api_key(parse(["serve", "--api-key", "flag"]), {}) == "flag"
    assert api_key(parse(["serve", "--api-key-file", str(keyfile)]), {}) == "from-file"
    assert api_key(parse(["serve"]), {"FCNSEG_API_KEY": "env"}) == "env"
    with pytest.raises(CLIError, match="one way, not --api-key-file and FCNSEG_API_KEY"):
        api_key(parse(["serve", "--api-key-file", str(keyfile)]), {"FCNSEG_API_KEY": "env"})
    with pytest.raises(CLIError, match="is empty"):
        api_key(parse(["serve", "--api-key", " "]), {})
    with pytest.raises(CLIError, match="missing: cannot read the API key file"):
        api_key(parse(["serve", "--api-key-file", str(tmp_path / "missing")]), {})


def test_exposure_needs_a_key_or_no_auth(capsys):
    check_exposure("127.0.0.1", None, False)  # loopback: no key needed
    check_exposure("0.0.0.0", "key", False)
    with pytest.raises(CLIError, match="refusing to listen on 0.0.0.0 without an API key"):
        check_exposure("0.0.0.0", None, False)
    check_exposure("0.0.0.0", None, True)
    assert "anyone who can reach this port can use the model" in capsys.readouterr().err
    with pytest.raises(CLIError, match="contradict"):
        check_exposure("127.0.0.1", "key", True)


def test_public_bind_without_key_refuses_before_loading(capsys, monkeypatch):
    monkeypatch.delenv("FCNSEG_API_KEY", raising=False)
    assert main(["serve", "--host", "0.0.0.0", "--weights", "none", "--port", "0"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "refusing to listen on 0.0.0.0" in err and "--no-auth" in err


def test_missing_serve_dependency_is_one_line_at_start(capsys, monkeypatch):
    from fcnseg.serve import config

    monkeypatch.setitem(config.RUNTIME_MODULES, "fcnseg_no_such_module", "no-such-package")
    assert main(["serve", "--weights", "none", "--port", "0"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "needs no-such-package" in err and "pip install 'fcnseg[serve]'" in err


def test_flags_reach_the_server_config():
    args = build_parser().parse_args(
        ["serve", "--body-timeout", "7", "--min-upload-rate", "100", "--header-timeout", "3", "--keep-alive", "2",
         "--max-connections", "9", "--max-per-client", "4", "--cors-origin", "https://a.example",
         "--cors-origin", "https://b.example"]
    )  # fmt: skip
    args.resolved_key = "k"
    cfg = serve_config(args)
    assert (cfg.body_timeout_s, cfg.min_upload_rate, cfg.header_timeout_s, cfg.keep_alive_s) == (7, 100, 3, 2)
    assert (cfg.max_connections, cfg.client_share, cfg.api_key) == (9, 4, "k")
    assert cfg.cors_origins == ("https://a.example", "https://b.example")
    defaults = build_parser().parse_args(["serve"])
    defaults.resolved_key = None
    assert serve_config(defaults).client_share == 16  # half of the 32 slots


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_workers_answer(tmp_path):
    """``--workers 2``: two processes, each with its own model and half the cores, answer on one port."""
    ckpt = write_checkpoint(tmp_path / "tiny.pth", ["bg", "fg"])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "fcnseg", "serve", "--weights", str(ckpt), "--size", "native", "--port", str(port),
           "--device", "cpu", "--workers", "2", "--max-batch", "1", "--log-level", "warning"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        pids: set[int] = set()
        deadline = time.monotonic() + 300  # two processes load torch and warm up on a shared CPU
        while len(pids) < 2 and time.monotonic() < deadline and proc.poll() is None:
            try:
                r = httpx.get(f"{url}/readyz")  # a new connection each time: either process may accept it
            except httpx.TransportError:
                time.sleep(0.2)
                continue
            if r.status_code == 200:
                pids.add(r.json()["pid"])
        assert len(pids) == 2, f"answers came from {pids}"
        assert httpx.get(f"{url}/v1/models").json()["models"][0]["threads"] == max(1, len(os.sched_getaffinity(0)) // 2)
        buf = io.BytesIO()
        Image.fromarray(np.full((24, 32, 3), 90, np.uint8)).save(buf, "PNG")
        r = httpx.post(f"{url}/v1/segment?format=png", content=buf.getvalue(), headers={"content-type": "image/png"})
        assert r.status_code == 200
    finally:
        proc.terminate()
        out = proc.communicate(timeout=30)[0]
    assert proc.returncode == 0, out


@pytest.mark.slow
def test_serve_process_answers(tmp_path):
    ckpt = write_checkpoint(tmp_path / "tiny.pth", ["bg", "fg"])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "fcnseg", "serve", "--weights", str(ckpt), "--size", "native", "--port", "0",
           "--device", "cpu", "--threads", "1", "--max-batch", "1", "--log-level", "info"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        url, deadline, lines = None, time.monotonic() + 120, []
        while url is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            m = re.search(r"Uvicorn running on (http://127\.0\.0\.1:\d+)", line)
            url = m.group(1) if m else None
        assert url, "".join(lines)
        while not any("ready: " in line for line in lines) and proc.poll() is None:  # the one line saying so
            lines.append(proc.stdout.readline())
        assert httpx.get(f"{url}/readyz").status_code == 200, "".join(lines)
        info = httpx.get(f"{url}/v1/models").json()["models"][0]
        assert info["categories"] == ["bg", "fg"] and info["weights"] == ckpt.name  # the file's name, never its path
        buf = io.BytesIO()
        Image.fromarray(np.full((24, 32, 3), 90, np.uint8)).save(buf, "PNG")
        r = httpx.post(f"{url}/v1/segment?format=png", content=buf.getvalue(), headers={"content-type": "image/png"})
        assert r.status_code == 200 and Image.open(io.BytesIO(r.content)).size == (32, 24)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_bad_weights_one_line_error(tmp_path, capsys):
    assert main(["serve", "--weights", str(tmp_path / "missing.pth"), "--port", "0"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "missing.pth" in err


def test_workers_get_the_key_from_a_private_file_not_the_environment(tmp_path, monkeypatch):
    """``--workers 2``: the key is in no environment variable the worker processes (and theirs) inherit, but in a
    file only its owner reads, gone when the server stops. uvicorn is replaced by a probe that looks as a worker
    would (nothing is served)."""
    from fcnseg.cli import serve as cli_serve

    key = "s3cret-Key-For-Workers"
    monkeypatch.setenv("FCNSEG_API_KEY", key)
    monkeypatch.delenv(cli_serve.WORKER_ARGS, raising=False)
    seen = {}

    def probe(app, **options):
        assert app == "fcnseg.cli.serve:worker_app" and options["workers"] == 2
        seen["environ"] = dict(os.environ)
        seen["args"] = cli_serve._worker_args()
        seen["mode"] = os.stat(seen["args"].key_file).st_mode & 0o777

    monkeypatch.setattr("uvicorn.run", probe)
    assert main(["serve", "--workers", "2", "--weights", "none", "--port", "0"]) == 0
    assert not any(key in value for value in seen["environ"].values())
    assert seen["args"].resolved_key == key and seen["mode"] == 0o600
    assert not os.path.exists(seen["args"].key_file) and not os.path.exists(os.path.dirname(seen["args"].key_file))
    assert "FCNSEG_API_KEY" not in os.environ  # read once, not handed down


def test_the_models_endpoint_names_a_local_checkpoint_without_its_path(tmp_path):
    """``GET /v1/models`` says which file by name and sha256, not where it lies on the server."""
    import hashlib

    import torch
    from fastapi.testclient import TestClient

    from fcnseg.cli.serve import build_app

    (tmp_path / "secret-folder").mkdir()
    ckpt = write_checkpoint(tmp_path / "secret-folder" / "tiny.pth", ["bg", "fg"])
    args = build_parser().parse_args(["serve", "--weights", str(ckpt), "--size", "32", "--device", "cpu"])
    args.resolved_key = None
    threads = torch.get_num_threads()
    try:
        body = TestClient(build_app(args)).get("/v1/models").json()  # no lifespan: no warm-up, just the route
    finally:
        torch.set_num_threads(threads)
    (model,) = body["models"]
    assert model["weights"] == "tiny.pth"
    assert model["weights_sha256"] == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert "secret-folder" not in json.dumps(body)
