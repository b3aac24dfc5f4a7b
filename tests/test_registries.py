"""Every registry is plain and in one place, and nothing registered goes untested: adding a preset, a CLI command,
a runtime backend or a TensorRT plugin without its test fixture fails here. (Tasks and model variants have their own
checks in tests/test_tasks.py and tests/exporters/test_variants_have_fixtures.py.)"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"


def _test_sources() -> str:
    return "\n".join(p.read_text() for p in TESTS.rglob("*.py") if p.name != Path(__file__).name)


def registered_plugins() -> list[str]:
    cmake = (ROOT / "plugins" / "CMakeLists.txt").read_text()
    block = re.search(r"set\(DEBX_PLUGINS\s+([^)]*)\)", cmake).group(1)
    return [w for w in block.split() if not w.startswith("#")]


@pytest.mark.parametrize("plugin", registered_plugins())
def test_every_plugin_has_a_folder_readme_and_tests(plugin):
    folder = ROOT / "plugins" / plugin
    for name in (f"{plugin}Kernel.cu", f"{plugin}Plugin.h", f"{plugin}Plugin.cpp", "README.md"):
        assert (folder / name).is_file(), f"plugins/{plugin}/{name} is missing"
    kernel = (folder / f"{plugin}Kernel.cu").read_text() + (folder / f"{plugin}Kernel.h").read_text()
    assert "nvinfer1" not in kernel and "#include <NvInfer" not in kernel, "kernels must not use TensorRT types"
    assert plugin in (ROOT / "plugins" / "tests").joinpath(f"{plugin}PluginTest.cpp").read_text()
    assert any(plugin.lower() in p.name.lower() or "attention_host" in p.name
               for p in (TESTS / "plugins").glob("test_*.py")), f"no Python test of plugin {plugin}"


def test_every_cli_command_has_help_and_a_test():
    from debx.cli import COMMANDS

    sources = _test_sources()
    for name, module in COMMANDS:
        p = subprocess.run([sys.executable, "-m", "debx", name, "--help"], capture_output=True, text=True)
        assert p.returncode == 0 and "Usage" in p.stdout, (name, p.stderr)
        assert re.search(rf"""["']{name}["']""", sources), f"no test runs `debx {name}`"


def test_every_runtime_backend_has_a_test():
    from debx.runtimes import RUNNERS

    sources = _test_sources()
    for backend, target in RUNNERS.items():
        cls = target.split(":")[1]
        assert cls in sources, f"runner {backend} ({cls}) has no test"


@pytest.mark.parametrize("name", ["tiny", "xsmall"])
def test_presets_build_and_run(name):
    from debx.model import DebertaForSequenceClassification, init_weights
    from debx.presets import PRESETS, preset

    assert {"tiny", "xsmall", "small", "base", "large"} <= set(PRESETS)
    cfg = preset(name, vocab_size=500)
    model = init_weights(DebertaForSequenceClassification(cfg)).eval()
    ids = torch.randint(4, 500, (2, 9))
    with torch.no_grad():
        assert model(ids, torch.ones_like(ids)).shape == (2, 2)


def test_all_presets_are_v3_shapes():
    from debx.presets import PRESETS

    for name, cfg in PRESETS.items():
        assert cfg.model_type == "deberta-v2" and cfg.share_att_key and cfg.buckets > 0, name
        assert cfg.hidden_size % cfg.num_attention_heads == 0, name
