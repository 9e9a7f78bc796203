"""A bucket's faults in one line: no credentials, rejected credentials, access denied, no such bucket, throttled.

s3fs, gcsfs and adlfs raise ``PermissionError``, ``FileNotFoundError`` or an ``OSError`` (``EBUSY`` for S3's
``SlowDown``) with the store's own words, or the auth library's exception (``NoCredentialsError``). They also retry
throttled and failed requests with backoff themselves; what reaches :func:`storage_errors` has outlived those
retries. It becomes a :class:`StorageError` naming the object, the cause and what to do, the shape of
:func:`fcnseg.faults.describe`.
"""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Iterator
from typing import Any

__all__ = ["CLOUD_INSTALL", "StorageError", "storage_errors", "translate"]

CLOUD_INSTALL = "pip install 'fcnseg[cloud]'"
_LIBRARY = {"s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "az": "adlfs", "abfs": "adlfs"}
_REJECTED = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken", "TokenRefreshRequired"}
_THROTTLED = {"SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequests", "503", "429"}
_NO_CREDENTIALS = {
    "NoCredentialsError", "PartialCredentialsError", "DefaultCredentialsError", "CredentialUnavailableError",
}  # fmt: skip
_FAILED = {"InternalError", "ServiceUnavailable", "500", "502", "504"}
_UNREACHABLE = {"EndpointConnectionError", "ConnectTimeoutError", "ClientConnectorError", "ServerDisconnectedError"}
CREDENTIALS_HELP = (
    "give credentials the way the store's library reads them (S3: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
    "AWS_PROFILE or an instance role, and AWS_ENDPOINT_URL for an S3-compatible store; GCS: "
    "GOOGLE_APPLICATION_CREDENTIALS; Azure: AZURE_STORAGE_CONNECTION_STRING or az login)"
)


class StorageError(OSError):
    """``what`` (an object or bucket) failed for ``cause``; ``advice`` says what to do. ``str(e)`` is the one line.

    ``run_wide``: every later request of the run would fail the same way (credentials, permissions, the bucket,
    throttling), so a command stops instead of failing each input. ``errno`` is None: not a disk's fault.
    """

    def __init__(self, what: str, cause: str = "", advice: str = "", *, run_wide: bool = True) -> None:
        super().__init__(f"{what}: {cause}; {advice}" if cause else what)  # one argument: re-raised by a DataLoader
        self.what, self.cause, self.advice, self.run_wide = what, cause, advice, run_wide


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]


def _code(exc: BaseException) -> str:
    """The store's error code (``AccessDenied``, ``SlowDown``...) of a botocore ``ClientError`` in the chain."""
    for e in _chain(exc):
        response: Any = getattr(e, "response", None)
        if isinstance(response, dict) and isinstance(response.get("Error"), dict):
            return str(response["Error"].get("Code", ""))
    return ""


def _names(exc: BaseException) -> set[str]:
    return {cls.__name__ for e in _chain(exc) for cls in type(e).__mro__}


def _protocol(what: str) -> str:
    return what.split("://", 1)[0] if "://" in what else ""


def translate(exc: BaseException, what: str, *, writing: bool = False) -> OSError | None:
    """``exc`` raised on ``what`` as a :class:`StorageError` (a missing object: a ``FileNotFoundError`` naming it),
    or None when it is not a store's fault we word."""
    if isinstance(exc, StorageError):
        return exc
    names, code = _names(exc), _code(exc)
    if isinstance(exc, ImportError):
        library = _LIBRARY.get(_protocol(what))
        needs = f"fsspec and {library}" if library else "fsspec"
        extra = f" {library}" if library and library != "s3fs" else ""
        return StorageError(what, f"reading and writing URLs needs {needs}", f"{CLOUD_INSTALL}{extra}")
    if names & _NO_CREDENTIALS:
        return StorageError(what, "no credentials found", CREDENTIALS_HELP)
    if code in _REJECTED:
        return StorageError(what, f"the store rejected the credentials ({code})", CREDENTIALS_HELP)
    if isinstance(exc, PermissionError) or code in ("AccessDenied", "403", "AllAccessDisabled"):
        verb = "write to" if writing else "read"
        return StorageError(
            what, "access denied", f"check that the credentials in use may {verb} it (or that they are the right ones)"
        )
    if code == "NoSuchBucket" or (isinstance(exc, FileNotFoundError) and "bucket does not exist" in str(exc)):
        bucket = what.split("://", 1)[-1].split("/", 1)[0]
        return StorageError(what, f"no such bucket {bucket!r}", "check its name, and the endpoint (AWS_ENDPOINT_URL)")
    if code in _THROTTLED or (isinstance(exc, OSError) and exc.errno == errno.EBUSY):
        return StorageError(
            what, f"the store is throttling requests ({code or exc}) and its retries with backoff ran out",
            "run again later (finished work is kept) or ask the store for a higher request rate",
        )  # fmt: skip
    if code in _FAILED:
        return StorageError(
            what, f"the store failed the request ({code}) after its retries", "check the store's health"
        )  # fmt: skip
    if names & _UNREACHABLE:
        return StorageError(what, f"cannot reach the store ({exc})", "check the network and the endpoint URL")
    if isinstance(exc, FileNotFoundError):
        return FileNotFoundError(errno.ENOENT, "no such object", what)
    return None


@contextlib.contextmanager
def storage_errors(what: Any, *, writing: bool = False) -> Iterator[None]:
    """Raise a store's fault inside the block as a :class:`StorageError` about ``what`` (others pass unchanged)."""
    try:
        yield
    except Exception as e:
        error = translate(e, str(what), writing=writing)
        if error is None or error is e:
            raise
        raise error from e
