"""Fetching a task's image, and only from where the operator said: Label Studio itself, or hosts on a list.

A task's image is a URL written by whoever can create tasks, and the model's server fetches it: without a rule
that is server-side request forgery (the server reading its cloud metadata, admin pages on its loopback...).
So:

- A path (``/data/upload/3/cat.jpg``, ``/data/local-files/?d=...``) or a URL on the origin of ``LABEL_STUDIO_URL``
  is fetched from that Label Studio with ``LABEL_STUDIO_API_KEY``: a legacy token as ``Token KEY``; a personal
  access token (a JWT, the refresh kind) is exchanged at ``/api/token/refresh/`` for a short-lived access token,
  sent as ``Bearer``, renewed before it expires. The operator named that server; it may well be on loopback.
- Any other ``http(s)`` URL only if its host is on the allow list (``*``: any host), and only if every address the
  name resolves to is public (not loopback, private, link-local, reserved, multicast), unless the list names that
  address or its network (``10.0.0.0/8``). The connection goes to the address that was checked, never to a second
  lookup (so a name cannot be re-pointed between check and use), with TLS still verified against the name.
- Redirects are not followed (a 3xx is an error naming where it pointed): a checked host could send us anywhere.
- The answer's size is capped as an upload's is, and the whole exchange has a timeout.
"""

from __future__ import annotations

import base64
import http.client
import ipaddress
import json
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit

__all__ = ["FetchError", "ImageFetcher"]

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class FetchError(ValueError):
    """A task's image could not or may not be fetched; the message says which URL and why."""


def _jwt_part(token: str, i: int) -> dict:
    """Part ``i`` (0 header, 1 claims) of a JWT, unverified (only Label Studio checks it); {} if not a JWT."""
    parts = token.split(".")
    try:
        part = json.loads(base64.urlsafe_b64decode(parts[i] + "=" * (-len(parts[i]) % 4))) if len(parts) == 3 else {}
    except (ValueError, TypeError):
        return {}
    return part if isinstance(part, dict) else {}


def _is_jwt(token: str) -> bool:
    return "alg" in _jwt_part(token, 0)


@dataclass
class ImageFetcher:
    """Fetches task images by the rules above.

    Args:
        label_studio_url: ``LABEL_STUDIO_URL``; without it, paths cannot be fetched.
        api_key: ``LABEL_STUDIO_API_KEY``, sent only to ``label_studio_url``.
        allow: hosts (names, ``*``) and addresses or networks other URLs may be fetched from.
        max_bytes: the largest answer accepted.
        timeout: seconds the whole exchange may take.
    """

    label_studio_url: str | None = None
    api_key: str | None = None
    allow: tuple[str, ...] = ()
    max_bytes: int = 20 << 20
    timeout: float = 30.0
    _names: set[str] = field(init=False, repr=False)
    _networks: list[Network] = field(init=False, repr=False)
    _access: tuple[str, float] | None = field(init=False, repr=False, default=None)  # token, expiry (epoch s)
    _lock: threading.Lock = field(init=False, repr=False, default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._names, self._networks = set(), []
        for entry in self.allow:
            try:
                self._networks.append(ipaddress.ip_network(entry.strip(), strict=False))
            except ValueError:
                self._names.add(entry.strip().lower().rstrip("."))
        if self.label_studio_url is not None:
            parts = urlsplit(self.label_studio_url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"LABEL_STUDIO_URL must be an http(s) URL, got {self.label_studio_url!r}")

    def fetch(self, url: str) -> bytes:
        """The bytes at ``url`` (a task's image reference); :class:`FetchError` if refused or failed."""
        parts = urlsplit(url)
        if not parts.scheme and not parts.netloc:  # a path on Label Studio
            if self.label_studio_url is None:
                raise FetchError(f"{url}: a Label Studio path, but LABEL_STUDIO_URL is not set")
            return self._get(urljoin(self.label_studio_url.rstrip("/") + "/", url.lstrip("/")), trusted=True)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise FetchError(f"{url}: only http(s) URLs and Label Studio paths can be fetched")
        if self.label_studio_url is not None and _origin(url) == _origin(self.label_studio_url):
            return self._get(url, trusted=True)
        host = parts.hostname.lower().rstrip(".")
        if not ("*" in self._names or host in self._names or self._allowed_literal(host)):
            raise FetchError(f"{url}: host {host} is not allowed (fcnseg serve --label-studio-allow-host)")
        return self._get(url, trusted=False)

    def _allowed_literal(self, host: str) -> bool:
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in net for net in self._networks)

    def _address(self, url: str, host: str, port: int) -> str:
        """The one address to connect to: every address of ``host`` must be public or on the allow list."""
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as e:
            raise FetchError(f"{url}: cannot resolve {host} ({e})") from None
        addresses = [ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos]
        for address in addresses:
            if not address.is_global and not any(address in net for net in self._networks):
                raise FetchError(f"{url}: {host} resolves to {address}, a non-public address; refused")
        return str(addresses[0])

    def _get(self, url: str, *, trusted: bool) -> bytes:
        parts = urlsplit(url)
        host, https = parts.hostname, parts.scheme == "https"
        port = parts.port or (443 if https else 80)
        address = host if trusted else self._address(url, host, port)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        headers = {"Host": parts.netloc.rsplit("@", 1)[-1], "Accept": "*/*"}  # Label Studio answers image/* with 406
        if trusted and self.api_key:
            headers["Authorization"] = self._authorization()
        return self._exchange(url, "GET", path, headers, address, None)

    def _authorization(self) -> str:
        """The ``Authorization`` header for Label Studio: ``Token KEY``, or ``Bearer`` and a fresh access token."""
        if not _is_jwt(self.api_key):
            return f"Token {self.api_key}"
        with self._lock:  # images are fetched from several threads; one exchange serves them all
            if self._access is None or self._access[1] - 60 < time.time():
                url = urljoin(self.label_studio_url.rstrip("/") + "/", "api/token/refresh/")
                parts = urlsplit(url)
                body = json.dumps({"refresh": self.api_key}).encode()
                headers = {"Host": parts.netloc, "Content-Type": "application/json", "Accept": "application/json"}
                answer = self._exchange(url, "POST", parts.path, headers, parts.hostname, body)
                try:
                    access = json.loads(answer)["access"]
                except (ValueError, KeyError, TypeError):
                    raise FetchError(f"{url}: no access token in Label Studio's answer") from None
                expiry = _jwt_part(access, 1).get("exp")
                self._access = (access, float(expiry) if isinstance(expiry, (int, float)) else time.time() + 60)
            return f"Bearer {self._access[0]}"

    def _exchange(self, url: str, method: str, path: str, headers: dict, address: str, body: bytes | None) -> bytes:
        """One request to ``address`` (already checked); the body of a 200, else :class:`FetchError`."""
        parts = urlsplit(url)
        https = parts.scheme == "https"
        port = parts.port or (443 if https else 80)
        conn = _connection(address, parts.hostname, port, https, self.timeout)
        try:
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            if 300 <= response.status < 400:
                raise FetchError(f"{url}: redirected to {response.getheader('Location')!r}; redirects are not followed")
            if response.status != 200:
                raise FetchError(f"{url}: HTTP {response.status} {response.reason}")
            data = _read(response, self.max_bytes + 1, time.monotonic() + self.timeout)
        except TimeoutError:
            raise FetchError(f"{url}: not received within {self.timeout:g} s") from None
        except (OSError, http.client.HTTPException) as e:
            raise FetchError(f"{url}: {e or type(e).__name__}") from None
        finally:
            conn.close()
        if len(data) > self.max_bytes:
            raise FetchError(f"{url}: larger than the {self.max_bytes} byte limit")
        return data


def _origin(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    https = parts.scheme == "https"
    return parts.scheme, (parts.hostname or "").lower(), parts.port or (443 if https else 80)


def _read(response: http.client.HTTPResponse, limit: int, deadline: float) -> bytes:
    """At most ``limit`` bytes of the body; ``TimeoutError`` once ``deadline`` passes (a trickle cannot hold us)."""
    chunks, size = [], 0
    while size < limit:
        if time.monotonic() > deadline:
            raise TimeoutError
        chunk = response.read1(min(1 << 16, limit - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _connection(address: str, host: str, port: int, https: bool, timeout: float) -> http.client.HTTPConnection:
    """A connection to ``address`` (already checked) that speaks to ``host`` (TLS name check, SNI)."""
    if not https:
        return http.client.HTTPConnection(address, port, timeout=timeout)
    return _PinnedHTTPS(address, port, timeout=timeout, server_hostname=host)


class _PinnedHTTPS(http.client.HTTPSConnection):
    """HTTPS to a fixed address, the certificate checked against ``server_hostname``."""

    def __init__(self, address: str, port: int, *, timeout: float, server_hostname: str) -> None:
        super().__init__(address, port, timeout=timeout, context=ssl.create_default_context())
        self.server_hostname = server_hostname

    def connect(self) -> None:
        http.client.HTTPConnection.connect(self)
        self.sock = self._context.wrap_socket(self.sock, server_hostname=self.server_hostname)
