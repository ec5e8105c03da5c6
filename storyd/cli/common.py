"""What every command shares: the output sink, error translation, option aliases."""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from storyd.errors import StorydError

F = TypeVar("F", bound=Callable[..., Any])

JsonOpt = Annotated[bool, typer.Option("--json", help="Print a JSON result on stdout; everything else goes to stderr.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or notes; errors and warnings only.")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Overwrite existing output files.")]


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


def handle_errors(fn: F) -> F:
    """Turn storyd's errors into one line on stderr and an exit code, no traceback.

    STORYD_DEBUG=1 re-raises, for a traceback. Errors that are not StorydError
    are bugs and stay loud.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except StorydError as exc:
            if os.environ.get("STORYD_DEBUG"):
                raise
            Console(stderr=True, highlight=False, soft_wrap=True).print(f"[red]Error:[/red] {escape(exc.format())}")
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            Console(stderr=True).print("Interrupted; finished work is kept. Run the same command again to resume.")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]
