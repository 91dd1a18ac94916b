"""How the `augment` and `train` command lines end: one line on stderr, and one exit-code rule for both.

Exit codes: 0 = done (or the check passed); 1 (``CHECK_FAILED``) = a check failed or a run met bad data;
2 (``USAGE``) = the command was called wrong; 130 (``INTERRUPTED``) = Ctrl-C (128 + SIGINT, as shells report it).
"""

from __future__ import annotations

import sys
from typing import NoReturn

import typer
from typer.core import TyperGroup

CHECK_FAILED, USAGE, INTERRUPTED = 1, 2, 130
EXIT_CODES = ("Exit codes: 0 = done (or the check passed); 1 = a check failed (verify found problems, a build met bad "
              "data, --diff found differences); 2 = a usage error (a bad option value, a path that is not a build "
              "folder or does not exist, a file where a folder is expected); 130 = interrupted (Ctrl-C).")  # fmt: skip


class OneLineErrors(TyperGroup):
    """Usage errors print one line on stderr (what was wrong, and the valid choices) and exit 2; Ctrl-C prints
    ``interrupted_message`` and exits 130 (a subclass, e.g. the `train` CLI, words it for its own commands)."""

    interrupted_message = "interrupted; run the same command again to resume"

    def invoke(self, ctx):  # noqa: ANN001, ANN201
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            self.interrupted()

    def interrupted(self) -> None:
        """Print the one line for Ctrl-C and exit 130; no traceback."""
        typer.echo(self.interrupted_message, err=True)
        raise typer.Exit(INTERRUPTED) from None

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):  # noqa: ANN001
        kwargs = dict(args=args, prog_name=prog_name, complete_var=complete_var, **extra)
        if not standalone_mode:
            return super().main(standalone_mode=False, **kwargs)
        try:
            code = super().main(standalone_mode=False, **kwargs)
        except KeyboardInterrupt:  # outside a command
            typer.echo(self.interrupted_message, err=True)
            code = INTERRUPTED
        except typer.TyperException as e:  # click's exceptions, as typer re-exports them
            if getattr(e, "exit_code", 1) == 2 and type(e).__name__ != "NoArgsIsHelpError":
                where = e.ctx.command_path if getattr(e, "ctx", None) else "error"
                typer.echo(f"{where}: error: {e.format_message().replace('Value error, ', '')}", err=True)
            else:
                e.show()
            sys.exit(e.exit_code)
        except typer.Abort:
            typer.echo("Aborted!", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


def fail(prog: str, message: str, code: int = CHECK_FAILED) -> NoReturn:
    """``<prog>: error: <message>`` on stderr, then exit with ``code`` (USAGE for a command called wrong,
    CHECK_FAILED for a failed check or run). Each CLI binds its ``prog``: ``partial(fail, "augment")``."""
    typer.echo(f"{prog}: error: {message}", err=True)
    raise typer.Exit(code)
