"""Run the real `debx` CLI (debx.cli.main: one-line errors, exit codes) with the calibrate and eval commands
registered even before debx/cli/__init__.py lists them. Used by the CLI tests as `python cli_driver.py ARGS`."""

import debx.cli as cli
from debx.cli import calibrate, eval as eval_cli

_registered = {c.name for c in cli.app.registered_commands}
for _name, _mod in (("calibrate", calibrate), ("eval", eval_cli)):
    if _name not in _registered:
        cli.app.command(_name, help=_mod.command.__doc__)(_mod.command)

if __name__ == "__main__":
    cli.main()
