"""The client: start runs, wait for results, signal, cancel, inspect, operate."""

from keel.client.client import Client
from keel.client.ids import new_run_id
from keel.client.records import HistoryEvent, RunHandle, RunInfo, RunList

__all__ = ["Client", "HistoryEvent", "RunHandle", "RunInfo", "RunList", "new_run_id"]
