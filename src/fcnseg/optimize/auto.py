"""``"auto"`` and the fallbacks: the fastest path that passes the accuracy guard, and eager fp32 when one breaks.

Every compiled or exported path can fail where eager would not: no C++ compiler for inductor, a kernel error, an
export the runtime rejects. Such a failure, at build or at a call, never ends a run: ``"auto"`` moves on to its
next candidate, and a path that breaks later (a new image size recompiles) hands over to eager fp32 for good.
Each says so, in a warning when it happens and in ``describe()``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

from ..models.logits import OutLogits
from . import backends
from .guard import GuardResult, accuracy_guard, photos_shaped
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
    """The first of :func:`~.plans.auto_candidates` whose logits pass :func:`~.guard.accuracy_guard` for this model.

    The choice waits for the first batch: the guard then runs on photos cropped to that batch's shape, so a
    static-shape compile happens once, for the shape that is actually used. A candidate that fails to build or
    to run is skipped like one that fails the guard; the last candidate (fp32) is not guarded, and if it breaks
    too, eager fp32 runs. ``plan`` tells what was chosen.
    """

    def __init__(self, model: nn.Module, cache_dir: str | Path | None, images) -> None:
        self.model, self.cache_dir, self.images = model, cache_dir, images
        self.device = next(model.parameters()).device
        self.plan: SpeedPlan | None = None
        self.guard: GuardResult | None = None
        self.rejected: list[tuple[SpeedPlan, GuardResult]] = []  # faster candidates the guard turned down
        self.failed: list[tuple[SpeedPlan, str]] = []  # candidates that could not be built or run, and why
        self._fn: WithFallback | None = None

    def _choose(self, shape: torch.Size) -> None:
        *fast, safe = auto_candidates(self.device)
        images = self.images if self.images is not None else photos_shaped(shape, self.device)
        reference = OutLogits(self.model)
        for plan in fast:
            try:
                check_supported(plan, self.device)
                fn = backends.build(self.model, plan, cache_dir=self.cache_dir)
                guard = accuracy_guard(fn, reference, images)  # the candidate's first call
            except Exception as e:  # a missing optional dependency, no C++ compiler, a kernel error
                self._fail(plan, e)
                continue
            if guard.passed:
                self.plan, self.guard, self._fn = plan, guard, WithFallback(fn, self.model, plan.describe())
                return
            self.rejected.append((plan, guard))
        self.plan = safe
        try:
            fn = backends.build(self.model, safe, cache_dir=self.cache_dir)
        except Exception as e:
            self._fail(safe, e)
            self.plan, fn = PATHS["default"], backends.build(self.model, PATHS["default"])
        self._fn = WithFallback(fn, self.model, safe.describe())

    def _fail(self, plan: SpeedPlan, error: Exception) -> None:
        self.failed.append((plan, _reason(error)))
        warnings.warn(f"--fast: {plan.describe()} failed ({_reason(error)}); trying the next path", stacklevel=3)

    def __call__(self, x: Tensor) -> Tensor:
        if self._fn is None:
            self._choose(x.shape)
        return self._fn(x)  # type: ignore[misc]

    def describe(self) -> str | None:
        """One line for people: the path chosen and why faster ones were not (``None`` before the first batch)."""
        if self.plan is None or self._fn is None:
            return None
        line = self._fn.describe() or self.plan.describe()
        if self.guard and not self._fn.failure:
            line += f" ({self.guard.agreement:.2%} agreement with fp32 eager)"
        for plan, guard in self.rejected:
            line += f"; {plan.describe()}: {guard.agreement:.2%}, below the {guard.threshold:.1%} guard"
        for plan, reason in self.failed:
            line += f"; {plan.describe()} failed: {reason}"
        return line
