"""Start-up time of the ``fcnseg`` command against importing torch, measured in one run.

Each case is a fresh interpreter, run ``--repeats`` times, the cases interleaved round-robin so that a change in
the machine's load hits them all alike; the table shows the median wall time and its ratio to
``python -c "import torch"`` (the goal for ``fcnseg --help``: at most 0.35x). ``python -c pass`` is the floor:
the interpreter and site-packages alone.

    PYTHONPATH=src python benchmarks/bench_startup.py --repeats 7
    # also the same commands from another source tree (e.g. an older commit: git archive e708fe9 src | tar -x -C old)
    PYTHONPATH=src python benchmarks/bench_startup.py --baseline-src old/src

Prints a table and writes ``benchmarks/results/bench_startup.json`` (with the CPU kind and the load average).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _machine import cpu_name

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"

COMMANDS = [["--help"], ["segment", "--help"], ["train", "--help"], ["models"]]


def seconds(argv: list[str], src: Path) -> float:
    """Wall time of one fresh interpreter running ``argv`` with ``src`` first on its path."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(src), os.environ.get("PYTHONPATH", "")])}
    start = time.perf_counter()
    subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=7, help="runs per case (default: 7)")
    parser.add_argument("--baseline-src", type=Path, help="also run the fcnseg commands from this source tree")
    parser.add_argument("--output", "-o", type=Path, default=ROOT / "benchmarks" / "results" / "bench_startup.json")
    args = parser.parse_args()

    py = sys.executable
    cases = {
        'python -c "pass"': ([py, "-c", "pass"], SRC),
        'python -c "import torch"': ([py, "-c", "import torch"], SRC),
    }
    for cmd in COMMANDS:
        cases["fcnseg " + " ".join(cmd)] = ([py, "-m", "fcnseg", *cmd], SRC)
        if args.baseline_src is not None:
            cases["fcnseg " + " ".join(cmd) + " (baseline)"] = ([py, "-m", "fcnseg", *cmd], args.baseline_src.resolve())
    load_before = os.getloadavg()
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.repeats):  # round-robin: a load change hits every case alike
        for name, (argv, src) in cases.items():
            times[name].append(seconds(argv, src))
    load_after = os.getloadavg()

    torch_s = statistics.median(times['python -c "import torch"'])
    rows = [
        {"case": name, "median_s": round(statistics.median(t), 3), "min_s": round(min(t), 3),
         "vs_import_torch": round(statistics.median(t) / torch_s, 3)}
        for name, t in times.items()
    ]  # fmt: skip
    load = f"load average {load_before[0]:.1f} before, {load_after[0]:.1f} after"
    print(f"CPU: {cpu_name()}, {os.cpu_count()} cores; {load}")
    print(f"{'case':44} {'median s':>9} {'min s':>7} {'x import torch':>15}")
    for r in rows:
        print(f"{r['case']:44} {r['median_s']:>9.3f} {r['min_s']:>7.3f} {r['vs_import_torch']:>15.3f}")
    result = {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "load_average_before": load_before,
        "load_average_after": load_after,
        "repeats": args.repeats,
        "rows": rows,
        "help_vs_import_torch": next(r["vs_import_torch"] for r in rows if r["case"] == "fcnseg --help"),
        "goal": 0.35,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
