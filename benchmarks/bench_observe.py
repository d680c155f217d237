"""What tracing and metrics cost: bench_sqlite.py with and without ``--observe``.

Each measurement is one ``bench_sqlite.py --json --reps 1`` process (the
OpenTelemetry providers are global to a process, so "off" and "on" cannot share
one), alternating off, on, off, on, ... so that load from elsewhere on the
machine falls on both. Medians over the pairs are printed per case, with the
raw SQLite commit probes each process measured.

    .venv/bin/python benchmarks/bench_observe.py              # 3 pairs, n=1000
    .venv/bin/python benchmarks/bench_observe.py --pairs 5 --n 2000
    .venv/bin/python benchmarks/bench_observe.py --sample 0.1   # 10 % of traces recorded
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
TARGET_COST = 0.10  # tracing and metrics may cost at most 10 % of throughput


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def measure(observe: bool, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, str(HERE / "bench_sqlite.py"), "--json", "--reps", "1"]
    cmd += ["--n", str(args.n), "--synchronous", args.synchronous, "--steps", args.steps]
    if observe:
        cmd += ["--observe", "--sample", str(args.sample)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    report: dict[str, Any] = json.loads(out)
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pairs", type=int, default=3, help="off/on pairs; medians (3)")
    p.add_argument("--n", type=int, default=1000, help="workflows per case (1000)")
    p.add_argument("--synchronous", default="FULL", choices=("FULL", "NORMAL"))
    p.add_argument("--sample", type=float, default=1.0, help="fraction of traces recorded (1.0)")
    p.add_argument("--steps", default="both", choices=("async", "sync", "both"))
    args = p.parse_args(argv)
    runs: dict[bool, list[dict[str, Any]]] = {False: [], True: []}
    for i in range(args.pairs):
        for observe in (False, True):
            report = measure(observe, args)
            runs[observe].append(report)
            probes = ", ".join(f"{r:,.0f}" for r in report["raw_probes"])
            rates = ", ".join(
                f"{r['steps']}/{r['mode']} {r['wf_per_s']:,.0f}" for r in report["summary"]
            )
            label = "on " if observe else "off"
            print(f"pair {i + 1} observe {label}: {rates} wf/s; raw commit probes {probes}/s")
    print()
    print(f"{'case':<22} {'off wf/s':>9} {'on wf/s':>9} {'cost':>7}  verdict (< 10 %)")
    for j, row in enumerate(runs[False][0]["summary"]):
        case = f"{row['steps']}/{row['mode']}"
        off = _median([r["summary"][j]["wf_per_s"] for r in runs[False]])
        on = _median([r["summary"][j]["wf_per_s"] for r in runs[True]])
        cost = 1 - on / off
        verdict = "PASS" if cost < TARGET_COST else "FAIL"
        print(f"{case:<22} {off:>9,.0f} {on:>9,.0f} {100 * cost:>6.1f}%  {verdict}")
    raw = {k: _median([r["raw_commits_per_s"] for r in v]) for k, v in runs.items()}
    print(f"raw SQLite commits/s (median of the probes' medians): off {raw[False]:,.0f}, "
          f"on {raw[True]:,.0f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
