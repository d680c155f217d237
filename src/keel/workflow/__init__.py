"""What workflow code calls, one module per concept.

- :mod:`~keel.workflow.definitions`: ``@workflow`` / ``@step`` and the registry.
- :mod:`~keel.workflow.context`: durable sleep, signals, ``now``/``uuid4``/``random``,
  side effects, patches, cancellation checks.
- :mod:`~keel.workflow.children`: child workflows.
- :mod:`~keel.workflow.continue_as_new`: end a run and start its successor.
- :mod:`~keel.workflow.saga`: compensations.

Import them from :mod:`keel` (``keel.step``, ``keel.sleep``, ...); this
package holds their code, it is not a second API.
"""
