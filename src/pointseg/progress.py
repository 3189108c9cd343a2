"""Progress over a known number of items (images): a bar on a terminal, plain lines otherwise.

On a terminal, rich draws one transient bar with the count done and the time left. When the
output is a file or a pipe (a log, a background job), a bar would print nothing useful, so plain
lines are printed instead, one each time another tenth of the items is done (every item when
there are at most ten): ``evaluating: 3/10 images (100_sat), 0:12 elapsed, about 0:28 left``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

PLAIN_LINES = 10
"""Lines at most that a run prints when stdout is not a terminal (one per tenth of the items)."""

Advance = Callable[[str], None]
"""Called with an item's name once the item is done."""
Track = Callable[[str, int], AbstractContextManager[Advance]]
"""Given a description and an item count, a context that shows progress and yields an :data:`Advance`."""


def clock(seconds: float) -> str:
    """``75.2`` -> ``1:15``; ``3725`` -> ``1:02:05``."""
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


@contextmanager
def track_items(console: Console, description: str, total: int, unit: str = "images") -> Iterator[Advance]:
    """Show progress over ``total`` items while the block runs; yield the function to call per item.

    Args:
        console: Where to show it (a bar if it is a terminal, else plain lines).
        description: What is being done, e.g. ``evaluating``.
        total: Number of items.
        unit: What the items are, for the count.
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
            yield lambda name: bar.advance(task)
        return
    started = time.perf_counter()
    step = max(1, math.ceil(total / PLAIN_LINES))
    done = 0

    def advance(name: str) -> None:
        nonlocal done
        done += 1
        if done % step and done != total:
            return
        elapsed = time.perf_counter() - started
        left = elapsed / done * (total - done)
        console.print(
            f"{description}: {done}/{total} {unit} ({name}), {clock(elapsed)} elapsed, "
            f"about {clock(left)} left",
            highlight=False,
            soft_wrap=True,
        )

    yield advance


@contextmanager
def no_progress(description: str, total: int) -> Iterator[Advance]:
    """A :data:`Track` that shows nothing."""
    yield lambda name: None
