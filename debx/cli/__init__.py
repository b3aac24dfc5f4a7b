"""The `debx` command. This file only wires the subcommands; each lives in its own module.

Adding a command is one entry in COMMANDS: (name, module). The module defines `command` (a Typer function), keeps
heavy imports inside it so that `debx --help` stays instant, and may define EXAMPLES ((command line, what it does),
...), shown at the end of its --help. Root flags: --version, -v/-q (debx.verbosity).
"""

from __future__ import annotations

import errno
import importlib
import os
import signal
import sys

import typer

from debx import __version__, verbosity
from debx.errors import ConfigError, DebxError

COMMANDS: list[tuple[str, str]] = [
    ("train", "debx.cli.train"),
    ("export", "debx.cli.export"),
    ("validate", "debx.cli.validate"),
    ("calibrate", "debx.cli.calibrate"),
    ("rewrite", "debx.cli.rewrite"),
    ("build", "debx.cli.build"),
    ("eval", "debx.cli.eval"),
    ("bench", "debx.cli.bench"),
    ("ops-path", "debx.cli.ops_path"),
    ("package", "debx.cli.package"),
]

# OSErrors that say something about the user's files or disk, never about debx: one line, exit 2
USER_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT}

app = typer.Typer(
    name="debx",
    help="DeBERTa from PyTorch to fast, quantized deployments whose accuracy is proven: "
    "train → export → calibrate → build → eval (with gates) → bench.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)



def _version(value: bool) -> None:
    if value:
        print(f"debx {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print debx's version and exit."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="More detail (an export's axes, custom ops and versions; the runner "
                                 "eval used)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only results and errors: no progress or info lines."),
) -> None:
    """Root flags: --version, -v/-q (before the command: `debx -q eval ...`)."""
    if verbose and quiet:
        raise ConfigError("-v and -q contradict each other: choose one")
    verbosity.set_level(verbosity.VERBOSE if verbose else verbosity.QUIET if quiet else verbosity.NORMAL)


def examples_epilog(examples) -> str | None:
    """A command module's EXAMPLES ((command line, what it does), ...) as the end of its --help."""
    if not examples:
        return None
    return "Examples:\n\n" + "\n\n".join(f"  {line}    # {what}" for line, what in examples)


for _name, _module in COMMANDS:
    _mod = importlib.import_module(_module)
    app.command(_name, help=_mod.command.__doc__, epilog=examples_epilog(getattr(_mod, "EXAMPLES", None)))(_mod.command)


_STOPPED: list[int] = []  # the signal that stopped the command, if one did


def _on_signal(signum, frame) -> None:
    """SIGTERM is raised like Ctrl-C, so that the same cleanup runs (temporary folders removed, nothing
    half-written)."""
    _STOPPED.append(signum)
    if signum == signal.SIGTERM:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # one is enough: let the cleanup finish
    raise KeyboardInterrupt()


def _exit_stopped() -> None:
    """The command has unwound from SIGINT/SIGTERM: the one line, then exit 128 + signum at once. Further signals are
    ignored so they cannot interrupt the line and the exit. The command's own cleanup (temporary folders, staged
    files) has run while it unwound; the interpreter's shutdown is skipped because, after an interrupt, it was seen
    (rarely, in CI) to end the process by SIGINT instead (exit -2 after the line was printed)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signum = _STOPPED[0] if _STOPPED else signal.SIGINT
    print(f"debx: {'terminated' if signum == signal.SIGTERM else 'interrupted'}", file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(128 + signum)


def main() -> None:
    """Console entry point: user errors become one line on stderr and a non-zero exit, never a traceback.
    SIGINT and SIGTERM unwind the command (its cleanup runs) and exit 130 / 143 with one line."""
    try:  # Typer >= 0.20 carries its own copy of Click; older ones use Click itself
        from typer._click import exceptions as click_errors
    except ImportError:  # pragma: no cover - depends on the installed Typer
        from click import exceptions as click_errors

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    try:
        rc = app(standalone_mode=False)  # usage errors come back to us instead of Click's boxed panel
        sys.exit(rc if isinstance(rc, int) else 0)
    except click_errors.NoArgsIsHelpError as e:  # `debx` / `debx train` alone: the help, as before
        e.show()
        sys.exit(e.exit_code)
    except click_errors.UsageError as e:  # unknown option or command, bad value, missing argument
        sub = e.ctx.info_name if e.ctx is not None and e.ctx.parent is not None else None
        print(f"debx: error: {e.format_message().splitlines()[0]} (see 'debx {sub + ' ' if sub else ''}--help')",
              file=sys.stderr)
        sys.exit(e.exit_code)
    except typer.Abort:  # Click's name for Ctrl-C outside standalone mode
        _exit_stopped()
    except DebxError as e:
        print(f"debx: error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    except (KeyboardInterrupt, SystemExit) as e:  # Typer turns an interrupt into SystemExit(130) itself
        if isinstance(e, SystemExit) and not _STOPPED:
            raise
        _exit_stopped()
    except OSError as e:  # a read-only folder, a full disk, a file we may not read: the user's to fix
        if e.errno not in USER_ERRNOS:
            raise
        where = f"{e.filename}: " if e.filename else ""
        print(f"debx: error: {where}{e.strerror or e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
