"""Workers: claim runs under leases, replay them, execute the live tail."""

from keel.worker.worker import Worker

__all__ = ["Worker"]
