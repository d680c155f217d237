"""The :class:`Client`: every method, grouped by concept in the modules it is made of."""

from __future__ import annotations

from keel.client.graphs import GraphsMixin
from keel.client.operator import OperatorMixin
from keel.client.reads import ReadsMixin
from keel.client.runs import RunsMixin
from keel.client.schedules import SchedulesMixin


class Client(RunsMixin, ReadsMixin, OperatorMixin, GraphsMixin, SchedulesMixin):
    """Start and control runs in a store.

    ``Client(worker=w)`` (or ``w.client()``) hands runs it starts straight to
    that in-process worker, already leased, saving a claim round trip.

    The methods live by concept: starting and driving runs
    (:mod:`keel.client.runs`), reading them (:mod:`keel.client.reads`),
    operator actions (:mod:`keel.client.operator`), graph runs
    (:mod:`keel.client.graphs`), schedules and queues
    (:mod:`keel.client.schedules`).
    """
