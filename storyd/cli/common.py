"""What every command shares: the output sink (results, notes, warnings, progress)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape


class Output:
    """One sink for a command's output: results on stdout, everything else on stderr."""

    def __init__(self, *, json_mode: bool = False, quiet: bool = False) -> None:
        self.json_mode = json_mode
        self.quiet = quiet
        self.out = Console(highlight=False, soft_wrap=True)
        self.err = Console(stderr=True, highlight=False, soft_wrap=True)

    @property
    def show_progress(self) -> bool:
        return not self.quiet and not self.json_mode

    def progress(self):
        """The progress view of a command, as a context manager: rich bars, or notes alone (--json, --quiet)."""
        from storyd.cli.progress_view import NotesOnly, RichProgress

        return RichProgress(self.err) if self.show_progress else NotesOnly(self.err, self.quiet)

    def info(self, message: str) -> None:
        if not self.quiet:
            self.err.print(escape(message))

    def warn(self, message: str) -> None:
        self.err.print(f"[yellow]Warning:[/yellow] {escape(message)}")

    def result(self, data: Any, human: Callable[[Console], None] | None = None) -> None:
        """Print a command's result: JSON when asked for, else the human rendering."""
        if self.json_mode:
            self.out.file.write(json.dumps(data, indent=2, sort_keys=True, default=_jsonable) + "\n")
        elif human is not None:
            human(self.out)


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
