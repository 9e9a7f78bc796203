"""in_background: results in order, one failure per item, a bounded window, and Ctrl-C lets running work finish."""

from __future__ import annotations

import sys
import threading
import time

import pytest

from fcnseg.cli.background import in_background


@pytest.mark.parametrize("threads", [0, 1, 3])
def test_results_in_order_with_errors_per_item(threads):
    def work(i: int) -> int:
        time.sleep(0.001 * (i % 3))  # later items may finish first
        if i == 4:
            raise OSError(28, "No space left on device")
        return i * i

    got = list(in_background(range(8), work, threads=threads))
    assert [item for item, _ in got] == list(range(8))
    assert [r for i, r in got if i != 4] == [i * i for i in range(8) if i != 4]
    assert isinstance(got[4][1], OSError)


def test_the_producer_never_runs_more_than_a_window_ahead():
    produced, finished = [], []

    def items():
        for i in range(10):
            assert len(produced) - len(finished) <= 3  # at most window=2 waiting, plus the one being produced
            produced.append(i)
            yield i

    for _ in in_background(items(), lambda i: time.sleep(0.002), threads=2, window=2):
        finished.append(1)
    assert len(produced) == 10


def test_ctrl_c_lets_running_work_finish_and_starts_no_more():
    started, completed = [], []
    first_running, release = threading.Event(), threading.Event()
    main = threading.current_thread()

    def work(i: int) -> None:
        started.append(i)
        first_running.set()
        assert release.wait(60)
        completed.append(i)

    def items():
        yield 0
        assert first_running.wait(60)  # item 0 is running; 1 and 2 wait in the queue behind it
        yield from (1, 2)
        threading.Thread(target=release_once_shut_down).start()
        raise KeyboardInterrupt  # the model loop interrupted while the writer is busy

    def release_once_shut_down() -> None:
        """Let item 0 finish only once the interrupted loop is waiting for it (the queue already cancelled)."""
        while not in_join_of_shutdown(main):
            release.wait(0.001)
        release.set()

    with pytest.raises(KeyboardInterrupt):
        for _ in in_background(items(), work, threads=1, window=5):
            pass
    assert completed == started == [0]  # the write that started has finished: its files are complete
    # and the queued ones were cancelled, never started


def in_join_of_shutdown(thread: threading.Thread) -> bool:
    """Whether ``thread`` is inside ``ThreadPoolExecutor.shutdown`` waiting for its workers (``join``)."""
    frame = sys._current_frames().get(thread.ident)
    names = []
    while frame is not None:
        names.append(frame.f_code.co_name)
        frame = frame.f_back
    return "shutdown" in names and "join" in names[: names.index("shutdown")]


def test_an_interrupt_inside_the_work_starts_no_later_item():
    done = []

    def work(i: int) -> None:
        if i == 1:
            raise KeyboardInterrupt
        time.sleep(0.01)
        done.append(i)

    with pytest.raises(KeyboardInterrupt):
        list(in_background(range(5), work, threads=1, window=4))
    assert done == [0]
