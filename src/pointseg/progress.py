"""Progress a user can see for long commands: a rich bar on a terminal, plain lines otherwise.

A command that goes through N items calls the ``advance`` function that :func:`item_progress`
yields once per item done. On a terminal that updates a bar with the count and the time left;
when stdout is a log file or a pipe (where a bar shows nothing until the end) it prints one line
each time another tenth of the items is done, with the elapsed time and an estimate of what is left.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

PLAIN_LINES = 10
"""Lines a run prints when stdout is not a terminal (one per tenth of the items)."""


@contextmanager
def item_progress(console: Console, description: str, total: int, unit: str) -> Iterator[Callable[[], None]]:
    """Show progress through ``total`` items; yield the function to call once per item done.

    Args:
        console: Where to show it; a bar if it is a terminal, plain lines otherwise.
        description: What is being done, e.g. ``"simulating points"``.
        total: Number of items.
        unit: What an item is, plural, e.g. ``"images"``.
    """
    if console.is_terminal:
        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn(unit),
            TimeRemainingColumn(),
        )
        with Progress(*columns, console=console, transient=True) as bar:
            task = bar.add_task(description, total=total)
            yield lambda: bar.advance(task)
        return
    start = time.monotonic()
    step = max(1, math.ceil(total / PLAIN_LINES))
    done = 0

    def advance() -> None:
        nonlocal done
        done += 1
        if done % step and done != total:
            return
        elapsed = time.monotonic() - start
        left = _duration(elapsed / done * (total - done))
        console.print(
            f"{description}: {done}/{total} {unit}, {_duration(elapsed)} elapsed, about {left} left",
            highlight=False,
            soft_wrap=True,
        )

    yield advance


def _duration(seconds: float) -> str:
    """``H:MM:SS`` for a number of seconds."""
    return str(timedelta(seconds=round(seconds)))
