"""The step thread pool: runs work, reports errors, never holds up process exit."""

from __future__ import annotations

import threading

import pytest

from keel.worker.threads import StepThreads


def test_runs_work_and_reports_errors_on_daemon_threads() -> None:
    pool = StepThreads(2)
    try:
        assert pool.submit(lambda a, b: a + b, 2, b=3).result(timeout=5) == 5
        with pytest.raises(ZeroDivisionError):
            pool.submit(lambda: 1 / 0).result(timeout=5)
        daemon = pool.submit(lambda: threading.current_thread().daemon).result(timeout=5)
        assert daemon is True
    finally:
        pool.shutdown()


def test_keeps_to_its_limit() -> None:
    pool = StepThreads(2)
    gate = threading.Event()
    try:
        for _ in range(5):
            pool.submit(lambda: None).result(timeout=5)
        blocked = [pool.submit(gate.wait, 5) for _ in range(3)]  # the third one queues
        assert len(pool._threads) <= 2
        gate.set()
        assert all(f.result(timeout=5) for f in blocked)
    finally:
        pool.shutdown()


def test_shutdown_cancels_queued_work_and_refuses_more() -> None:
    pool = StepThreads(1)
    gate = threading.Event()
    running = pool.submit(gate.wait, 5)
    queued = pool.submit(lambda: "never")
    pool.shutdown(wait=False, cancel_futures=True)
    assert queued.cancelled()
    with pytest.raises(RuntimeError):
        pool.submit(lambda: None)
    gate.set()
    assert running.result(timeout=5) is True
    pool.shutdown(wait=True)
