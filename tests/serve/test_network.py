"""Hostile and slow clients on a real uvicorn over loopback: none can hold the server, every limit frees what it held.

Each test waits on the server's own state (bytes held, requests queued) or on the socket being closed, never on a
time window: the deadlines under test are short, but what the test asserts does not depend on how long anything took.
"""

from __future__ import annotations

import logging
import socket
import ssl
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlparse

import httpx
import pytest

from fcnseg.serve import create_app

PNG = "POST /v1/segment HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"


@pytest.fixture(scope="module")
def good(helpers):
    return helpers.encode(helpers.make_image(0, (48, 40)))


def connect(url: str) -> socket.socket:
    u = urlparse(url)
    return socket.create_connection((u.hostname, u.port), timeout=60)  # only a hang reaches this


def until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def post(url: str, body: bytes, **headers: str) -> httpx.Response:
    return httpx.post(f"{url}/v1/segment", content=body, headers={"content-type": "image/png", **headers}, timeout=60)


def test_slow_uploads_hold_no_slot(segmenter, helpers, good):
    """The issue's case: with 2 slots, two clients announcing 100 kB and sending 10 bytes locked everyone out (503).
    Now readers hold no slot, only the bytes they sent, and a normal request is answered while they stay."""
    app = create_app(segmenter, config=helpers.config(max_inflight=2, body_timeout_s=600, min_upload_rate=0))
    with helpers.live_server(app) as url:
        slow = [connect(url) for _ in range(2)]
        for sock in slow:
            sock.sendall(f"{PNG}Content-Length: 100000\r\n\r\n".encode() + b"\x89PNG\r\n\x1a\n\0\0")
        helpers.wait_until(lambda: app.state.admission.held_bytes == 20)  # both are reading, charged 10 bytes each
        r = post(url, good)
        assert r.status_code == 200, r.text
        assert app.state.admission.inflight == 0
        for sock in slow:
            sock.close()


def test_body_deadline_408_frees_everything(segmenter, helpers):
    app = create_app(segmenter, config=helpers.config(body_timeout_s=0.3, min_upload_rate=0))
    with helpers.live_server(app) as url:
        sock = connect(url)
        sock.sendall(f"{PNG}Content-Length: 100000\r\n\r\n".encode() + b"0123456789")
        answer = until_closed(sock).decode()  # the server answers, then closes: the rest of the body is unwanted
        sock.close()
        helpers.wait_until(lambda: app.state.admission.held_bytes == 0)
        assert app.state.admission.inflight == 0
    assert answer.startswith("HTTP/1.1 408") and "connection: close" in answer.lower()
    assert "not complete within 0.3 s (10 bytes received)" in answer and '"request_id"' in answer


def test_minimum_upload_rate_408(segmenter, helpers):
    config = helpers.config(body_timeout_s=600, min_upload_rate=1000, upload_grace_s=0.2)
    app = create_app(segmenter, config=config)
    with helpers.live_server(app) as url:
        sock = connect(url)
        sock.sendall(f"{PNG}Content-Length: 100000\r\n\r\n".encode() + b"0123456789")  # then nothing more
        answer = until_closed(sock).decode()
        sock.close()
    assert answer.startswith("HTTP/1.1 408") and "upload too slow" in answer and "1000 bytes/s" in answer


@pytest.mark.parametrize("sent", [b"", b"POST /v1/segment HTTP/1.1\r\nHost: x\r\n"], ids=["silent", "trickled"])
def test_headers_must_arrive_in_time(segmenter, helpers, sent):
    """A connection that sends nothing, or only part of its headers, is closed (uvicorn alone keeps it forever)."""
    app = create_app(segmenter, config=helpers.config(header_timeout_s=0.3, warmup=False))
    with helpers.live_server(app) as url:
        sock = connect(url)
        sock.sendall(sent)
        assert until_closed(sock) == b""  # closed without an answer
        sock.close()


def test_idle_and_trickling_keep_alive_connections_closed(segmenter, helpers, good):
    app = create_app(segmenter, config=helpers.config(header_timeout_s=0.5, keep_alive_s=1))
    request = f"{PNG}Content-Length: {len(good)}\r\n\r\n".encode() + good
    with helpers.live_server(app) as url:
        for after in (b"", b"G"):  # silent after the answer (uvicorn's keep-alive), or one byte (the header deadline)
            sock = connect(url)
            sock.sendall(request)
            first = sock.recv(65536)
            sock.sendall(after)
            rest = until_closed(sock)
            sock.close()
            assert first.startswith(b"HTTP/1.1 200") and b"HTTP/1.1" not in rest


def test_connection_cap(segmenter, helpers, good):
    app = create_app(segmenter, config=helpers.config(max_connections=4, header_timeout_s=600))
    with helpers.live_server(app) as url:
        idle = [connect(url) for _ in range(4)]
        r = post(url, good)  # a fifth connection: over the cap
        for sock in idle:
            sock.close()
    assert r.status_code == 503


def test_client_gone_mid_upload_is_an_info_line(segmenter, helpers, caplog):
    app = create_app(segmenter, config=helpers.config(body_timeout_s=600, min_upload_rate=0))
    with caplog.at_level(logging.INFO, logger="fcnseg.serve"), helpers.live_server(app) as url:
        sock = connect(url)
        sock.sendall(f"{PNG}Content-Length: 100000\r\n\r\n".encode() + b"0123456789")
        helpers.wait_until(lambda: app.state.admission.held_bytes == 10)
        sock.close()
        helpers.wait_until(lambda: any("client left" in r.getMessage() for r in caplog.records))
        helpers.wait_until(lambda: app.state.admission.held_bytes == 0)
    gone = [r for r in caplog.records if "client left" in r.getMessage()]
    assert [r.levelname for r in gone] == ["INFO"] and "after 10 bytes" in gone[0].getMessage()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize("trusted", [False, True])
def test_per_client_share(segmenter, helpers, good, trusted):
    """One address gets at most its share of the slots. Behind a trusted proxy X-Forwarded-For names the client;
    from anyone else the header is ignored, so a client cannot claim a fresh share by inventing addresses."""
    gated = helpers.Gated(segmenter)
    app = create_app(gated, config=helpers.config(max_inflight=4, max_per_client=1, warmup=False))
    proxy = {"proxy_headers": True, "forwarded_allow_ips": "127.0.0.1"} if trusted else {"proxy_headers": False}
    with helpers.live_server(app, **proxy) as url, ThreadPoolExecutor(2) as pool:
        first = pool.submit(post, url, good, **{"x-forwarded-for": "10.0.0.1"})
        assert gated.started.wait(30)  # 10.0.0.1's one slot is taken
        again = post(url, good, **{"x-forwarded-for": "10.0.0.1"})
        other = pool.submit(post, url, good, **{"x-forwarded-for": "10.0.0.2"})
        if trusted:
            helpers.wait_until(lambda: app.state.batcher.queued == 1)  # admitted: another client
        else:
            other.result()  # refused while the first still holds the slot (before the gate opens)
        gated.gate.set()
        codes = [first.result().status_code, again.status_code, other.result().status_code]
    assert "its share" in again.json()["detail"] and again.headers["retry-after"]
    assert codes == ([200, 503, 200] if trusted else [200, 503, 503])


def test_tls(segmenter, helpers, good, tmp_path):
    """HTTPS with a certificate made here for 127.0.0.1; the client verifies it against that certificate."""
    cert, key = self_signed(tmp_path)
    app = create_app(segmenter, config=helpers.config())
    with helpers.live_server(app, ssl_certfile=str(cert), ssl_keyfile=str(key)) as url:
        assert url.startswith("https://")
        r = httpx.post(f"{url}/v1/segment?format=png", content=good, headers={"content-type": "image/png"},
                       verify=ssl.create_default_context(cafile=cert), timeout=60)  # fmt: skip
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
        with pytest.raises(httpx.ConnectError):  # and a client that trusts only the system's CAs refuses it
            httpx.get(f"{url}/healthz")


def self_signed(folder):
    """A throwaway self-signed certificate and key for 127.0.0.1 (PEM files)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path
