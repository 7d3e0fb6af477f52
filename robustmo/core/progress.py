"""Progress of a run's long stages (training, answer generation, evaluation).

On a terminal a rich progress bar; anywhere else (a log file, a pipe, CI) a plain line at least
every ``EVERY_SECONDS`` or each ``EVERY_FRACTION`` of the work, whichever comes first, and one at
the end: stage, step of total, loss where there is one, tokens per second, time left. A bar
draws nothing when stdout is not a terminal, so without these lines a long job gives no sign
of life.

Generation reports to the meter of the stage that runs it (``current()``), so an engine's
batches show up without the engine knowing about meters.
"""

from __future__ import annotations

import contextvars
import sys
import time
from typing import Callable

EVERY_SECONDS = 30.0
EVERY_FRACTION = 0.1

_CURRENT: contextvars.ContextVar["Meter | None"] = contextvars.ContextVar("robustmo_meter", default=None)
_LIVE: list["Meter"] = []  # bars on the terminal now: rich draws one live display at a time


# Set in an audit's worker processes (core/workers.py): their stdout may be the terminal, but
# their lines go to the driver, which prints them; a bar there would fight the driver's display.
PLAIN = False


def on_terminal() -> bool:
    if PLAIN:
        return False
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


def duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


class Meter:
    """``with Meter("organism: red training", 300, log=log) as m: ... m.update(loss=..., tokens=...)``.

    ``done``: work already done (a resumed training). ``enabled`` False: nothing is shown.
    ``terminal``: draw a bar (default: stdout is a terminal), else plain lines through ``log``."""

    def __init__(self, description: str, total: int, *, log: Callable[[str], None] | None = print, unit: str = "step",
                 done: int = 0, enabled: bool = True, terminal: bool | None = None, transient: bool = False):
        self.description, self.total, self.unit = description, max(int(total), 0), unit
        self.done, self.start_done, self.tokens, self.loss = done, done, 0, None
        self.log = log or print
        self.enabled = enabled and self.total > 0
        self.terminal = on_terminal() if terminal is None else terminal
        self.transient = transient
        self.bar = self.task = self.token = self.parent = None
        self.began = self.last_time = time.perf_counter()
        self.inner = 0.0  # seconds spent in stages run inside this one (a training's evaluations)
        self.last_done = done

    def __enter__(self) -> "Meter":
        if self.enabled and self.terminal and _LIVE:  # inside a stage whose bar is drawn: that bar is the progress
            self.enabled = False
        if self.enabled and self.terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn()]
            if self.unit == "step":
                columns.append(TextColumn("loss {task.fields[loss]:.3f}"))
            self.bar = Progress(*columns, TimeElapsedColumn(), transient=self.transient)
            self.task = self.bar.add_task(self.description, total=self.total, completed=self.done,
                                          loss=float("nan") if self.loss is None else self.loss)
            self.bar.start()
            _LIVE.append(self)
        self.parent = _CURRENT.get()
        self.token = _CURRENT.set(self)
        return self

    def update(self, advance: int = 1, *, loss: float | None = None, tokens: int = 0) -> None:
        self.done += advance
        self.tokens += tokens
        if loss is not None:
            self.loss = loss
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(self.task, advance=advance, **({"loss": loss} if loss is not None else {}))
            return
        now = time.perf_counter()
        if self.done >= self.total or now - self.last_time >= EVERY_SECONDS or \
                self.done - self.last_done >= EVERY_FRACTION * self.total:
            self.log(self.line(now))
            self.last_time, self.last_done = now, self.done

    def line(self, now: float | None = None) -> str:
        now = time.perf_counter() if now is None else now
        elapsed = max(now - self.began, 1e-9)
        parts = [f"{self.description}: {self.unit} {self.done} of {self.total} ({self.done / self.total:.0%})"]
        if self.loss is not None:
            parts.append(f"loss {self.loss:.3f}")
        if self.tokens:  # its own work's rate: the stages run inside it do not count
            parts.append(f"{self.tokens / max(elapsed - self.inner, 1e-9):,.0f} tokens/s")
        new = self.done - self.start_done
        if self.done >= self.total:
            parts.append(f"done in {duration(elapsed)}")
        elif new > 0:
            parts.append(f"{duration(elapsed / new * (self.total - self.done))} left")
        return ", ".join(parts)

    def __exit__(self, *exc) -> bool:
        if self.token is not None:
            _CURRENT.reset(self.token)
            self.token = None
        if self.parent is not None:
            self.parent.inner += time.perf_counter() - self.began
        if self.bar is not None:
            self.bar.stop()
            _LIVE.remove(self)
            self.bar = None
        return False


def current() -> Meter | None:
    """The meter of the stage running now, if it shows anything."""
    meter = _CURRENT.get()
    return meter if meter is not None and meter.enabled else None
