"""A run's step timeline as positioned bars, from the journal fold (no I/O).

One lane per command, in journal order. A step has a bar per attempt (from the
attempt's start, as the worker recorded it, to its journaled end) and a hatched
gap for each retry wait; timers, signal waits and child runs have one bar from
their first event to their end (or to now while they wait). Positions are
percentages of the run's span, so the template needs no arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from keel.core.fold import CommandView, RunView

MIN_WIDTH = 0.6  # percent: an instant still shows


@dataclass(frozen=True, slots=True)
class Bar:
    left: float  # percent of the span
    width: float
    css: str  # b-attempt-ok, b-attempt-failed, b-retry-wait, b-timer, b-signal, b-child, ...
    title: str


@dataclass(slots=True)
class Lane:
    command: CommandView
    bars: list[Bar] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        """Whether the command failed or any of its attempts did."""
        cmd = self.command
        return (
            cmd.status in ("failed", "timed_out")
            or any(a.outcome == "failed" for a in cmd.attempts)
            or (cmd.kind == "child" and cmd.status == "cancelled")
        )


@dataclass(frozen=True, slots=True)
class Timeline:
    start: float
    end: float
    lanes: list[Lane]

    @property
    def span(self) -> float:
        return self.end - self.start


def build(view: RunView, start: float, now: float, *, ended: bool) -> Timeline:
    """The timeline of ``view`` (the fold of a run's journal) from ``start`` (the
    run's creation); a run that has not ended extends to ``now``."""
    end = max([view.at, *(_last_time(c) for c in view.commands.values())])
    if not ended:
        end = max(end, now)
    span = max(end - start, 1e-3)

    def bar(a: float, b: float, css: str, title: str) -> Bar:
        a, b = max(a, start), max(b, a)
        left = (a - start) / span * 100
        width = max((b - a) / span * 100, MIN_WIDTH)
        return Bar(
            round(min(left, 100 - MIN_WIDTH), 3), round(min(width, 100 - left), 3), css, title
        )

    lanes = []
    for cmd in view.commands.values():
        lane = Lane(cmd)
        waiting_until = now if not ended else cmd.updated_at
        if cmd.kind == "step":
            prev_end = cmd.started_at if not cmd.attempts else None
            for n, attempt in enumerate(cmd.attempts):
                began = attempt.started_at
                if began is None:  # not recorded: older journal, or a task worker's attempt
                    began = attempt.ended_at
                if prev_end is not None and n > 0 and began > prev_end:
                    lane.bars.append(bar(prev_end, began, "b-retry-wait", "waiting to retry"))
                ok = attempt.outcome == "completed"
                who = f" on {attempt.worker}" if attempt.worker else ""
                dur = attempt.ended_at - began
                title = f"attempt {attempt.number} {'completed' if ok else 'failed'}{who}"
                if attempt.started_at is not None:
                    title += f" in {dur:.3g}s"
                if attempt.error:
                    title += (
                        f": {attempt.error.get('type', '')}: {attempt.error.get('message', '')}"
                    )
                lane.bars.append(
                    bar(
                        began, attempt.ended_at, "b-attempt-ok" if ok else "b-attempt-failed", title
                    )
                )
                prev_end = attempt.ended_at
            if cmd.status == "retrying" and prev_end is not None:
                due = cmd.retry_at if cmd.retry_at is not None else waiting_until
                lane.bars.append(bar(prev_end, max(due, prev_end), "b-retry-wait", "retry due"))
            if cmd.status == "dispatched":
                lane.bars.append(
                    bar(cmd.started_at, waiting_until, "b-dispatched", f"queued on {cmd.queue}")
                )
        elif cmd.kind == "sleep":
            stop = cmd.updated_at if cmd.status == "fired" else waiting_until
            lane.bars.append(bar(cmd.started_at, stop, "b-timer", f"timer {cmd.status}"))
        elif cmd.kind == "signal":
            stop = cmd.updated_at if cmd.ended else waiting_until
            what = f"signal {cmd.signal or cmd.name!r} {cmd.status}"
            lane.bars.append(bar(cmd.started_at, stop, "b-signal", what))
        elif cmd.kind == "child":
            stop = cmd.updated_at if cmd.ended else waiting_until
            what = f"child {cmd.child_run_id} {cmd.status}"
            lane.bars.append(bar(cmd.started_at, stop, "b-child", what))
        else:
            lane.bars.append(bar(cmd.started_at, cmd.started_at, "b-mark", f"{cmd.kind} recorded"))
        lanes.append(lane)
    return Timeline(start, end, lanes)


def _last_time(cmd: CommandView) -> float:
    times = [cmd.updated_at]
    times += [a.ended_at for a in cmd.attempts]
    return max(times)
