"""How the `augment` and `train` command lines end: one line on stderr, and one exit-code rule for both.

Exit codes: 0 = done (or the check passed); 1 (``CHECK_FAILED``) = a check failed or a run met bad data;
2 (``USAGE``) = the command was called wrong; 130 (``INTERRUPTED``) = Ctrl-C (128 + SIGINT, as shells report it).
"""

from __future__ import annotations

import errno
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, NoReturn

import typer
from typer.core import TyperGroup

CHECK_FAILED, USAGE, INTERRUPTED = 1, 2, 130
EXIT_CODES = (
    "Exit codes: 0 = done (or the check passed); 1 = a check failed (verify found problems, a build met bad "
    "data, --diff found differences); 2 = a usage error (a bad option value, a path that is not a build "
    "folder or does not exist, a file where a folder is expected); 130 = interrupted (Ctrl-C)."
)


class OneLineErrors(TyperGroup):
    """Usage errors print one line on stderr (what was wrong, and the valid choices) and exit 2; Ctrl-C prints
    ``interrupted_message`` and exits 130 (a subclass, e.g. the `train` CLI, words it for its own commands)."""

    interrupted_message = "interrupted; run the same command again to resume"

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            self.interrupted()

    def interrupted(self) -> None:
        """Print the one line for Ctrl-C and exit 130; no traceback."""
        typer.echo(self.interrupted_message, err=True)
        raise typer.Exit(INTERRUPTED) from None

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
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
    CHECK_FAILED for a failed check or run). Each CLI binds its ``prog``: ``partial(fail, "augment")``. The message
    is ``shown``: one line, whatever a file's or a sample's name in it holds."""
    typer.echo(f"{prog}: error: {shown(message)}", err=True)
    raise typer.Exit(code)


def shown(text: str) -> str:
    """``text`` safe to print on a terminal: every character that is not printable (ESC, CR, LF, BEL, the C1 and
    bidi controls: what moves the cursor, erases lines or writes the clipboard) as its Python escape, ``\\x1b``."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def shown_all(value: Any) -> Any:
    """``value`` (JSON data, e.g. a stranger's manifest) with every string and key ``shown``."""
    if isinstance(value, str):
        return shown(value)
    if isinstance(value, dict):
        return {shown_all(k): shown_all(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shown_all(v) for v in value]
    return value


OUT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}  # errors of writing, whichever file they name


def out_problem(out: Path, e: OSError) -> str | None:
    """What an OSError of writing ``out`` says about it (it names ``out``, a folder above it or a file in it), else
    None: then it is another path's (the source's)."""
    out = Path(out).absolute()
    name = Path(e.filename).absolute() if isinstance(e.filename, (str, os.PathLike)) else None
    if name is None or not (name == out or name in out.parents or out in name.parents):
        return f"cannot write there ({e.strerror or e})" if e.errno in OUT_ERRNOS else None
    blocker = next((p for p in [out, *out.parents] if p.exists()), None)  # the nearest path that is there
    if blocker is not None and not blocker.is_dir():
        return f"{blocker} is a file, not a folder"
    return f"cannot create or write {name} ({e.strerror or e})"


def unwritable(folder: Path) -> str | None:
    """Why ``folder`` cannot be made and written into (a file in the way, no permission, a read-only filesystem),
    or None: it is made (with the folders above it) and a file is written in it and removed, as the run would."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        return out_problem(folder, e) or f"cannot create {folder} ({e.strerror or e})"
    try:
        handle, probe = tempfile.mkstemp(prefix=".write-test-", dir=folder)
    except OSError as e:
        return f"cannot write in {folder} ({e.strerror or e})"
    os.close(handle)
    os.unlink(probe)
    return None
