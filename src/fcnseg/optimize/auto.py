"""``"auto"`` and the fallbacks: the fastest path that passes the accuracy guard, and eager fp32 when one breaks.

``"auto"`` is never slower than the default path by more than what it decides to spend: it answers every call on
the default path (BN folded, channels-last fp32) from the first one, while a background thread builds the faster
candidates and judges them on the images being segmented; the first that passes takes over from the next call.
Building is skipped when the run is too short to repay it (:meth:`Auto.expect`, an estimate from the build cost
and speed measured before, kept in the cache, else from :data:`PRIOR_BUILD_S`). Each input size class
(:func:`~.guard.size_class`) is judged on its own images. ``serve`` judges at start on the bundled photos at the
served size (:meth:`Auto.serve`) and then checks a sample of the calls against fp32 in the background, falling back
to the default path if their agreement drops.

Every compiled or exported path can fail where eager would not: no C++ compiler for inductor, a kernel error, an
export the runtime rejects. Such a failure, at build or at a call, never ends a run: ``"auto"`` moves on to its
next candidate, and a path that breaks later hands over to the default path for good.
"""

from __future__ import annotations

import atexit
import contextlib
import queue
import threading
import time
import warnings
import weakref
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch import Tensor, nn

from . import backends, cache
from .guard import MIN_IMAGES, MIN_PIXELS, GuardResult, compare_logits, padding, padding_count, size_class
from .plans import PATHS, SpeedPlan, auto_candidates, check_supported

__all__ = ["PRIOR_BUILD_S", "PRIOR_SPEEDUP", "SHADOW_EVERY", "Auto", "WithFallback"]

Forward = Callable[[Tensor], Tensor]
DEFAULT = PATHS["default"]
# Before a build was measured on this machine: seconds to build one candidate from nothing (measured on a loaded
# 2-core AVX2 EPYC, fcn_resnet50 at 520²: OpenVINO convert + compile, NNCF int8, inductor AOT compile) and from the
# cache, and the speed-up over the default path to expect (benchmarks/bench_speed.py)
PRIOR_BUILD_S = {"openvino": 40.0, "onnxruntime": 60.0, "compile": 300.0, "eager": 1.0}
PRIOR_INT8_BUILD_S = 120.0  # on top: calibration and quantization
PRIOR_WARM_S = 10.0
PRIOR_SPEEDUP = {"int8": 2.0, "bf16": 2.0, "fp16": 2.0, "fp32": 1.15}
SHADOW_EVERY = 4  # serve: one call of a fast path in this many is checked against fp32 in the background
SHADOW_WINDOW = 32  # ... over the last this many checked images


def _reason(error: BaseException) -> str:
    return f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"[:200]


class WithFallback:
    """``fn`` until it raises, then the default path (BN folded, channels-last fp32) for the rest of the run."""

    def __init__(self, fn: Forward, model: nn.Module, name: str) -> None:
        self.fn, self.model, self.name = fn, model, name
        self.failure: str | None = None  # why ``fn`` was given up

    def __call__(self, x: Tensor) -> Tensor:
        if self.failure is None:
            try:
                return self.fn(x)
            except Exception as e:  # compile, kernel or runtime error: the eager path does not share it
                self.failure = _reason(e)
                warnings.warn(f"{self.name} failed ({self.failure}); running eager fp32 from now on", stacklevel=2)
                self.fn = backends.build(self.model, DEFAULT)
        return self.fn(x)

    def describe(self) -> str | None:
        return f"fp32 eager ({self.name} failed: {self.failure})" if self.failure else None


class _Serial:
    """One call at a time: an OpenVINO compiled model, or the default path switching its layout, is not safe to call
    from two threads at once (the foreground and the judge)."""

    def __init__(self, fn: Forward) -> None:
        self.fn, self.lock = fn, threading.Lock()

    def __call__(self, x: Tensor) -> Tensor:
        with self.lock, torch.inference_mode():
            return self.fn(x)


@dataclass
class _Size:
    """What ``"auto"`` knows about one input size class: the path it runs, the user's images kept for the guard
    (with the default path's logits for them), and what the guard measured."""

    key: int
    shape: tuple[int, ...]  # the first batch's
    fn: Forward
    plan: SpeedPlan = DEFAULT
    guard: GuardResult | None = None
    samples: list[tuple[Tensor, Tensor]] = field(default_factory=list)
    images: int = 0
    pixels: int = 0
    default_s: float = 0.0  # seconds the default path took per image here
    state: str = "new"  # new -> queued -> done; or skipped
    todo: list[SpeedPlan] = field(default_factory=list)
    note: str = ""  # why nothing is built, or why the path was given up
    shadow: deque[GuardResult] = field(default_factory=lambda: deque(maxlen=SHADOW_WINDOW))

    @property
    def size(self) -> str:
        return f"{self.shape[-1]}x{self.shape[-2]}"


class Auto:
    """The first of :func:`~.plans.auto_candidates` whose logits pass the accuracy guard for this model on the
    images being segmented, per input size class; the default path until one has passed (see the module).

    A verdict is taken on at least :data:`~.guard.MIN_IMAGES` images and :data:`~.guard.MIN_PIXELS` pixels at the
    size the model sees: the user's images of that size class first (those the default path answered while the
    candidates were built), bundled photos cut to that size for the rest (``images``, when given, instead). A
    candidate refused in an earlier run (its verdict is cached, :mod:`.cache`) is not built again; a pass is
    always measured again, on this run's images. ``background=False`` builds and judges in the calling thread, at
    the first call of each size class.
    """

    def __init__(
        self,
        model: nn.Module,
        cache_dir: str | Path | None = None,
        images: Sequence[Tensor] | None = None,
        *,
        background: bool = True,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.model, self.cache_dir, self.images = model, cache_dir, images
        self.background, self.clock = background, clock
        self.device = next(model.parameters()).device
        self.default = backends.build(model, DEFAULT)
        self._reference: _Serial | None = None
        self._reference_lock = threading.Lock()
        self.root, self.digest = cache.cache_root(cache_dir), cache.model_digest(model)
        self.started = time.time() - 1  # cache entries used since then are this run's (file times: 1 s steps)
        self.sizes: dict[int, _Size] = {}
        self.built: dict[SpeedPlan, Forward] = {}
        self.rejected: list[tuple[SpeedPlan, GuardResult]] = []  # faster candidates the guard turned down
        self.failed: list[tuple[SpeedPlan, str]] = []  # candidates that could not be built or run, and why
        self.cache_hits: list[SpeedPlan] = []  # candidates refused by a verdict cached from an earlier run
        self.costs: dict[str, dict] = {}  # per candidate: build seconds, whether from the cache, speed-up
        self.expected: int | None = None
        self.ran: Counter[str] = Counter()  # images per path
        self.last: _Size | None = None
        self.shadow_every = 0
        self._calls = 0
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._jobs: queue.Queue[_Size | None] = queue.Queue()
        self._checks: queue.Queue[tuple[_Size, Tensor, Tensor] | None] = queue.Queue()
        self._threads: list[threading.Thread] = []
        atexit.register(_close, weakref.ref(self))

    def reference(self, x: Tensor) -> Tensor:
        """fp32 for the judge and the shadow check: a copy of the default path of their own (its layout switches
        with the input size), made when first needed."""
        with self._reference_lock:  # the judge and the shadow check may ask at once
            if self._reference is None:
                self._reference = _Serial(backends.build(self.model, DEFAULT))
        return self._reference(x)

    # ------------------------------------------------------------------------------------------ the caller's side

    def expect(self, images: int) -> None:
        """Tell how many images this run will segment, so that a build that cannot repay itself is skipped."""
        self.expected = images

    def __call__(self, x: Tensor) -> Tensor:
        size = self._size(x)
        with self._lock:
            plan, fn = size.plan, size.fn
        if plan == DEFAULT:
            start = self.clock()
            out = fn(x)
            self._keep(size, x, out, self.clock() - start)
        else:
            out = fn(x)
            self._calls += 1
            busy = self._checks.qsize() >= 4  # a busy checker skips a sample rather than hold many
            if self.shadow_every and self._calls % self.shadow_every == 0 and not busy:
                self._checks.put((size, x.detach().clone(), out.detach().clone()))
                self._start_thread(self._check_loop)
        self.ran[self._label(size, plan)] += len(x)
        self.last = size
        if size.state == "new":
            self._start(size)
        return out

    def _label(self, size: _Size, plan: SpeedPlan) -> str:
        failure = getattr(size.fn, "describe", lambda: None)()
        return failure or ("the default path" if plan == DEFAULT else plan.describe())

    def _size(self, x: Tensor) -> _Size:
        key = size_class(x.shape)
        if key not in self.sizes:
            self.sizes[key] = _Size(key, tuple(x.shape), self.default)
        return self.sizes[key]

    def _keep(self, size: _Size, x: Tensor, out: Tensor, seconds: float) -> None:
        """Keep the user's batch and the default path's logits for the guard, until the minimums are met."""
        size.default_s = seconds / len(x) if not size.images else size.default_s
        short = size.images < MIN_IMAGES or size.pixels < MIN_PIXELS
        if short and tuple(x.shape) == size.shape:  # one batch shape per class, so that no candidate compiles twice
            with self._lock:
                size.samples.append((x.detach().clone(), out.detach().clone()))
                size.images += len(x)
                size.pixels += x[0, 0].numel() * len(x)

    # ------------------------------------------------------------------------------------------ deciding to build

    def _candidates(self) -> list[SpeedPlan]:
        """Auto's candidates but the default path (which runs already) and any that failed to build or run."""
        broken = {plan for plan, _ in self.failed}
        return [plan for plan in auto_candidates(self.device) if plan != DEFAULT and plan not in broken]

    def _key(self, plan: SpeedPlan, size: _Size) -> str:
        return cache.build_key(self.digest, plan, ("size class", size.key))

    def _bundled_key(self, plan: SpeedPlan, size: _Size, count: int) -> str:
        return cache.build_key(self.digest, plan, ("bundled", count, *size.shape))

    def estimate(self, plan: SpeedPlan, size: _Size) -> tuple[float, float, bool]:
        """(seconds to build and judge ``plan``, seconds it saves per image, whether its build is cached): measured
        in earlier runs where the cache has it, else the priors above."""
        record = cache.load_cost(self.root, self._key(plan, size))
        warm = backends.is_built(self.model, plan, self.cache_dir, size.shape)
        prior = PRIOR_WARM_S if warm else PRIOR_BUILD_S[plan.backend] + PRIOR_INT8_BUILD_S * (plan.precision == "int8")
        build = record.get("warm_s" if warm else "cold_s", prior)
        speedup = record.get("speedup", PRIOR_SPEEDUP[plan.precision])
        pad = padding_count(size.shape, size.images, size.pixels)
        known = pad and cache.load_guard(self.root, self._bundled_key(plan, size, pad)) is not None
        # your images: the candidate alone (fp32's labels are there); the padding, unless judged before: fp32 too
        judge = size.default_s * (size.images / speedup + (1 + 1 / speedup) * pad * (not known))
        return build + judge, size.default_s * (1 - 1 / speedup), warm

    def _start(self, size: _Size) -> None:
        todo, skipped = [], []
        for plan in self._candidates():
            verdict = cache.load_guard(self.root, self._key(plan, size))
            if verdict is not None and not verdict.passed and self.images is None:
                self.cache_hits.append(plan)
                self.rejected.append((plan, verdict))
                continue
            if self.expected is not None:
                cost, saving, warm = self.estimate(plan, size)
                if cost >= (self.expected - sum(self.ran.values())) * saving:
                    skipped.append((cost / max(saving, 1e-9), cost, saving, warm, plan))
                    continue
            todo.append(plan)
        size.todo = todo
        if not todo:
            size.state = "skipped"
            if skipped:  # the one closest to repaying
                repays, cost, saving, warm, plan = min(skipped, key=lambda s: s[0])
                left = self.expected - sum(self.ran.values())
                size.note = (
                    f"{left} image{'s' * (left != 1)} left, too few to repay a build: {plan.describe()} would take "
                    f"~{cost:.0f} s{' from the cache' * warm}, save ~{saving:.2f} s per image, repay after "
                    f"{repays:.0f}"
                )
            return
        size.state = "queued"
        if not self.background:
            self._judge(size)
            return
        self._jobs.put(size)
        self._start_thread(self._work)

    def _start_thread(self, loop: Callable[[], None]) -> None:
        if not any(t.name == loop.__name__ and t.is_alive() for t in self._threads):
            thread = threading.Thread(target=loop, name=loop.__name__, daemon=True)
            self._threads.append(thread)
            thread.start()

    # ------------------------------------------------------------------------------------------ the judge

    def _work(self) -> None:
        while (size := self._jobs.get()) is not None:
            try:
                self._judge(size)
            finally:
                self._jobs.task_done()
        self._jobs.task_done()

    def _judge(self, size: _Size) -> None:
        """Build ``size.todo`` in order and switch ``size`` to the first that passes the guard."""
        for plan in size.todo:
            if self._closed.is_set():
                return
            fn = self._build(plan, size)
            if fn is None:
                continue
            try:
                guard, speedup = self._verdict(plan, fn, size)
            except Exception as e:  # its first call compiles: no C++ compiler, a kernel error
                self.built.pop(plan, None)
                self._fail(plan, e)
                continue
            cache.save_guard(self.root, self._key(plan, size), guard)
            self._record(plan, size, speedup=speedup)
            if guard.passed:
                with self._lock:
                    size.plan, size.guard = plan, guard
                    size.fn = WithFallback(fn, self.model, plan.describe())
                break
            self.rejected.append((plan, guard))
        size.state = "done"

    def _build(self, plan: SpeedPlan, size: _Size) -> Forward | None:
        if plan in self.built:
            return self.built[plan]
        try:
            check_supported(plan, self.device)
            warm = backends.is_built(self.model, plan, self.cache_dir, size.shape)
            start = self.clock()
            fn = _Serial(backends.build(self.model, plan, cache_dir=self.cache_dir))
            x = size.samples[0][0] if size.samples else padding(size.shape, 0, 0)[0]
            fn(x)  # the first call: compiles, or loads what was compiled before
            seconds = self.clock() - start
        except Exception as e:  # a missing optional dependency, no C++ compiler, a kernel error
            self._fail(plan, e)
            return None
        self._record(plan, size, **{"warm_s" if warm else "cold_s": seconds})
        self.costs[plan.describe()] = {"seconds": round(seconds, 1), "from_cache": warm}
        self.built[plan] = fn
        with contextlib.suppress(OSError):  # the size cap: least recently used first, never what this run uses
            cache.prune(self.root, cache.max_bytes(), keep_since=self.started)
        return fn

    def _verdict(self, plan: SpeedPlan, fn: Forward, size: _Size) -> tuple[GuardResult, float]:
        """The guard on the user's images of ``size`` and, up to the minimums, bundled photos at their size; and the
        candidate's speed-up over the default path, timed on the last image judged."""
        with self._lock:
            samples, images, pixels = list(size.samples), size.images, size.pixels
        results = [compare_logits(fn(x), want) for x, want in samples]
        if self.images is not None:
            extra, what = list(self.images), f"{sum(map(len, self.images))} guard images"
        else:
            extra = padding(size.shape, images, pixels)
            what = f"{sum(map(len, extra))} bundled photos at {size.size}"
        if extra:
            # the bundled photos are the same in every run: their verdict is kept with the build (the user's
            # images are judged afresh every run)
            key = self._bundled_key(plan, size, sum(map(len, extra))) if self.images is None else None
            bundled = cache.load_guard(self.root, key) if key else None
            if bundled is None:
                bundled = sum(
                    (compare_logits(fn(x), self.reference(x)) for x in extra[1:]),
                    compare_logits(fn(extra[0]), self.reference(extra[0])),
                )
                if key:
                    cache.save_guard(self.root, key, bundled)
            results.append(bundled)
        last = samples[-1][0] if samples else extra[-1]
        start = self.clock()
        self.reference(last)  # on one of the user's images where there is one: no extra forward on the padding
        middle = self.clock()
        fn(last)
        speedup = (middle - start) / max(self.clock() - middle, 1e-9)
        parts = [f"{images} of your images at {size.size}"] * bool(samples) + [what] * bool(extra)
        pooled = sum(results[1:], results[0])
        return GuardResult(**{**pooled.to_json(), "per_image": pooled.per_image, "vanished": pooled.vanished,
                              "on": " + ".join(parts)}), speedup  # fmt: skip

    def _record(self, plan: SpeedPlan, size: _Size, **fields: float) -> None:
        with contextlib.suppress(OSError):
            cache.save_cost(self.root, self._key(plan, size), fields)

    def _fail(self, plan: SpeedPlan, error: Exception) -> None:
        self.failed.append((plan, _reason(error)))
        warnings.warn(f"--fast: {plan.describe()} failed ({_reason(error)}); trying the next path", stacklevel=3)

    # ------------------------------------------------------------------------------------------ serving

    def serve(self, shape: Sequence[int]) -> str:
        """Judge now, on the bundled photos at ``shape`` (the served size; no request has been seen), and from then
        on check one call in :data:`SHADOW_EVERY` of a fast path against fp32 in the background. Returns the line
        saying what was measured."""
        size = self._size(torch.empty(tuple(shape), device="meta"))
        size.state = "queued"
        size.todo = self._candidates()
        self._judge(size)
        self.shadow_every = SHADOW_EVERY
        return self.describe_size(size)

    def _check_loop(self) -> None:
        while (item := self._checks.get()) is not None:
            try:
                self._check(*item)
            finally:
                self._checks.task_done()
        self._checks.task_done()

    def _check(self, size: _Size, x: Tensor, out: Tensor) -> None:
        """Compare one served call with fp32; give the path up for this size class when the last checked calls no
        longer pass the guard's rule."""
        size.shadow.append(compare_logits(out, self.reference(x)))
        pooled = replace(sum(list(size.shadow)[1:], size.shadow[0]), on=f"the last {len(size.shadow)} checked calls")
        if not pooled.passed and size.plan != DEFAULT:
            with self._lock:
                given_up, size.plan, size.fn = size.plan, DEFAULT, self.default
            size.note = f"{given_up.describe()} given up: {pooled.summary()}"
            warnings.warn(f"--fast: {size.note}; running the default path from now on", stacklevel=2)

    # ------------------------------------------------------------------------------------------ reporting

    @property
    def plan(self) -> SpeedPlan | None:
        """The path of the size class called last (``None`` before the first call)."""
        return None if self.last is None else self.last.plan

    @property
    def guard(self) -> GuardResult | None:
        return None if self.last is None else self.last.guard

    def wait(self) -> None:
        """Until every queued build, verdict and shadow check is done (tests, benchmarks)."""
        self._jobs.join()
        self._checks.join()

    def close(self) -> None:
        """Stop the background work after the step in progress (a build under way is finished, not torn)."""
        self._closed.set()
        for thread in self._threads:
            (self._jobs if thread.name == "_work" else self._checks).put(None)
        for thread in self._threads:
            thread.join()
        self._threads.clear()

    def describe_size(self, size: _Size) -> str:
        if size.plan == DEFAULT:
            line = "the default path"
            line += f" ({size.note})" if size.note else " (no faster path passed the guard)" * (size.state == "done")
            return line
        line = size.fn.describe() or size.plan.describe()
        if size.guard is not None:
            line += f" ({size.guard.agreement:.2%} agreement with fp32 on {size.guard.on})"
        if size.shadow:
            pooled = sum(list(size.shadow)[1:], size.shadow[0])
            line += f"; {len(size.shadow)} sampled calls checked since: {pooled.agreement:.2%}"
        return line

    def describe(self) -> str | None:
        """One short line for people: which path ran how many images, and what its guard measured on what
        (``None`` before the first call). :meth:`details` has the rest."""
        if self.last is None:
            return None
        ran = ", ".join(f"{label} for {n} image{'s' * (n != 1)}" for label, n in self.ran.items())
        return f"{ran}: " + "; ".join(self.describe_size(s) for s in self.sizes.values())

    def details(self) -> list[str]:
        """What each candidate did: refused by the guard (on what), failed (why), built (seconds, from the cache)."""
        lines = [f"{p.describe()} refused by the guard: {g.summary()}" for p, g in self.rejected]
        lines += [f"{p.describe()} failed: {reason}" for p, reason in self.failed]
        for name, cost in self.costs.items():
            lines.append(f"{name}: ready in {cost['seconds']} s{' from the cache' * cost['from_cache']}")
        return lines


def _close(ref: weakref.ref) -> None:
    auto = ref()
    if auto is not None:
        auto.close()
