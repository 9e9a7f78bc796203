"""Task images are fetched only from Label Studio or allowed hosts: a loopback HTTP server plays both."""

from __future__ import annotations

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from fcnseg.labelstudio import FetchError, ImageFetcher

PNG = b"\x89PNG not really, bytes are bytes"


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        self.server.seen.append((self.path, self.headers.get("Authorization"), self.headers.get("Host")))
        if self.path.startswith("/redirect"):
            self.send_response(302)
            self.send_header("Location", "http://169.254.169.254/latest/meta-data/")
            self.end_headers()
            return
        body = PNG * 100 if self.path.startswith("/big") else PNG
        self.send_response(200 if not self.path.startswith("/missing") else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.seen = []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def _url(server) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}"


def test_label_studio_paths_carry_its_token(server):
    fetcher = ImageFetcher(_url(server), "secret")
    assert fetcher.fetch("/data/upload/3/cat.jpg") == PNG
    assert fetcher.fetch(f"{_url(server)}/data/upload/3/dog.jpg") == PNG  # its own origin, spelled out
    assert server.seen == [("/data/upload/3/cat.jpg", "Token secret", server.seen[0][2]),
                           ("/data/upload/3/dog.jpg", "Token secret", server.seen[1][2])]  # fmt: skip


def test_a_jwt_goes_as_bearer(server):
    header = base64.urlsafe_b64encode(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()).decode().rstrip("=")
    token = f"{header}.eyJ0b2tlbl90eXBlIjoiYWNjZXNzIn0.c2lnbmF0dXJl"
    ImageFetcher(_url(server), token).fetch("/data/upload/1/a.png")
    assert server.seen[0][1] == f"Bearer {token}"


def test_other_hosts_need_the_allow_list(server):
    url = f"http://localhost:{server.server_address[1]}/photo.jpg"
    with pytest.raises(FetchError, match="host localhost is not allowed"):
        ImageFetcher().fetch(url)
    # allowed by name, but the name resolves to loopback: refused without connecting
    with pytest.raises(FetchError, match="non-public address"):
        ImageFetcher(allow=("localhost",)).fetch(url)
    with pytest.raises(FetchError, match="non-public address"):
        ImageFetcher(allow=("*",)).fetch(url)
    assert server.seen == []
    # the operator names the loopback network: now it may be fetched, and no Label Studio token goes there
    fetcher = ImageFetcher("http://label-studio.invalid:8080", "secret", allow=("localhost", "127.0.0.0/8"))
    assert fetcher.fetch(url) == PNG
    assert fetcher.fetch(f"{_url(server)}/by-address.jpg") == PNG
    assert [auth for _, auth, _ in server.seen] == [None, None]
    assert server.seen[0][2] == f"localhost:{server.server_address[1]}"  # the name, though the address was dialled


@pytest.mark.parametrize(
    ("path", "why"),
    [("/redirect", "redirects are not followed"), ("/missing", "HTTP 404"), ("/big", "byte limit")],
)
def test_redirects_errors_and_size_cap(server, path, why):
    fetcher = ImageFetcher(_url(server), max_bytes=len(PNG) * 10)
    with pytest.raises(FetchError, match=why):
        fetcher.fetch(path)


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("/data/upload/1/x.jpg", "LABEL_STUDIO_URL is not set"),
        ("file:///etc/passwd", "only http"),
        ("s3://bucket/key.jpg", "only http"),
        ("gopher://127.0.0.1:25/", "only http"),
    ],
)
def test_what_is_never_fetched(url, why):
    with pytest.raises(FetchError, match=why):
        ImageFetcher(allow=("*", "0.0.0.0/0")).fetch(url)
