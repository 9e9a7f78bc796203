"""in_background: results in order, one failure per item, a bounded window, and Ctrl-C lets running work finish."""

from __future__ import annotations

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
    release = threading.Event()

    def work(i: int) -> None:
        started.append(i)
        release.wait(5)
        time.sleep(0.05)
        completed.append(i)

    def items():
        yield from range(3)
        release.set()
        raise KeyboardInterrupt  # the model loop interrupted while the writers are busy

    with pytest.raises(KeyboardInterrupt):
        for _ in in_background(items(), work, threads=1, window=5):
            pass
    assert completed == started  # every write that started has finished: its files are complete
    assert 1 <= len(started) < 3  # and the queued ones were cancelled


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
