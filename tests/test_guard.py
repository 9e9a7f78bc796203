"""The accuracy guard judges the user's model on the user's images, and ``--fast``'s build is cached across runs.

Hand-made cases: a 1x1-conv "segmenter" whose class 2 appears only on a bright red patch, and stand-in candidates
that lose exactly what the guard must catch.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

import fcnseg.optimize as O
from fcnseg.optimize import GuardResult, SpeedPlan, backends
from fcnseg.optimize.guard import CLASS_MIN_SHARE, IMAGE_AGREEMENT, compare_logits

SRC = Path(O.__file__).resolve().parents[2]


class Redness(nn.Module):
    """Class 2 where the (normalized) red channel exceeds 2 (a saturated red), class 1 elsewhere, never class 0."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.weight[2, 0] = 2.0
            self.conv.bias.copy_(torch.tensor([-5.0, 0.0, -4.0]))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"out": self.conv(x)}


def _red_patch(side: int = 64, patch: int = 4) -> torch.Tensor:
    """(1, 3, side, side), all zeros (class 1) but a patch x patch square of saturated red (class 2)."""
    x = torch.zeros(1, 3, side, side)
    x[0, 0, :patch, :patch] = 2.25  # (255/255 - 0.485) / 0.229
    return x


def _without_class_2(forward):
    return lambda x: forward(x) - 10 * torch.nn.functional.one_hot(torch.tensor(2), 3).view(1, 3, 1, 1)


# ------------------------------------------------------------------------------------------------ the rules


def test_a_vanished_class_fails_even_at_high_agreement():
    ref = torch.zeros(2, 3, 64, 64)
    ref[:, 1] = 1.0
    ref[0, 2, :3, :3] = 2.0  # class 2 on 9 of image 0's 4096 pixels (0.22 % >= CLASS_MIN_SHARE)
    out = ref.clone()
    out[:, 2] = 0.0
    result = compare_logits(out, ref)
    assert result.agreement == pytest.approx(8183 / 8192) and result.agreement >= result.threshold
    assert min(result.per_image) >= IMAGE_AGREEMENT
    assert result.vanished == (2,) and not result.passed
    assert CLASS_MIN_SHARE <= 9 / 4096
    tiny = ref.clone()
    tiny[:, 2] = 0.0
    tiny[0, 2, 0, 0] = 2.0  # one pixel (0.02 %): below CLASS_MIN_SHARE, not counted as a class present
    assert compare_logits(out, tiny).vanished == ()


def test_one_ruined_image_fails_although_the_pool_passes():
    ref = torch.zeros(20, 2, 20, 20)
    ref[:, 0] = 1.0
    out = ref.clone()
    out[9, 1, 0, :10] = 2.0  # image 9 loses 10 of 400 pixels: 97.5 %; the pool of 8000: 99.875 %
    result = compare_logits(out, ref)
    assert result.agreement == pytest.approx(0.99875) and result.agreement >= result.threshold
    assert result.per_image[9] == pytest.approx(0.975) and result.per_image[9] < IMAGE_AGREEMENT
    assert not result.passed
    assert "min 97.50%" in result.summary() and "over 20 images" in result.summary()


def test_results_pool_exactly_and_survive_json():
    a = compare_logits(torch.eye(2).view(1, 2, 1, 2), torch.eye(2).view(1, 2, 1, 2), on="a")
    b = compare_logits(torch.eye(2).flip(0).view(1, 2, 1, 2), torch.eye(2).view(1, 2, 1, 2), on="b")
    both = a + b
    assert (both.same, both.total, both.per_image, both.on) == (2, 4, (1.0, 0.0), "a + b")
    assert GuardResult.from_json(json.loads(json.dumps(both.to_json()))) == both


# ------------------------------------------------------------------------------------- auto on the user's images


def test_auto_judges_the_users_own_images(monkeypatch):
    """The lossy candidate agrees 100 % on the stand-in bundled photos (no red there) and loses class 2 on the user's
    image: main 133976e judged the bundled photos alone and picked it."""
    model = Redness().eval()
    lossy, fp32 = SpeedPlan(channels_last=True), O.PATHS["fold_bn"]  # stand-ins: eager fp32 under other names
    build = backends.build

    def fake_build(net, plan, **kwargs):
        return _without_class_2(build(net, O.PATHS["none"])) if plan == lossy else build(net, plan, **kwargs)

    monkeypatch.setattr(O.auto, "auto_candidates", lambda device: [lossy, fp32])
    monkeypatch.setattr(backends, "build", fake_build)
    bundled = [torch.zeros(1, 3, 64, 64)] * 3
    fn = O.optimize(model, "auto", guard_images=bundled, background=False)
    labels = fn(_red_patch()).argmax(1)
    assert fn.plan == fp32
    assert int((labels == 2).sum()) == 16  # the user's class 2 survives
    (plan, guard), *_ = fn.rejected
    assert plan == lossy and guard.vanished == (2,)
    assert guard.agreement >= guard.threshold and min(guard.per_image) >= IMAGE_AGREEMENT  # only the class rule
    assert "1 of your images at 64x64" in guard.on and "class 2 vanished" in fn.details()[0]


def test_auto_reports_what_it_measured_and_on_what(monkeypatch):
    model = Redness().eval()
    monkeypatch.setattr(O.auto, "auto_candidates", lambda device: [O.PATHS["fold_bn"], O.PATHS["default"]])
    fn = O.optimize(model, "auto", guard_images=[torch.zeros(2, 3, 64, 64)], background=False)
    fn(_red_patch().expand(3, -1, -1, -1))
    assert fn.plan == O.PATHS["fold_bn"]
    assert fn.guard.per_image == (1.0,) * 5  # 3 of the user's images + 2 given ones
    assert fn.describe() == (
        "the default path for 3 images: fp32 eager (100.00% agreement with fp32 on 3 of your images at 64x64 + 2 "
        "guard images)"
    )


# ------------------------------------------------------------------------------------- the build cache, across runs

RUN = textwrap.dedent(
    """
    import json, sys
    import torch
    import fcnseg.optimize as O
    from fcnseg.optimize import SpeedPlan, backends
    sys.path.insert(0, sys.argv[2])
    from test_guard import Redness, _red_patch, _without_class_2

    names = {SpeedPlan(channels_last=True): "lossy", O.PATHS["fold_bn"]: "fp32"}
    built = []
    build = backends.build

    def fake_build(net, plan, **kwargs):
        built.append(names.get(plan, "default"))
        return _without_class_2(build(net, O.PATHS["none"])) if built[-1] == "lossy" else build(net, plan, **kwargs)

    O.auto.auto_candidates = lambda device: [*names, O.PATHS["default"]]
    backends.build = fake_build
    model = Redness().eval()
    if sys.argv[3] == "changed":
        with torch.no_grad():
            model.conv.bias[0] -= 1e-3  # another model: never reuses the first one's build
    fn = O.optimize(model, "auto", cache_dir=sys.argv[1], background=False)
    fn(_red_patch())
    built = [b for b in built if b != "default"]
    print(json.dumps({"plan": names[fn.plan], "built": built, "hits": [names[p] for p in fn.cache_hits]}))
    """
)


def _run(cache: Path, which: str) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    here = str(Path(__file__).parent)
    out = subprocess.run(
        [sys.executable, "-c", RUN, str(cache), here, which], capture_output=True, text=True, env=env, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_guard_verdicts_are_cached_across_processes(tmp_path):
    """A second process on the same model and CPU builds no candidate that was refused before; a model differing in
    one weight starts afresh."""
    first = _run(tmp_path, "same")
    assert first == {"plan": "fp32", "built": ["lossy", "fp32"], "hits": []}
    assert len(list((tmp_path / "guard").glob("*.json"))) == 4  # each candidate: on all images, on the bundled ones
    second = _run(tmp_path, "same")
    assert second == {"plan": "fp32", "built": ["fp32"], "hits": ["lossy"]}
    changed = _run(tmp_path, "changed")
    assert changed["hits"] == [] and changed["built"] == ["lossy", "fp32"]
