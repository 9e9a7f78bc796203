"""Faults for the Ray engine's actors, injected at points a test chooses: the ``worker_process_setup_hook`` of the
tests' Ray jobs (``raykill.install``), which wraps :class:`fcnseg.ray.engine.SaveBatch` in every worker process.

A test creates a flag file in ``$FCNSEG_TEST_RAY_FLAGS``:

- ``kill``: the first actor to take a batch after it appears claims it (an atomic rename, so exactly one does) and
  SIGKILLs its own process before segmenting, as a machine failure would; Ray restarts the actor and retries the batch.
- ``nodes/``: every model actor touches a file named by its node's id there (always; the two-node test reads it).
- ``hold`` (a named pipe): an actor that has written a batch writes its pid to ``held`` and blocks opening the pipe
  until the test opens it for writing (:func:`release`), so that a test can kill the driver with a known number of
  images finished and none in flight. No polling: the open returns the moment the test lets it go.
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path


def _claim(flag: Path) -> bool:
    try:
        flag.rename(flag.with_name(flag.name + ".taken"))
    except FileNotFoundError:
        return False
    return True


def install() -> None:
    from fcnseg.ray import engine

    flags = Path(os.environ["FCNSEG_TEST_RAY_FLAGS"])
    call, init = engine.SaveBatch.__call__, engine.SaveBatch.__init__

    def placed(self, **options):
        import ray

        (flags / "nodes").mkdir(exist_ok=True)
        (flags / "nodes" / ray.get_runtime_context().get_node_id()).touch()
        init(self, **options)

    def faulty(self, batch):
        if _claim(flags / "kill"):
            os.kill(os.getpid(), signal.SIGKILL)
        answer = call(self, batch)
        if (flags / "hold").exists():
            (flags / "held").write_text(str(os.getpid()))
            with contextlib.suppress(FileNotFoundError), open(flags / "hold", "rb"):  # until released
                pass
        return answer

    engine.SaveBatch.__call__, engine.SaveBatch.__init__ = faulty, placed


def release(hold: Path) -> None:
    """Let go an actor blocked on the ``hold`` pipe (opening it for writing wakes the reader), then remove it."""
    with contextlib.suppress(OSError):  # ENXIO: no actor is waiting
        os.close(os.open(hold, os.O_WRONLY | os.O_NONBLOCK))
    hold.unlink(missing_ok=True)
