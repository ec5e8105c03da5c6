"""The Typer app: wires each command module in. Commands live one group per module.

Every command runs inside `StorydGroup.invoke`, where the error table (storyd/cli/errors.py)
turns storyd's errors and interrupts into one line and an exit code; tests that call
`app` through Typer's CliRunner go through the same place as `storyd` itself.
Command modules import only typer, rich and light storyd modules at the top, so that
`storyd --help` and `storyd validate` start in a fraction of a second.
"""

from __future__ import annotations

import typer
from typer.core import TyperGroup

from storyd.cli.animate import animate, train_motion
from storyd.cli.comic import comic, validate
from storyd.cli.convert import convert
from storyd.cli.doctor import doctor
from storyd.cli.errors import handled
from storyd.cli.eval import eval_command, eval_suite
from storyd.cli.layout import layout
from storyd.cli.train_toy import train_toy
from storyd.cli.weights import weights_app


class StorydGroup(TyperGroup):
    """The command group whose invoke is the CLI's one catch: what the error table knows ends quietly."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (KeyboardInterrupt, Exception) as exc:
            code = handled(exc)
            if code is None:
                raise
            raise typer.Exit(code) from None


app = typer.Typer(
    name="storyd",
    help="Turn a story into a consistent comic, and its panels into transition videos.",
    cls=StorydGroup,
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
app.command("eval-suite")(eval_suite)
app.command("layout")(layout)
app.command("validate")(validate)
app.command("train-toy")(train_toy)
app.add_typer(weights_app, name="weights")
app.command("animate")(animate)
app.command("train-motion")(train_motion)
# --- end commands ---
