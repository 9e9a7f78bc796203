"""Ctrl-C during training is acknowledged at once, with the wait estimated from the times the loop measured."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import torch
from shapes_data import write_shapes_dataset

from fcnseg.train import TrainConfig, TrainingStopped, fit
from fcnseg.train import loop as loop_mod
from fcnseg.train.stop import Pace, stop_on_signals


def test_the_wait_is_what_is_left_of_this_phase_and_what_follows_it():
    pace = Pace(step_s=2.0, validate_s=10.0, save_s=1.5)
    pace.enter("step", 100.0)
    assert pace.left(100.5) == 1.5 + 1.5  # the rest of the step, then the save
    pace.enter("step", 100.0, validate_next=True)  # the epoch's last step: validation and its save follow
    assert pace.left(100.5) == 1.5 + 10.0 + 1.5
    pace.enter("validate", 200.0)
    assert pace.left(204.0) == 6.0 + 1.5 and pace.left(230.0) == 1.5  # late: the rest counts as nothing
    assert Pace().left(0.0) is None  # nothing timed yet
    first = Pace(step_s=2.0)
    first.enter("step", 0.0)
    assert first.left(0.0) == 2.0  # a run's first save, not timed yet, counts as nothing
    pace.enter("save", 300.0)
    pace.took(302.5)
    assert pace.save_s == 2.5 and (pace.phase, pace.left(400.0)) == ("idle", 0.0)  # saved: it stops at once
    pace.enter("step", 500.0)
    pace.took(503.0)  # a step done: the save (where it stops) is what is left
    assert (pace.step_s, pace.phase, pace.left(503.0)) == (3.0, "save", 2.5)
    pace.enter("step", 600.0, validate_next=True)
    pace.took(603.0)  # the epoch's last step done: its validation and the save
    assert (pace.phase, pace.left(603.0)) == ("validate", 10.0 + 2.5)


@pytest.mark.parametrize(
    ("sig", "again", "second"),
    [(signal.SIGINT, "Ctrl-C again", KeyboardInterrupt), (signal.SIGTERM, "SIGTERM again", SystemExit)],
)
def test_the_first_signal_is_acknowledged_the_second_stops_at_once(sig, again, second):
    """Real signals to this process; ``raise_signal`` returns after the handler ran, so nothing waits on a clock."""
    said, now = [], [50.0]
    with stop_on_signals(said.append, lambda: now[0]) as stop:
        stop.pace = Pace(step_s=4.0, save_s=2.0)
        stop.pace.enter("step", 49.0)
        signal.raise_signal(sig)
        assert stop.signum == sig
        assert said == [f"stopping after this step, about 5 s; {again} stops without saving"]
        with pytest.raises(second):
            signal.raise_signal(sig)


@pytest.fixture(scope="module")
def mini(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_shapes_dataset(tmp_path_factory.mktemp("mini"), n_train=4, n_val=2, seed=2)


def test_the_loop_times_its_steps_and_validation_for_the_estimate(mini, tmp_path, monkeypatch, capfd):
    """A real run (2 steps an epoch) on a clock of its own: a step's loss takes 3 s of it, a validation 10 s and
    writing a checkpoint file 1 s (an epoch's end writes last.pth and best.pth), so Ctrl-C in the epoch's last step
    (step 4) waits for the step (3 s), the validation (10 s) and the save (2 s): ``about 15 s``, said on stderr as
    the signal arrives; the run then stops at step 4. (The files are not written: the checkpoints are not what this
    tests, and they are 400 MB an epoch.)"""
    now = [0.0]
    monkeypatch.setattr(loop_mod, "pace_clock", lambda: now[0])
    criterion, evaluate, losses = loop_mod.criterion, loop_mod.evaluate, []

    def timed_criterion(*args, **kwargs):
        losses.append(1)
        if len(losses) == 4:
            signal.raise_signal(signal.SIGINT)
        now[0] += 3.0
        return criterion(*args, **kwargs)

    def timed_evaluate(*args, **kwargs):
        now[0] += 10.0
        return evaluate(*args, **kwargs)

    def timed_save(checkpoint, path):
        now[0] += 1.0

    monkeypatch.setattr(loop_mod, "criterion", timed_criterion)
    monkeypatch.setattr(loop_mod, "evaluate", timed_evaluate)
    monkeypatch.setattr(loop_mod, "save_checkpoint", timed_save)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with pytest.raises(TrainingStopped) as e:
            fit(TrainConfig(data_root=str(mini), output_dir=str(tmp_path / "run"), weights_backbone=None,
                            base_size=32, crop_size=32, batch_size=2, epochs=3, workers=0, progress=False))  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    assert e.value.step == 4
    assert "stopping after this step, about 15 s; Ctrl-C again stops without saving\n" in capfd.readouterr().err
