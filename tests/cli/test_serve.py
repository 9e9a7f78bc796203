"""``fcnseg serve`` as a user runs it: a real uvicorn process on 127.0.0.1, an ephemeral port, a real request."""

from __future__ import annotations

import io
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

from fcnseg.cli import main
from fcnseg.cli.serve import _is_loopback, _threads

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
        wait_ready(url)
        info = httpx.get(f"{url}/v1/models").json()["models"][0]
        assert info["categories"] == ["bg", "fg"] and info["weights"] == str(ckpt)
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


def wait_ready(url: str, timeout: float = 120) -> None:
    """Poll ``/readyz`` until the warm-up is done."""
    deadline = time.monotonic() + timeout
    while httpx.get(f"{url}/readyz").status_code != 200:
        assert time.monotonic() < deadline, httpx.get(f"{url}/readyz").text
        time.sleep(0.1)
