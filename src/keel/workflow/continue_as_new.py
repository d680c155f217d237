"""Continue-as-new, as workflow code sees it: end this run, start a fresh successor.

``continue_as_new(*args, **kwargs)`` checks and encodes the successor's input
at the call, then raises :class:`keel.errors.ContinueAsNew`. The worker ends the
run ``continued`` and creates the successor (same workflow, its current
version, an empty journal, the new input) in one transaction
(a :class:`keel.store.ports.Continue` turn). All runs of a chain share the
first run's id as their chain id; the client follows the chain from any id.
"""

from __future__ import annotations

from typing import Any, NoReturn

from keel.core.replay import current_execution
from keel.errors import WorkflowError


def continue_as_new(*args: Any, **kwargs: Any) -> NoReturn:
    """End this run and start its successor with these arguments (workflow code only).

    The arguments are bound to the workflow function's signature and encoded
    here: a value that cannot be encoded raises :class:`keel.SerializationError`
    (and one that does not fit the signature ``TypeError``) at this call, and
    nothing is written. Commands still pending are discarded.
    """
    execution = current_execution()
    if execution is None:
        raise WorkflowError("continue_as_new() can only be used inside a workflow")
    raise execution.continue_as_new(args, kwargs)
