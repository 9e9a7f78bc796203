"""An S3 server on 127.0.0.1 speaking the real protocol (moto's), with a request log and injected faults.

The tests reach it through s3fs/boto3 exactly as a user's bucket: ``AWS_ENDPOINT_URL`` and keys in the environment.
Around moto's WSGI app sits a thin layer that records every request (method, path, query) and answers chosen ones
with an error (``SlowDown``, ``InternalError``) a given number of times, so throttling and failed uploads are the
store's real answers. Fixtures (import them into a ``conftest.py``):

- ``s3_server``: the session's server;
- ``s3``: a fresh bucket (its name) with the environment pointing at the server, and fsspec's cached file systems
  dropped, as a new process would start;

and :func:`keys_allowed` / :func:`enforced_auth` for credentials the server checks.
"""

from __future__ import annotations

import contextlib
import itertools
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

_BUCKETS = itertools.count()


@dataclass
class Fault:
    method: str
    path: re.Pattern[str]
    code: str
    status: int
    left: int  # answers still to give; -1: every matching request


class S3Server:
    """moto's S3 on a free loopback port, in a thread of the test process."""

    def __init__(self) -> None:
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
        from werkzeug.serving import make_server

        self._app = DomainDispatcherApplication(create_backend_app)
        self._server = make_server("127.0.0.1", 0, self._handle, threaded=True)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self.requests: list[tuple[str, str]] = []  # (method, path?query) of every request, in order
        self._faults: list[Fault] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._thread.join()

    def fail(self, method: str, path: str, *, code: str = "SlowDown", status: int = 503, times: int = -1) -> Fault:
        """Answer ``method`` requests whose path (``/bucket/key``) matches the regex ``path`` with the error ``code``,
        ``times`` times (-1: always, until :meth:`heal`)."""
        fault = Fault(method, re.compile(path), code, status, times)
        with self._lock:
            self._faults.append(fault)
        return fault

    def heal(self) -> None:
        with self._lock:
            self._faults.clear()

    def writes(self, bucket: str) -> list[str]:
        """The paths that PUT, POST or DELETE requests went to in ``bucket``, in order."""
        return [p for m, p in self.requests if m in ("PUT", "POST", "DELETE") and p.startswith(f"/{bucket}/")]

    def _fault_for(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.method == method and fault.left != 0 and fault.path.search(path):
                    fault.left -= fault.left > 0
                    return fault
        return None

    def _handle(self, environ: dict[str, Any], start_response: Any) -> Any:
        method, path, query = environ["REQUEST_METHOD"], environ.get("PATH_INFO", ""), environ.get("QUERY_STRING", "")
        with self._lock:
            self.requests.append((method, f"{path}?{query}" if query else path))
        fault = self._fault_for(method, path)
        if fault is None:
            return self._app(environ, start_response)
        environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))  # the body the client sent
        body = (
            f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{fault.code}</Code>'
            f"<Message>injected by the test server</Message><RequestId>test</RequestId></Error>"
        ).encode()
        headers = [("Content-Type", "application/xml"), ("Content-Length", str(len(body)))]
        start_response(f"{fault.status} Error", headers)
        return [body]


def keys_allowed(actions: list[str]) -> dict[str, str]:
    """Access keys of a new IAM user allowed only ``actions`` (``["s3:GetObject"]``), as environment variables; the
    server checks them only under :func:`enforced_auth`."""
    import json

    import boto3

    iam = boto3.client("iam")
    name = f"user-{next(_BUCKETS)}"
    iam.create_user(UserName=name)
    policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": actions, "Resource": "*"}]}
    iam.put_user_policy(UserName=name, PolicyName="only", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return {"AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}


@contextlib.contextmanager
def enforced_auth() -> Iterator[None]:
    """The server checks signatures and IAM policies inside the block (moto serves anyone by default)."""
    import moto.settings

    before = moto.settings.INITIAL_NO_AUTH_ACTION_COUNT
    moto.settings.INITIAL_NO_AUTH_ACTION_COUNT = 0
    try:
        yield
    finally:
        moto.settings.INITIAL_NO_AUTH_ACTION_COUNT = before


def forget_filesystems() -> None:
    """Drop fsspec's cached file system instances (their listings and credentials), as a new process starts."""
    import fsspec.spec

    for cls in list(_subclasses(fsspec.spec.AbstractFileSystem)):
        cls.clear_instance_cache()


def _subclasses(cls: type) -> Iterator[type]:
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


def s3_environment(url: str) -> dict[str, str]:
    """The variables a user sets for an S3-compatible store, plus no config files of this machine's user."""
    return {
        "AWS_ENDPOINT_URL": url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
        "AWS_CONFIG_FILE": "/nonexistent",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_MAX_ATTEMPTS": "1",  # botocore's own retries off: s3fs's (5, with backoff) are what the tests see
    }


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    pytest.importorskip("moto.server")
    server = S3Server()
    yield server
    server.stop()


@pytest.fixture
def s3(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A new empty bucket's name, the environment set to reach it, and a fresh start for fsspec."""
    import boto3
    import fsspec.config

    for key, value in s3_environment(s3_server.url).items():
        monkeypatch.setenv(key, value)
    # moto assembles a multipart upload in Python: on a busy machine completing a 300 MB checkpoint takes longer
    # than s3fs's 15 s read timeout, and the retried request finds the upload gone. fsspec's own configuration, as
    # a user with a slow store would set it.
    monkeypatch.setitem(fsspec.config.conf, "s3", {"config_kwargs": {"read_timeout": 600}})
    name = f"fcnseg-test-{next(_BUCKETS)}"
    boto3.client("s3").create_bucket(Bucket=name)
    forget_filesystems()
    yield name
    s3_server.heal()
    forget_filesystems()
