"""``"auto"`` and the fallbacks: the fastest path that passes the accuracy guard, and eager fp32 when one breaks.

Every compiled or exported path can fail where eager would not: no C++ compiler for inductor, a kernel error, an
export the runtime rejects. Such a failure, at build or at a call, never ends a run: ``"auto"`` moves on to its
next candidate, and a path that breaks later (a new image size recompiles) hands over to eager fp32 for good.
Each says so, in a warning when it happens and in ``describe()``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from ..models.logits import OutLogits
from . import backends, cache
from .guard import GuardResult, accuracy_guard, compare_logits, photos_shaped
from .plans import PATHS, SpeedPlan, auto_candidates, check_supported

__all__ = ["Auto", "WithFallback"]

Forward = Callable[[Tensor], Tensor]


def _reason(error: BaseException) -> str:
    return f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"[:200]


class WithFallback:
    """``fn`` until it raises, then eager fp32 (the default path) for the rest of the run, with a warning."""

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
                self.fn = backends.build(self.model, PATHS["default"])
        return self.fn(x)

    def describe(self) -> str | None:
        return f"fp32 eager ({self.name} failed: {self.failure})" if self.failure else None


class Auto:
    """The first of :func:`~.plans.auto_candidates` whose logits pass the accuracy guard for this model on the
    images being segmented.

    The choice waits for the first batch. Each candidate is judged on that batch (the user's own images, against
    fp32 eager's logits for them) together with the bundled photos cropped to the batch's shape (or
    ``images``, when given); the bundled photos' verdict is cached with the build (:mod:`.cache`), so a later run
    builds no candidate that failed it and compiles nothing it compiled before. A candidate that fails to build or
    to run is skipped like one that fails the guard; the last candidate (fp32) is not guarded, and if it breaks
    too, eager fp32 runs. ``plan`` tells what was chosen, ``guard`` what it measured, and on what.
    """

    def __init__(self, model: nn.Module, cache_dir: str | Path | None, images: Sequence[Tensor] | None) -> None:
        self.model, self.cache_dir, self.images = model, cache_dir, images
        self.device = next(model.parameters()).device
        self.plan: SpeedPlan | None = None
        self.guard: GuardResult | None = None
        self.rejected: list[tuple[SpeedPlan, GuardResult]] = []  # faster candidates the guard turned down
        self.failed: list[tuple[SpeedPlan, str]] = []  # candidates that could not be built or run, and why
        self.cache_hits: list[SpeedPlan] = []  # candidates whose bundled-photo verdict came from the cache
        self._fn: WithFallback | None = None

    def _choose(self, x: Tensor) -> Tensor:
        """Pick the path on the first batch ``x``; return its logits for ``x`` (the guard already computed them)."""
        *fast, safe = auto_candidates(self.device)
        reference = OutLogits(self.model)
        root, digest = cache.cache_root(self.cache_dir), cache.model_digest(self.model)
        with torch.inference_mode():
            want = reference(x)
        yours = f"{len(x)} of your images at {x.shape[-1]}x{x.shape[-2]}"
        for plan in fast:
            key = cache.build_key(digest, plan, tuple(x.shape))
            bundled = cache.load_guard(root, key) if self.images is None else None
            if bundled is not None:
                self.cache_hits.append(plan)
                if not bundled.passed:  # failed on the bundled photos before: not even built
                    self.rejected.append((plan, bundled))
                    continue
            try:
                check_supported(plan, self.device)
                fn = backends.build(self.model, plan, cache_dir=self.cache_dir)
                with torch.inference_mode():
                    out = fn(x)  # the candidate's first call: compiles
                guard = compare_logits(out, want, on=yours)
                if bundled is None:
                    photos = self.images if self.images is not None else photos_shaped(x.shape, self.device)
                    what = "guard images" if self.images is not None else "bundled photos"
                    bundled = accuracy_guard(fn, reference, photos, on=f"{sum(map(len, photos))} {what}")
                    if self.images is None:
                        cache.save_guard(root, key, bundled)
            except Exception as e:  # a missing optional dependency, no C++ compiler, a kernel error
                self._fail(plan, e)
                continue
            guard = guard + bundled
            if guard.passed:
                self.plan, self.guard, self._fn = plan, guard, WithFallback(fn, self.model, plan.describe())
                return out
            self.rejected.append((plan, guard))
        self.plan = safe
        try:
            fn = backends.build(self.model, safe, cache_dir=self.cache_dir)
        except Exception as e:
            self._fail(safe, e)
            self.plan, fn = PATHS["default"], backends.build(self.model, PATHS["default"])
        self._fn = WithFallback(fn, self.model, safe.describe())
        return self._fn(x)

    def _fail(self, plan: SpeedPlan, error: Exception) -> None:
        self.failed.append((plan, _reason(error)))
        warnings.warn(f"--fast: {plan.describe()} failed ({_reason(error)}); trying the next path", stacklevel=3)

    def __call__(self, x: Tensor) -> Tensor:
        if self._fn is None:
            return self._choose(x)
        return self._fn(x)

    def describe(self) -> str | None:
        """One line for people: the path chosen, what its guard measured and on what, and why faster ones were not
        chosen (``None`` before the first batch)."""
        if self.plan is None or self._fn is None:
            return None
        line = self._fn.describe() or self.plan.describe()
        if self.guard and not self._fn.failure:
            line += f" ({self.guard.summary()} with fp32 eager)"
        for plan, guard in self.rejected:
            line += f"; {plan.describe()} refused by the guard: {guard.summary()}"
        for plan, reason in self.failed:
            line += f"; {plan.describe()} failed: {reason}"
        return line
