"""One local Ray for the session (2 CPUs, a small object store, no dashboard), the photos the Ray tests segment, and
the local engine's outputs for them, which every Ray run must reproduce."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from checkpoints import THREE_CLASSES, write_checkpoint
from PIL import Image
from rayrun import SETTINGS, segment
from s3server import s3, s3_environment, s3_server  # noqa: F401  (fixtures)

HERE = Path(__file__).resolve().parent
ASSETS = Path(__file__).resolve().parents[2] / "src" / "fcnseg" / "assets"
# (asset, size): the shipped photos made small, in several sizes (and so several batches of one size)
PHOTOS = [
    ("astronaut", (64, 64)), ("chelsea", (96, 64)), ("coffee", (96, 64)), ("rocket", (64, 96)),
    ("retina", (80, 80)), ("hubble_deep_field", (128, 96)), ("immunohistochemistry", (64, 80)),
]  # fmt: skip


@pytest.fixture(scope="session")
def ray_local(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest):
    """The session's Ray: ``ray``, ``address`` (to join it from a subprocess) and ``flags`` (raykill.py's folder).

    Its workers get the environment this process has when Ray starts, set here for the time of ``ray.init`` only:
    raykill.py importable and its flags folder, and the loopback S3 server's endpoint and keys, as a user's nodes
    have their store's.
    """
    import ray

    flags = tmp_path_factory.mktemp("rayflags")
    path = os.pathsep.join(p for p in (str(HERE), os.environ.get("PYTHONPATH")) if p)
    store = s3_environment(request.getfixturevalue("s3_server").url)
    env = {"FCNSEG_TEST_RAY_FLAGS": str(flags), "PYTHONPATH": path, **store}
    with _environment(env):
        ray.init(
            num_cpus=2, object_store_memory=150 * 2**20, include_dashboard=False, logging_level="WARNING",
            runtime_env={"worker_process_setup_hook": "raykill.install"},
        )  # fmt: skip
    try:
        yield SimpleNamespace(ray=ray, address=ray.get_runtime_context().gcs_address, flags=flags)
    finally:
        ray.shutdown()


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="session")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("ckpt") / "random3.pth", THREE_CLASSES)


@pytest.fixture(scope="session")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of small photos (one in a sub-folder, so names keep folders) and one corrupt file."""
    root = tmp_path_factory.mktemp("photos")
    for i, (name, size) in enumerate(PHOTOS):
        path = root / ("trip" if i % 3 == 0 else "") / f"{name}.jpg"
        path.parent.mkdir(exist_ok=True)
        Image.open(ASSETS / f"{name}.jpg").convert("RGB").resize(size).save(path, quality=90)
    (root / "broken.jpg").write_bytes((ASSETS / "chelsea.jpg").read_bytes()[:300])  # a JPEG cut after its header
    return root


@pytest.fixture(scope="session")
def local_run(photos: Path, weights: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The local engine's outputs for ``photos``."""
    out = tmp_path_factory.mktemp("local") / "out"
    assert segment(photos, "-o", out, "--weights", weights, *SETTINGS) == 1  # the corrupt file fails
    return out
