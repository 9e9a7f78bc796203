"""The loopback S3 server and a fresh bucket per test (see ``tests/s3server.py``, shared with other test folders)."""

from s3server import s3, s3_server  # noqa: F401  (fixtures)
