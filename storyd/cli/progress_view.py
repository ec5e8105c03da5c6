"""The rich progress view of `storyd comic`: panels per story, and the steps of the batch at hand."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class RichProgress:
    """Implements storyd.progress.Progress on stderr; one view for every story of a command."""

    def __init__(self, console: Console) -> None:
        self.view = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self.panels = None
        self.steps = None

    def __enter__(self) -> RichProgress:
        self.view.start()
        return self

    def __exit__(self, *exc) -> None:
        self.view.stop()

    def start(self, panels: int) -> None:
        self.panels = self.view.add_task("panels", total=panels)

    def batch(self, description: str, images: int, steps: int) -> None:
        if self.steps is not None:
            self.view.remove_task(self.steps)
        self.steps = self.view.add_task(f"  {escape(description)}", total=steps)

    def step(self) -> None:
        self.view.advance(self.steps)

    def panels_done(self, count: int) -> None:
        self.view.advance(self.panels, count)

    def finish(self) -> None:
        if self.steps is not None:
            self.view.remove_task(self.steps)
            self.steps = None
