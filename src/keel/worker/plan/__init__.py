"""Pure planners: from a pending command, the store's clock and what the
gatherer read (:mod:`keel.worker.gather`), the actions to take
(:mod:`keel.worker.actions`). No store, no event loop, no clock of their own:
each is a function of its arguments, performed by :mod:`keel.worker.effects`.

One module per concept: ``steps`` (inline steps and side effects), ``queued``
(dispatched steps), ``timers``, ``signals``, ``children``, ``ending`` (the
run's end, continue-as-new) and ``turn`` (one pass over the pending commands).
"""
