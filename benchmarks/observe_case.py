"""One case of bench_sqlite.py, and nothing else (no raw commit probe, no
output): what ``bench_observe.py --instructions`` runs under callgrind, so the
instructions it counts are Keel's and the SDK's, not a timed probe's.

    python benchmarks/observe_case.py OBSERVE SAMPLE N STEPS
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

import bench_sqlite
from _common import StoreCounters


def main(argv: list[str]) -> None:
    observe, sample, n, steps = argv[0], float(argv[1]), int(argv[2]), argv[3]
    bench_sqlite.install_observability(observe, sample)
    with tempfile.TemporaryDirectory() as folder, StoreCounters() as counters:
        case = bench_sqlite.run_case(
            Path(folder) / "keel.db",
            steps=steps,
            mode="concurrent",
            n=n,
            concurrency=100,
            synchronous="FULL",
            counters=counters,
            warmup=20,
        )
        asyncio.run(case)


if __name__ == "__main__":
    main(sys.argv[1:])
