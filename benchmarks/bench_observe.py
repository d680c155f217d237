"""What tracing and metrics cost: bench_sqlite.py without the OpenTelemetry SDK,
with metrics only, with tracing and metrics recording every trace, and with
tracing and metrics recording 10 % of traces, side by side.

Each measurement is one ``bench_sqlite.py --json --reps 1`` process (the
OpenTelemetry providers are global to a process, so the configurations cannot
share one). Each round runs every configuration once, in turn, so that load
from elsewhere on the machine falls on all of them; medians over the rounds
are printed per case, with each configuration's cost against the baseline:
in throughput, and in CPU time per workflow (the steadier figure on a shared
machine), beside the raw SQLite commit probes each process measured.

    .venv/bin/python benchmarks/bench_observe.py                  # 3 rounds, n=500, trivial steps
    .venv/bin/python benchmarks/bench_observe.py --step-ms 1      # steps doing 1 ms of work
    .venv/bin/python benchmarks/bench_observe.py --rounds 5 --sample 0.05
    .venv/bin/python benchmarks/bench_observe.py --instructions   # needs valgrind

``--instructions`` counts CPU instructions instead of timing: each
configuration runs one concurrent case (``observe_case.py``) under valgrind's
callgrind twice, with ``--n`` and with three times as many workflows, and the
difference divided by the extra workflows is the instructions one workflow
costs, start-up and warm-up excluded. Counts do not move with the load on the
machine; they do not see memory stalls (cache misses), so a garbage
collector's work weighs less in them than in CPU time.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
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


def configurations(sample: float) -> list[tuple[str, str, float]]:
    """(label, --observe, --sample) of each configuration; the first is the baseline."""
    return [
        ("no SDK", "none", 1.0),
        ("metrics", "metrics", 1.0),
        ("+traces 100%", "all", 1.0),  # metrics and every trace recorded
        (f"+traces {100 * sample:g}%", "all", sample),  # metrics and a sample of traces
    ]


def measure(observe: str, sample: float, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, str(HERE / "bench_sqlite.py"), "--json", "--reps", "1"]
    cmd += ["--n", str(args.n), "--synchronous", args.synchronous, "--steps", args.steps]
    cmd += ["--mode", args.mode, "--step-ms", str(args.step_ms)]
    cmd += ["--observe", observe, "--sample", str(sample)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    report: dict[str, Any] = json.loads(out)
    return report


def instructions(observe: str, sample: float, n: int, steps: str) -> int:
    """CPU instructions of one ``observe_case.py`` process under callgrind."""
    cmd = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"]
    cmd += [sys.executable, str(HERE / "observe_case.py"), observe, str(sample), str(n), steps]
    err = subprocess.run(cmd, capture_output=True, text=True, check=True).stderr
    found = re.search(r"Collected : (\d+)", err)
    if found is None:
        raise RuntimeError(f"no instruction count from callgrind:\n{err[-2000:]}")
    return int(found.group(1))


def count_instructions(args: argparse.Namespace, configs: list[tuple[str, str, float]]) -> int:
    if shutil.which("valgrind") is None:
        print("--instructions needs valgrind (apt-get install valgrind)", file=sys.stderr)
        return 2
    steps = "sync" if args.steps == "sync" else "async"
    small, large = args.n, 3 * args.n
    raw = raw_probe(args.synchronous)
    print(
        f"bench_observe --instructions: {steps} steps, 100 in flight, "
        f"(instructions at n={large} - at n={small}) / {large - small} workflows; "
        f"raw SQLite commits/s before: {raw:,.0f}"
    )
    base = 0.0
    print(f"{'configuration':<14} {'instructions/wf':>16} {'cost':>7}")
    for label, observe, sample in configs:
        at_large = instructions(observe, sample, large, steps)
        per = (at_large - instructions(observe, sample, small, steps)) / (large - small)
        base = base or per
        cost = "" if per == base else f"{100 * (per / base - 1):6.1f}%"
        print(f"{label:<14} {per:>16,.0f} {cost:>7}", flush=True)
    print(f"raw SQLite commits/s after: {raw_probe(args.synchronous):,.0f}")
    return 0


def raw_probe(synchronous: str) -> float:
    sys.path.insert(0, str(HERE))
    from _common import raw_commit_rate

    return raw_commit_rate(None, synchronous)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3, help="rounds of all configurations (3)")
    p.add_argument("--n", type=int, default=500, help="workflows per case (500)")
    p.add_argument("--synchronous", default="FULL", choices=("FULL", "NORMAL"))
    p.add_argument("--sample", type=float, default=0.1, help="the sampled configuration (0.1)")
    p.add_argument("--steps", default="both", choices=("async", "sync", "both"))
    p.add_argument("--mode", default="both", choices=("sequential", "concurrent", "both"))
    p.add_argument(
        "--step-ms", type=float, default=0.0, help="work per step (see bench_sqlite.py; 0)"
    )
    p.add_argument(
        "--instructions",
        action="store_true",
        help="count CPU instructions per workflow under callgrind instead of timing",
    )
    args = p.parse_args(argv)
    configs = configurations(args.sample)
    if args.instructions:
        return count_instructions(args, configs)
    runs: dict[str, list[dict[str, Any]]] = {label: [] for label, _, _ in configs}
    work = f"{args.step_ms:g} ms of work per step" if args.step_ms else "trivial steps"
    print(
        f"bench_observe: {work}, n={args.n}, synchronous={args.synchronous}, "
        f"{args.rounds} rounds of {len(configs)} processes"
    )
    for i in range(args.rounds):
        for label, observe, sample in configs:
            report = measure(observe, sample, args)
            runs[label].append(report)
            probes = ", ".join(f"{r:,.0f}" for r in report["raw_probes"])
            rates = ", ".join(
                f"{r['steps']}/{r['mode']} {r['wf_per_s']:,.0f}" for r in report["summary"]
            )
            print(f"round {i + 1} {label:<14} {rates} wf/s; raw commit probes {probes}/s")
    print()
    base = configs[0][0]
    print(
        f"{'case':<18} {'configuration':<14} {'wf/s':>7} {'cost':>7} {'CPU ms/wf':>9} "
        f"{'CPU cost':>8} {'raw commits/s':>13}  verdict (< 10 % of throughput)"
    )
    for j, row in enumerate(runs[base][0]["summary"]):
        case = f"{row['steps']}/{row['mode']}"
        rate0 = _median([r["summary"][j]["wf_per_s"] for r in runs[base]])
        cpu0 = _median([r["summary"][j]["cpu_ms_per_wf"] for r in runs[base]])
        for label, _, _ in configs:
            rate = _median([r["summary"][j]["wf_per_s"] for r in runs[label]])
            cpu = _median([r["summary"][j]["cpu_ms_per_wf"] for r in runs[label]])
            raw = _median([r["raw_commits_per_s"] for r in runs[label]])
            if label == base:
                cost = cpu_cost = verdict = ""
            else:
                c = 1 - rate / rate0
                cost, cpu_cost = f"{100 * c:6.1f}%", f"{100 * (cpu / cpu0 - 1):7.1f}%"
                verdict = "PASS" if c < TARGET_COST else "FAIL"
            print(
                f"{case:<18} {label:<14} {rate:>7,.0f} {cost:>7} {cpu:>9.3f} {cpu_cost:>8} "
                f"{raw:>13,.0f}  {verdict}"
            )
    print(
        "cost: 1 - wf/s / the no-SDK wf/s (medians); CPU cost: process CPU per workflow "
        "against the no-SDK one; raw commits/s: median of each configuration's probes; "
        "+traces: metrics and traces"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
