"""Helpers shared by the tests that drive the CLI in-process (tests/ is on sys.path through tests/conftest.py)."""

from __future__ import annotations

import sys

import pytest


def run_main(monkeypatch, capsys, *args) -> tuple[int, str, str]:
    """debx.cli.main in this process with argv = ["debx", *args]: (exit code, stdout, stderr)."""
    from debx.cli import main as debx_main

    monkeypatch.setattr(sys, "argv", ["debx", *map(str, args)])
    with pytest.raises(SystemExit) as e:
        debx_main()
    out = capsys.readouterr()
    return e.value.code or 0, out.out, out.err
