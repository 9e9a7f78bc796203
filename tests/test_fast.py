"""``--fast`` from the first image: the default path answers while candidates are built in the background, the guard
decides on enough pixels at the size the model sees and again for each size class, ``serve`` judges on bundled
photos and then checks served calls, and compiled torch paths are reused by the next process.

Stand-in candidates (a plain build wrapped to lose exactly what the guard must catch) on the 1x1-conv "Redness"
segmenter of ``test_guard.py``; no test depends on timing (an injected clock, events, and ``Auto.wait``).
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
import torch
from test_guard import Redness, _red_patch, _without_class_2

import fcnseg.optimize as O
from fcnseg.optimize import SpeedPlan, backends, cache
from fcnseg.optimize.guard import MAX_PADDING, MIN_IMAGES, MIN_PIXELS

SRC = Path(O.__file__).resolve().parents[2]
FAST = SpeedPlan(channels_last=True)  # an fp32 eager plan other than the default: the stand-in's name


def _with(monkeypatch, wrap, plans=(FAST,)) -> None:
    """``"auto"``'s candidates are ``plans``, each built as plain fp32 wrapped by ``wrap(forward, x)``."""
    build = backends.build

    def fake_build(net, plan, **kwargs):
        if plan == O.PATHS["default"]:
            return build(net, plan)
        fp32 = build(net, O.PATHS["none"])
        return lambda x: wrap(fp32, x)

    monkeypatch.setattr(O.auto, "auto_candidates", lambda device: list(plans))
    monkeypatch.setattr(backends, "build", fake_build)


def _fp32(x: torch.Tensor) -> torch.Tensor:
    return Redness().eval()(x)["out"]


def _big_red(h: int = 112, w: int = 144) -> torch.Tensor:
    """A (1, 3, h, w) image with a 16x16 saturated-red square (class 2 on 1.6 % of it)."""
    x = torch.zeros(1, 3, h, w)
    x[0, 0, :16, :16] = 2.25
    return x


def test_a_tiny_first_image_cannot_pass_a_path_that_fails_on_the_rest(monkeypatch, tmp_path):
    """The candidate is exact on small inputs and loses class 2 on larger ones. e708fe9 judged it on the first
    (8x8) batch alone, passed it and ran it on every later image; now each size class is judged on its own."""
    _with(monkeypatch, lambda fp32, x: fp32(x) if x.shape[-1] * x.shape[-2] < 1024 else _without_class_2(fp32)(x))
    fn = O.optimize(Redness().eval(), "auto", cache_dir=tmp_path)
    with torch.inference_mode():
        fn(torch.zeros(1, 3, 8, 8))
        fn.wait()
        assert fn.plan == FAST  # it is exact at 8x8: passed there
        for _ in range(3):
            x = _big_red()
            out = fn(x)
            fn.wait()
            assert int((out.argmax(1) == 2).sum()) == 256  # the user's class 2 is never lost
    assert fn.plan == O.PATHS["default"]
    (plan, refused), *_ = fn.rejected
    assert plan == FAST and refused.vanished == (2,) and "1 of your images at 144x112" in refused.on


def test_one_tiny_image_is_judged_with_bundled_photos_at_its_size(monkeypatch, tmp_path):
    """Logits rounded to whole numbers flip no pixel of one dark 8x8 image (e708fe9 passed it on that image and one
    bundled crop) but do flip pixels of the bundled photos cut to 8x8: judged on 1 + 256 images, it is refused."""
    _with(monkeypatch, lambda fp32, x: torch.round(fp32(x)))
    fn = O.optimize(Redness().eval(), "auto", cache_dir=tmp_path)
    with torch.inference_mode():
        x = torch.zeros(1, 3, 8, 8)
        assert bool((torch.round(_fp32(x)).argmax(1) == _fp32(x).argmax(1)).all())  # nothing to see on yours
        fn(x)
        fn.wait()
    assert fn.plan == O.PATHS["default"]
    (_, refused), *_ = fn.rejected
    assert refused.on == f"1 of your images at 8x8 + {MAX_PADDING} bundled photos at 8x8"
    assert len(refused.per_image) == 1 + MAX_PADDING and not refused.passed


def test_the_guard_tops_up_to_its_minimums_and_no_further(monkeypatch, tmp_path):
    _with(monkeypatch, lambda fp32, x: fp32(x))
    fn = O.optimize(Redness().eval(), "auto", cache_dir=tmp_path, background=False)
    with torch.inference_mode():
        fn(torch.zeros(2, 3, 96, 128))  # 2 images, 24576 pixels: 4 more at 96x128 make 6 and 73728
    assert fn.plan == FAST
    assert fn.guard.on == "2 of your images at 128x96 + 4 bundled photos at 128x96"
    assert fn.guard.total == 6 * 96 * 128 >= MIN_PIXELS and len(fn.guard.per_image) >= MIN_IMAGES


def test_the_default_path_answers_while_the_candidate_builds(monkeypatch, tmp_path):
    """The build blocks until the test lets it finish: every call meanwhile is answered, by the default path."""
    release, building = threading.Event(), threading.Event()

    def slow(fp32, x):
        return fp32(x)

    _with(monkeypatch, slow)
    build = backends.build

    def blocking_build(net, plan, **kwargs):
        if plan != O.PATHS["default"]:
            building.set()
            assert release.wait(60)
        return build(net, plan, **kwargs)

    monkeypatch.setattr(backends, "build", blocking_build)
    fn = O.optimize(Redness().eval(), "auto", cache_dir=tmp_path)
    with torch.inference_mode():
        for _ in range(3):
            torch.testing.assert_close(fn(_red_patch()), _fp32(_red_patch()))
        assert building.wait(60)
        assert fn.plan == O.PATHS["default"] and fn.ran == {"the default path": 3}
        release.set()
        fn.wait()
        fn(_red_patch())
    assert fn.plan == FAST and fn.ran == {"the default path": 3, "fp32 eager": 1}
    assert fn.describe().startswith("the default path for 3 images, fp32 eager for 1 image: fp32 eager (100.00%")


def test_a_run_too_short_to_repay_the_build_skips_it(monkeypatch, tmp_path):
    """With an injected clock the default path takes 1 s per image; the candidate's build cost measured in an
    earlier run (30 s, 2x) and judging it on yours (0.5 s) and 15 bundled crops (1.5 s each, fp32 and candidate)
    repay after 106 images: a run of 20 skips it and says so, a run of 200 builds it."""
    _with(monkeypatch, lambda fp32, x: fp32(x))
    model = Redness().eval()
    ticks = itertools.count()
    clock = lambda: float(next(ticks))  # noqa: E731  every reading 1 s after the last
    key = O.auto.Auto(model, tmp_path, background=False)
    size = key._size(_red_patch())
    cache.save_cost(tmp_path, key._key(FAST, size), {"cold_s": 30.0, "speedup": 2.0})
    monkeypatch.setattr(backends, "is_built", lambda *a: False)
    short = O.auto.Auto(model, tmp_path, background=False, clock=clock)
    short.expect(20)
    with torch.inference_mode():
        short(_red_patch())
    assert short.plan == O.PATHS["default"] and short.built == {}
    assert short.describe() == (
        "the default path for 1 image: the default path (19 images left, too few to repay a build: fp32 eager "
        "would take ~53 s, save ~0.50 s per image, repay after 106)"
    )
    long = O.auto.Auto(model, tmp_path, background=False, clock=clock)
    long.expect(200)
    with torch.inference_mode():
        long(_red_patch())
        long(_red_patch())
    assert long.plan == FAST


def test_serve_judges_on_bundled_photos_then_falls_back_when_served_calls_disagree(monkeypatch, tmp_path):
    """At start no request has been seen: the verdict is on the bundled photos at the served size, and says so.
    Then the stand-in starts losing class 2 (a switch the test flips, no timing): the shadow check of sampled
    calls against fp32 gives it up, and later calls run the default path."""
    broken = threading.Event()
    _with(monkeypatch, lambda fp32, x: _without_class_2(fp32)(x) if broken.is_set() else fp32(x))
    fn = O.optimize(Redness().eval(), "auto", cache_dir=tmp_path)
    line = fn.serve((1, 3, 64, 64))
    assert line.startswith("fp32 eager (100.00% agreement with fp32 on 16 bundled photos at 64x64)")
    assert "your images" not in line
    with torch.inference_mode():
        for _ in range(O.auto.SHADOW_EVERY):
            fn(_big_red(64, 64))
        fn.wait()
        assert fn.plan == FAST  # the sampled call agreed
        broken.set()
        with pytest.warns(UserWarning, match="running the default path from now on"):
            for _ in range(O.auto.SHADOW_EVERY):
                fn(_big_red(64, 64))
            fn.wait()
        assert fn.plan == O.PATHS["default"]
        assert int((fn(_big_red(64, 64)).argmax(1) == 2).sum()) == 256
    assert "fp32 eager given up: " in fn.describe() and "over 2 images: the last 2 checked calls" in fn.describe()


def test_cache_lists_entries_and_prunes_the_least_recently_used(tmp_path):
    (tmp_path / "openvino").mkdir()
    for name, size, used in (("a", 300, 1000), ("b", 200, 2000)):
        for suffix in (".xml", ".bin"):
            path = tmp_path / "openvino" / f"{name}{suffix}"
            path.write_bytes(b"x" * size)
            os.utime(path, (used, used))
    cache.save_cost(tmp_path, "k", {"cold_s": 1.0})
    found = cache.entries(tmp_path)
    assert [(e.what, e.name, e.bytes) for e in found[:2]] == [
        ("OpenVINO model", "a.xml", 600),
        ("OpenVINO model", "b.xml", 400),
    ]
    removed = cache.prune(tmp_path, 500)
    assert [e.name for e in removed] == ["a.xml"]
    assert sorted(p.name for p in (tmp_path / "openvino").iterdir()) == ["b.bin", "b.xml"]
    assert cache.prune(tmp_path, 0, keep_since=1500) == []  # b and the costs were used since
    assert len(cache.prune(tmp_path, 0)) == 2 and cache.entries(tmp_path) == []
    assert cache.parse_size("1.5G") == 3 * 2**29 and cache.parse_size("500M") == 500 * 2**20
    with pytest.raises(ValueError, match="not a size"):
        cache.parse_size("lots")


RUN = textwrap.dedent(
    """
    import json, sys
    import torch
    import fcnseg.optimize as O
    sys.path.insert(0, sys.argv[2])
    from test_guard import Redness, _red_patch
    if sys.argv[3] == "forbid":  # the second process must not compile
        def refuse(*args, **kwargs):
            raise AssertionError("compiled again")
        torch._inductor.aoti_compile_and_package = refuse
    O.auto.auto_candidates = lambda device: [O.PATHS["compile"]]
    fn = O.optimize(Redness().eval(), "auto", cache_dir=sys.argv[1], background=False)
    with torch.inference_mode():
        out = fn(_red_patch())
        out = fn(_red_patch())
    labels = int((out.argmax(1) == 2).sum())
    print(json.dumps({"plan": fn.plan.describe(), "costs": fn.costs, "failed": fn.failed, "labels": labels}))
    """
)


@pytest.mark.slow
def test_a_second_process_loads_the_compiled_torch_path(tmp_path):
    """inductor compiles the candidate once (AOTInductor) into the cache; the next process loads the package and
    compiles nothing (its ``aoti_compile_and_package`` raises if called)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}

    def run(which: str) -> dict:
        cmd = [sys.executable, "-c", RUN, str(tmp_path), str(Path(__file__).parent), which]
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])

    first = run("allow")
    assert first["plan"] == "fp32 compile" and first["costs"]["fp32 compile"]["from_cache"] is False
    assert len(list((tmp_path / "aoti").glob("fp32-compile-64x64-b1-*.pt2"))) == 1
    second = run("forbid")
    assert second["plan"] == "fp32 compile" and second["failed"] == []
    assert second["costs"]["fp32 compile"]["from_cache"] is True and second["labels"] == first["labels"] == 16


def test_the_segmenter_prepares_serving_on_bundled_photos(monkeypatch, tmp_path):
    """What ``serve --fast`` prints at start names the bundled photos at the served size, never the user's images;
    without --fast there is nothing to prepare."""
    from fcnseg.predict import Segmenter

    _with(monkeypatch, lambda fp32, x: fp32(x))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    fast = Segmenter(Redness(), None, device="cpu", optimize="auto")
    line = fast.prepare_serving(64)
    assert line.startswith("fp32 eager (100.00% agreement with fp32 on 16 bundled photos at 64x64)")
    assert Segmenter(Redness(), None, device="cpu").prepare_serving(64) is None


def test_cache_command_lists_and_clears(tmp_path, capsys):
    from fcnseg.cli import main

    cache.save_cost(tmp_path, "k", {"cold_s": 1.0})
    (tmp_path / "aoti").mkdir()
    (tmp_path / "aoti" / "fp32-compile-64x64-b1-abc.pt2").write_bytes(b"x" * 2048)
    os.utime(tmp_path / "aoti" / "fp32-compile-64x64-b1-abc.pt2", (1000, 1000))  # used long before the costs
    assert main(["cache", "list", "--cache-dir", str(tmp_path)]) == 0
    listing = capsys.readouterr().out
    assert f"{tmp_path}: 2 entries" in listing and "compiled torch path (AOTInductor)" in listing
    assert "2.0 KB" in listing and "aoti/fp32-compile-64x64-b1-abc.pt2" in listing
    assert main(["cache", "clear", "--to", "1K", "--cache-dir", str(tmp_path)]) == 0
    assert "removed 1 entries, 2.0 KB" in capsys.readouterr().out and (tmp_path / "costs").exists()
    assert main(["cache", "clear", "--cache-dir", str(tmp_path)]) == 0
    assert cache.entries(tmp_path) == []
