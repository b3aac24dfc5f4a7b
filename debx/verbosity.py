"""How much the commands say: -q (progress and info lines off), the default, -v (more detail).

The root `debx` callback sets the level (debx.cli); commands ask `info()` / `detail()` before printing progress or
informational lines, and `console()` gives a rich Console that honours the level (quiet: its status spinners and
prints are off; results that are the point of a command are printed with `result_console()`, which always prints).
The level also reaches child processes through $DEBX_VERBOSITY.
"""

from __future__ import annotations

import os
import sys

QUIET, NORMAL, VERBOSE = -1, 0, 1
ENV = "DEBX_VERBOSITY"


def level() -> int:
    try:
        return max(QUIET, min(VERBOSE, int(os.environ.get(ENV, NORMAL))))
    except ValueError:
        return NORMAL


def set_level(value: int) -> None:
    os.environ[ENV] = str(max(QUIET, min(VERBOSE, value)))


def info() -> bool:
    """Progress and info lines are wanted (not -q)."""
    return level() > QUIET


def detail() -> bool:
    """Extra detail is wanted (-v)."""
    return level() >= VERBOSE


def say(message: str, *, verbose: bool = False) -> None:
    """One progress/info line on stderr (stdout stays for results): off under -q; `verbose` lines only with -v."""
    if (detail() if verbose else info()):
        print(message, file=sys.stderr, flush=True)


def progress(log):
    """`log` (a progress callback taking one message) under the default and -v; a no-op under -q."""
    return log if info() else (lambda *args, **kwargs: None)


def status(console, message: str):
    """`console.status(message)` (a spinner while a step runs), or nothing under -q."""
    import contextlib

    return console.status(message) if info() else contextlib.nullcontext()
