"""A real Label Studio server on loopback, one per test session, and a small client for its REST API.

The server is the ``label-studio`` package from the registry, run from its own virtual environment (it pins Django
and friends that must not meet fcnseg's): ``FCNSEG_LABEL_STUDIO`` names its ``label-studio`` executable (``.ci/run``
installs it and sets this), else ``label-studio`` on ``PATH``; without one the tests skip and say so. Its data
(SQLite database, uploads) lives in a temporary folder; a user and a legacy API token are made at start, with no
prompt. Label Studio refuses ML backends (and their webhooks) on local addresses by default: this server allows them,
since the tests' fcnseg runs on 127.0.0.1. Starting takes 1-2 minutes (migrations, static files).
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from waiting import wait_until

httpx = pytest.importorskip("httpx")

# seconds; only stops a hung start. Label Studio migrates a fresh database first: ~90 s on 2 cores at load 4,
# more than 10 minutes at load 25
START_TIMEOUT = 1800.0


def label_studio_executable() -> str | None:
    """The ``label-studio`` to start: ``$FCNSEG_LABEL_STUDIO``, else the one on ``PATH``."""
    named = os.environ.get("FCNSEG_LABEL_STUDIO")
    if named:
        return named if Path(named).is_file() else None
    return shutil.which("label-studio")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def free_port():
    """A function giving a port free on 127.0.0.1 now (for servers that take a port number, not 0)."""
    return _free_port


@dataclass
class LabelStudio:
    """A running Label Studio: its URL, the API token of its one user, and calls to its REST API."""

    url: str
    token: str
    log: Path

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Token {self.token}"}, timeout=120)

    def api(self, method: str, path: str, **kwargs) -> dict | list:
        """One API call; a non-2xx answer fails the test with Label Studio's own words."""
        with self.client() as c:
            r = c.request(method, path, **kwargs)
        assert r.is_success, f"{method} {path}: {r.status_code} {r.text[:2000]}"
        return r.json() if r.content else {}

    def create_project(self, title: str, label_config: str) -> int:
        return self.api("POST", "/api/projects", json={"title": title, "label_config": label_config})["id"]

    def tasks(self, project: int) -> list[dict]:
        """The project's tasks with their predictions and annotations, in task id order."""
        tasks = self.api("GET", "/api/tasks", params={"project": project, "fields": "all", "page_size": 1000})["tasks"]
        return sorted(tasks, key=lambda t: t["id"])


def _log_tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.is_file() else "(no log)"


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory) -> Iterator[LabelStudio]:
    executable = label_studio_executable()
    if executable is None:
        pytest.skip(
            "no Label Studio server: set FCNSEG_LABEL_STUDIO to a label-studio executable "
            "(.ci/run installs one: pip install label-studio in its own venv)"
        )
    root = tmp_path_factory.mktemp("label-studio")
    port, token, log = _free_port(), secrets.token_hex(20), root / "server.log"
    env = {
        **os.environ,
        "LABEL_STUDIO_BASE_DATA_DIR": str(root / "data"),
        # the fcnseg under test listens on 127.0.0.1: Label Studio must accept an ML backend (ML_BLOCK_LOCAL_IP)
        # and the webhook it adds for it (SSRF_PROTECTION_ENABLED) on a local address
        "ML_BLOCK_LOCAL_IP": "false",
        "SSRF_PROTECTION_ENABLED": "false",
        # Label Studio gives an ML backend 1 s to answer /health and 3 s for /setup: on a loaded CI machine the
        # test's fcnseg may need more (it is not what is tested), so the limits are raised
        "ML_CONNECTION_TIMEOUT": "30",
        "ML_TIMEOUT_HEALTH": "30",
        "ML_TIMEOUT_SETUP": "60",
        "ML_TIMEOUT_PREDICT": "600",
        # nothing leaves the machine: no version check on pypi.org, no analytics
        "LATEST_VERSION_CHECK": "false",
        "COLLECT_ANALYTICS": "false",
    }
    env.pop("PYTHONPATH", None)  # its own venv: fcnseg's path must not shadow its packages
    command = [
        executable, "start", "--no-browser", "--internal-host", "127.0.0.1", "--port", str(port),
        "--data-dir", str(root / "data"), "--username", "fcnseg@example.com", "--password", secrets.token_hex(8),
        "--user-token", token, "--enable-legacy-api-token",
    ]  # fmt: skip
    with log.open("wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=root)
    server = LabelStudio(f"http://127.0.0.1:{port}", token, log)
    try:
        _wait_started(proc, server)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_started(proc: subprocess.Popen, server: LabelStudio) -> None:
    """Until ``/health`` answers 200; a clear failure with the server's log if it exits or hangs instead."""
    try:
        wait_until(lambda: proc.poll() is not None or _healthy(server.url), timeout=START_TIMEOUT, interval=0.5)
    except TimeoutError:
        pytest.fail(f"Label Studio did not answer /health within {START_TIMEOUT:.0f} s:\n{_log_tail(server.log)}")
    if proc.poll() is not None:
        pytest.fail(f"Label Studio exited with {proc.returncode} while starting:\n{_log_tail(server.log)}")


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False
