"""The import graph of debx/, exporters/ and calib/ runs downhill (issue 13).

The graph, the layers and the rules live in scripts/import_graph.py (run it to see the graph: `python
scripts/import_graph.py`). Imports inside functions count as much as those at module level.
"""

from __future__ import annotations

import importlib.util
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _load():
    spec = importlib.util.spec_from_file_location("import_graph", ROOT / "scripts" / "import_graph.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["import_graph"] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


ig = _load()

# Violations that remain, each named; this list may only shrink.
KNOWN_CIRCLES: list[list[str]] = []
KNOWN_UPWARD: set[tuple[str, str]] = set()


@pytest.fixture(scope="module")
def edges():
    return ig.edges()


def test_every_module_is_in_a_layer(edges):
    missing = []
    for name in ig.modules():
        try:
            ig.layer_of(name)
        except KeyError:
            missing.append(name)
    assert not missing, f"modules in no layer of scripts/import_graph.py: {missing}"


def test_no_new_import_circles(edges):
    new = [c for c in ig.circles(edges) if c not in KNOWN_CIRCLES]
    assert not new, "new import circle(s):\n" + ig.report(edges)


def test_imports_run_downhill(edges):
    ups = ig.upward(edges)
    new = [e for e in ups if (e.src, e.dst) not in KNOWN_UPWARD]
    assert not new, "new upward import(s):\n" + "\n".join(map(str, new)) + "\n\n" + ig.report(edges)
    assert len(ups) <= max(ig.MAX_UPWARD, len(KNOWN_UPWARD)), ig.report(edges)


def test_imports_inside_functions_defer_a_heavy_package(edges):
    """An internal import is deferred into a function only when importing it at the top would load a heavy stack
    (torch, onnx, onnxruntime, transformers, ...; scripts/import_graph.HEAVY): the others sit at the top of the file."""
    needless = ig.needless_deferred(edges)
    assert not needless, "imports inside functions that defer nothing:\n" + "\n".join(map(str, needless))


def test_the_checker_tells_deferred_from_needlessly_deferred(tmp_path):
    for pkg in ig.PACKAGES:
        (tmp_path / pkg).mkdir()
        (tmp_path / pkg / "__init__.py").write_text("")
    (tmp_path / "debx" / "heavy.py").write_text("import torch\n")
    (tmp_path / "debx" / "via.py").write_text("from debx import heavy\n")  # heavy through another module
    (tmp_path / "debx" / "light.py").write_text("import os\n")
    (tmp_path / "debx" / "user.py").write_text(textwrap.dedent("""\
        def f():
            from debx import via
            from debx import light
        """))
    es = ig.edges(tmp_path)
    assert [(e.src, e.dst) for e in ig.needless_deferred(es, tmp_path)] == [("debx.user", "debx.light")]


def test_known_violations_are_still_there(edges):
    """A fixed violation leaves the known lists (so they only shrink)."""
    gone_c = [c for c in KNOWN_CIRCLES if c not in ig.circles(edges)]
    ups = {(e.src, e.dst) for e in ig.upward(edges)}
    gone_u = sorted(KNOWN_UPWARD - ups)
    assert not gone_c and not gone_u, f"fixed, remove from the known lists: {gone_c} {gone_u}"


def test_the_checker_sees_circles_and_upward_imports_inside_functions(tmp_path):
    """The checker itself: a circle through an import inside a function, and an upward import, are found."""
    for pkg in ig.PACKAGES:
        (tmp_path / pkg).mkdir()
        (tmp_path / pkg / "__init__.py").write_text("")
    (tmp_path / "debx" / "errors.py").write_text("from debx import gate\n")  # ground -> flows
    (tmp_path / "debx" / "gate.py").write_text("import os\n")
    (tmp_path / "exporters" / "a.py").write_text("from . import b\n")
    (tmp_path / "exporters" / "b.py").write_text(textwrap.dedent("""\
        def f():
            from debx.exporters.a import thing
        """))
    es = ig.edges(tmp_path)
    assert ig.circles(es) == [["debx.exporters.a", "debx.exporters.b"]]
    assert [(e.src, e.dst, e.in_function) for e in es if e.src == "debx.exporters.b"] == [("debx.exporters.b", "debx.exporters.a", True)]
    assert [(e.src, e.dst) for e in ig.upward(es)] == [("debx.errors", "debx.gate")]
