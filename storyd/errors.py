"""The errors storyd raises. The library raises them; the CLI formats them.

Every error carries a message (what is wrong) and a hint (what to do), and,
where the problem sits in a file, the path, line and column, so that the CLI
prints one line such as ``story.yaml:12:5: unknown key 'sed'; did you mean 'seed'?``.
"""

from __future__ import annotations

from pathlib import Path


class StorydError(Exception):
    """Base of every storyd error. Exit code 1: something failed at run time."""

    exit_code = 1

    def __init__(
        self,
        message: str,
        hint: str | None = None,
        *,
        path: str | Path | None = None,
        line: int | None = None,
        col: int | None = None,
    ) -> None:
        self.message = message
        self.hint = hint
        self.path = str(path) if path is not None else None
        self.line = line
        self.col = col
        super().__init__(self.format())

    def format(self) -> str:
        where = ""
        if self.path is not None:
            where = self.path
            if self.line is not None:
                where += f":{self.line}"
                if self.col is not None:
                    where += f":{self.col}"
            where += ": "
        text = where + self.message
        if self.hint:
            text += f"; {self.hint}"
        return text


class InputError(StorydError):
    """Bad input from the user: a story file, a path, an option, an image. Exit code 2."""

    exit_code = 2


class WeightsError(InputError):
    """A model's weights are missing, unpinned, or fail their sha256 check."""


class SettingError(InputError):
    """A setting outside its bounds, raised by the settings object itself. `field` names it, so each
    front end can say where the value came from: the story file's line, or the command-line option."""

    def __init__(self, field: str, shown: str, problem: str, hint: str | None = None) -> None:
        self.field = field
        self.shown = shown  # the offending value, as the user would write it
        self.problem = problem
        super().__init__(self.message_for(f"consistency.{field}"), hint)

    def message_for(self, name: str) -> str:
        """The message with the setting called `name` (e.g. a CLI option's `--sampling-rate`)."""
        return f"{name} {self.shown} {self.problem}"
