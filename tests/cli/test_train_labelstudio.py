"""``fcnseg train --label-studio URL --project ID`` and ``fcnseg serve --label-studio-runs``: what they refuse
before pulling or loading anything.
(tests/labelstudio/test_loop.py pulls and trains from a real Label Studio.)"""

from __future__ import annotations

import pytest

from fcnseg.cli import main


def test_a_pull_never_goes_into_another_runs_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", "key")
    out = tmp_path / "run"
    (out / "data").mkdir(parents=True)
    (out / "last.pth").write_bytes(b"another run's checkpoint")
    (out / "data" / "export.json").write_text("[]")  # the data that run trained on
    # the server's address is unreachable: the folder must be refused before any connection is tried
    args = ["train", "--label-studio", "http://127.0.0.1:9", "--project", "3", "--output-dir", str(out)]
    assert main(args) != 0
    err = capsys.readouterr().err
    assert "already holds a run" in err and "Label Studio:" not in err
    assert (out / "data" / "export.json").read_text() == "[]" and (out / "last.pth").read_bytes().startswith(b"another")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--resume", "x/last.pth"], "a resumed run trains on the data it pulled"),
        ([], "needs the project's id"),
        (["--project", "3", "--data-root", "d"], "drop --data-root and --dataset"),
    ],
)
def test_label_studio_flags_that_contradict_each_other_are_one_line_errors(tmp_path, capsys, extra, message):
    assert main(["train", "--label-studio", "http://127.0.0.1:9", "--output-dir", str(tmp_path / "o"), *extra]) != 0
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--label-studio-train", "--epochz 2"], "fcnseg train has no --epochz"),
        (["--label-studio-train", "--output-dir x"], "sets how to train, not --output-dir"),
        (["--workers", "2"], "use --workers 1"),
    ],
)
def test_serve_refuses_loop_flags_before_loading_a_model(tmp_path, monkeypatch, capsys, extra, message):
    monkeypatch.setenv("LABEL_STUDIO_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", "key")
    loop = ["--label-studio-runs", str(tmp_path / "runs"), "--label-studio-project", "3"]
    assert main(["serve", "--weights", "none", *loop, *extra]) != 0
    assert message in capsys.readouterr().err and not (tmp_path / "runs").exists()
