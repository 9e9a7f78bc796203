"""Task images are fetched only from Label Studio or allowed hosts: a loopback HTTP server plays both."""

from __future__ import annotations

import base64
import json
import threading
import time
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

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.seen.append((self.path, body, None))
        answer = json.dumps({"access": _jwt({"token_type": "access", "exp": time.time() + 300})}).encode()
        self.send_response(200 if body.get("refresh") == self.server.refresh else 401)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args):
        pass


def _jwt(claims: dict) -> str:
    def part(obj: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")

    return f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part(claims)}.c2lnbmF0dXJl"


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.seen, httpd.refresh = [], _jwt({"token_type": "refresh"})
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


def test_a_personal_access_token_is_exchanged_for_an_access_token(server):
    """Label Studio's personal access tokens are JWT refresh tokens: exchanged once, the access token sent."""
    fetcher = ImageFetcher(_url(server), server.refresh)
    fetcher.fetch("/data/upload/1/a.png")
    fetcher.fetch("/data/upload/1/b.png")
    (refresh_path, sent, _), (_, auth_a, _), (_, auth_b, _) = server.seen
    assert (refresh_path, sent) == ("/api/token/refresh/", {"refresh": server.refresh})
    assert auth_a == auth_b and auth_a.startswith("Bearer ") and auth_a != f"Bearer {server.refresh}"
    with pytest.raises(FetchError, match="HTTP 401"):
        ImageFetcher(_url(server), _jwt({"token_type": "refresh", "user": "someone else"})).fetch("/data/x.png")


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
