"""The Typer app: wires each command module in. Commands live one group per module."""

from __future__ import annotations

import typer

from storyd.cli.animate import animate, train_motion
from storyd.cli.comic import comic, validate
from storyd.cli.convert import convert
from storyd.cli.doctor import doctor
from storyd.cli.eval import eval_command
from storyd.cli.layout import layout
from storyd.cli.train_toy import train_toy
from storyd.cli.weights import weights_app

app = typer.Typer(
    name="storyd",
    help="Turn a story into a consistent comic, and its panels into transition videos.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Command registration: one line per command module (keep this block sorted).
# --- commands ---
app.command("comic")(comic)
app.command("convert")(convert)
app.command("doctor")(doctor)
app.command("eval")(eval_command)
app.command("layout")(layout)
app.command("validate")(validate)
app.command("train-toy")(train_toy)
app.add_typer(weights_app, name="weights")
app.command("animate")(animate)
app.command("train-motion")(train_motion)
# --- end commands ---


def main() -> None:
    quiet_libraries()
    app()


def quiet_libraries() -> None:
    """The CLI owns the process: keep diffusers' and transformers' advisory logs off the user's terminal.

    Both libraries set their log level from these variables when they first log, so this
    must happen before either is imported; a user's own setting wins.
    """
    import os

    for name in ("DIFFUSERS_VERBOSITY", "TRANSFORMERS_VERBOSITY"):
        os.environ.setdefault(name, "error")
