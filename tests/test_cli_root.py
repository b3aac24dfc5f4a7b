"""Root flags of `debx`: --version, -v/-q, and the examples at the end of every main command's --help."""

from __future__ import annotations

import sys

import pytest

MAIN_COMMANDS = ("train", "export", "validate", "calibrate", "build", "eval", "bench", "ops-path", "package")


def main(monkeypatch, capsys, *args) -> tuple[int, str, str]:
    from debx.cli import main as debx_main

    monkeypatch.setenv("DEBX_VERBOSITY", "0")  # the flags set it for the process: restored after each test
    monkeypatch.setattr(sys, "argv", ["debx", *map(str, args)])
    with pytest.raises(SystemExit) as e:
        debx_main()
    out = capsys.readouterr()
    return e.value.code or 0, out.out, out.err


def test_version(monkeypatch, capsys):
    from debx import __version__

    code, out, err = main(monkeypatch, capsys, "--version")
    assert (code, out, err) == (0, f"debx {__version__}\n", "")


def test_verbose_and_quiet_together_is_one_line(monkeypatch, capsys):
    code, out, err = main(monkeypatch, capsys, "-v", "-q", "ops-path")
    assert code == 2 and err == "debx: error: -v and -q contradict each other: choose one\n"


@pytest.mark.parametrize("command", MAIN_COMMANDS)
def test_help_ends_with_examples(command, monkeypatch, capsys):
    import importlib

    from debx.cli import COMMANDS

    module = importlib.import_module(dict(COMMANDS)[command])
    assert len(module.EXAMPLES) >= 2
    monkeypatch.setenv("COLUMNS", "200")
    code, out, _ = main(monkeypatch, capsys, command, "--help")
    assert code == 0
    assert "Examples:" in out
    for line, what in module.EXAMPLES:
        assert line in out and what in out
        assert line.split()[0] in ("debx", "torchrun", "export")


def test_quiet_and_verbose_export(tmp_path, tiny_checkpoints, glue_dir, monkeypatch, capsys):
    args = ("export", tiny_checkpoints["v1"], "-o", tmp_path / "m.onnx", "--data-dir", glue_dir)
    code, normal, err = main(monkeypatch, capsys, *args)
    assert code == 0, err
    assert "maximum length" in normal  # the per-case validation table
    code, quiet, err = main(monkeypatch, capsys, "-q", *args)
    assert code == 0, err
    lines = quiet.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("validated fp32 vs PyTorch") and lines[1].startswith("wrote "), quiet
    code, verbose, err = main(monkeypatch, capsys, "-v", *args)
    assert code == 0, err
    assert "maximum length" in verbose
    assert "graph: opset 17, inputs input_ids, attention_mask" in verbose and "versions: python" in verbose
    assert "graph:" not in normal


def test_quiet_reaches_library_progress(monkeypatch, capsys):
    """-q silences the progress callbacks the commands hand to the library (verbosity.progress / say)."""
    from debx import verbosity

    monkeypatch.setenv("DEBX_VERBOSITY", "-1")
    seen = []
    verbosity.progress(seen.append)("step")
    verbosity.say("info")
    assert seen == [] and capsys.readouterr().err == ""
    monkeypatch.setenv("DEBX_VERBOSITY", "0")
    verbosity.progress(seen.append)("step")
    verbosity.say("info")
    verbosity.say("detail", verbose=True)
    assert seen == ["step"] and capsys.readouterr().err == "info\n"


@pytest.mark.parametrize("args, says", [
    (["train", "--task", "sst2", "--max-eval-samples", "3"], "No such option: --max-eval-samples"),
    (["nosuch"], "No such command 'nosuch'"),
    (["eval", "--task", "sst2", "--batch-size", "abc"], "Invalid value for '--batch-size'"),
    (["export"], "Missing argument"),
])
def test_usage_errors_are_one_line(args, says):
    """Click's usage errors (unknown option or command, bad value, missing argument): one line, exit 2, no panel."""
    import subprocess
    import sys

    p = subprocess.run([sys.executable, "-m", "debx", *args], capture_output=True, text=True, timeout=120)
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("debx: error:") and says in lines[0], p.stderr
    assert "--help" in lines[0] and "Traceback" not in p.stderr and "╭" not in p.stderr
