"""The one rich view of storyd.progress.Progress: a bar per task on stderr, notes printed above the bars."""

from __future__ import annotations

from rich.console import Console
from rich.filesize import decimal
from rich.markup import escape
from rich.progress import BarColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.text import Text

from storyd.cli.errors import raise_pending
from storyd.progress import NullProgress


class AmountColumn(ProgressColumn):
    """`done/total` in the task's unit: sizes for bytes, plain counts otherwise."""

    def render(self, task) -> Text:
        show = decimal if task.fields.get("unit") == "bytes" else str
        total = show(int(task.total)) if task.total is not None else "?"
        return Text(f"{show(int(task.completed))}/{total}")


class RichProgress:
    """Draws every task of one command; the bars stay off when stderr is not a terminal (logs, pipes)."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.view = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            AmountColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[detail]}"),
            console=console,
            disable=not console.is_terminal,
        )
        self.tasks: dict = {}

    def __enter__(self) -> RichProgress:
        self.view.start()
        return self

    def __exit__(self, *exc) -> None:
        self.view.stop()

    def update(self, task: str, done: int, total: int | None = None, *, unit: str = "", detail: str = "") -> None:
        raise_pending()
        if task not in self.tasks:
            self.tasks[task] = self.view.add_task(escape(task), total=total, unit=unit, detail="")
        self.view.update(self.tasks[task], completed=done, total=total, detail=escape(detail))

    def advance(self, task: str, by: int = 1) -> None:
        raise_pending()
        if task not in self.tasks:
            self.update(task, 0)
        self.view.advance(self.tasks[task], by)

    def end(self, task: str) -> None:
        if task in self.tasks:
            self.view.remove_task(self.tasks.pop(task))

    def note(self, message: str) -> None:
        self.console.print(escape(message))


class NotesOnly(NullProgress):
    """No bars (--json), but the notes still reach stderr; nothing at all with --quiet."""

    def __init__(self, console: Console, quiet: bool) -> None:
        self.console = console
        self.quiet = quiet

    def __enter__(self) -> NotesOnly:
        return self

    def __exit__(self, *exc) -> None:
        pass

    def update(self, task: str, done: int, total: int | None = None, *, unit: str = "", detail: str = "") -> None:
        raise_pending()

    def advance(self, task: str, by: int = 1) -> None:
        raise_pending()

    def note(self, message: str) -> None:
        if not self.quiet:
            self.console.print(escape(message))
