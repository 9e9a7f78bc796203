"""What this CPU accelerates, read once from ``/proc/cpuinfo`` (or oneDNN's own check where there is none).

bf16 needs AVX512-BF16 or AMX (otherwise it is emulated and slower than fp32), fp16 on a CPU needs AVX512-FP16 or
AMX-FP16, and int8 needs VNNI or AMX-INT8 for oneDNN's quantized convolutions to beat fp32. An AVX2-only CPU has
none of these: fp32 (eager, compiled or ONNX Runtime) is all it is offered.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import torch

__all__ = ["CpuCapabilities", "cpu_capabilities", "cpu_kind"]


@dataclass(frozen=True)
class CpuCapabilities:
    """What this CPU accelerates: from ``/proc/cpuinfo`` flags and ``torch.backends.cpu.get_cpu_capability()``."""

    name: str
    isa: str  # the kernels PyTorch dispatched to: "AVX512", "AVX2", "DEFAULT", ...
    flags: frozenset[str] = field(repr=False)

    @property
    def amx(self) -> bool:
        return {"amx_tile", "amx_bf16"} <= self.flags

    @property
    def bf16(self) -> bool:
        """Native bf16 dot products (AVX512-BF16 or AMX); without them bf16 is emulated and slower than fp32."""
        return "avx512_bf16" in self.flags or self.amx

    @property
    def fp16(self) -> bool:
        return "avx512_fp16" in self.flags or "amx_fp16" in self.flags

    @property
    def int8(self) -> bool:
        """Native int8 dot products (VNNI or AMX-INT8), which oneDNN's quantized convolutions need to be fast."""
        return bool({"avx512_vnni", "avx_vnni", "amx_int8"} & self.flags)


@cache
def cpu_capabilities() -> CpuCapabilities:
    name, flags = "unknown", frozenset()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and name == "unknown":
                name = value.strip()
            elif key.strip() == "flags":
                flags = frozenset(value.split())
                break
    if not flags and torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported():
        flags = frozenset({"avx512_bf16"})  # no cpuinfo (macOS, Windows): trust oneDNN's own check
    return CpuCapabilities(name=name, isa=torch.backends.cpu.get_cpu_capability(), flags=flags)


def cpu_kind(caps: CpuCapabilities) -> str:
    """The CPU class the benchmarks and the README name with every number: AMX, AVX-512 (+BF16/VNNI) or AVX2."""
    if caps.amx:
        return "AMX"
    if "avx512f" in caps.flags:
        extras = [name for flag, name in (("avx512_bf16", "BF16"), ("avx512_vnni", "VNNI")) if flag in caps.flags]
        return "AVX-512" + (f" ({', '.join(extras)})" if extras else "")
    return "AVX2-only" if "avx2" in caps.flags else "pre-AVX2"
