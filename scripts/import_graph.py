#!/usr/bin/env python
"""The import graph of debx/, exporters/ and calib/, read with `ast` (imports at module level AND inside functions).

    python scripts/import_graph.py            # layers, circles and upward imports; exit 1 when the rules break
    python scripts/import_graph.py --edges    # every internal import, one per line

The rules (held by tests/test_architecture.py):
  - no import circles (a strongly connected component of more than one module, or a module importing itself);
  - imports run downhill: a module imports modules of its own layer or below. At most MAX_UPWARD imports run back up.

Only imports written as import statements count; names looked up by string (e.g. the runner registry
`debx.runtimes.RUNNERS`, imported with importlib) are the deliberate plug-in points and are not edges here.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("debx", "exporters", "calib")
# folders outside debx/ that install as its subpackages (pyproject.toml [tool.setuptools.package-dir])
INSTALLED_AS = {"exporters": "debx.exporters", "calib": "debx.calib"}
MAX_UPWARD = 1
# Imports inside functions are how debx stays quick to start (`debx --help`, `import debx`) and how `train`/`export`
# run without a GPU stack: one is deferred FOR A REASON when the module it reaches pulls in one of these at module
# level (itself or through the internal modules it imports at module level). Any other internal import belongs at the
# top of the file, where a reader sees what the module stands on.
HEAVY = ("torch", "onnx", "onnxruntime", "onnxruntime_extensions", "onnxscript", "transformers", "triton", "tensorrt",
         "sklearn", "scipy", "matplotlib", "sentencepiece", "safetensors", "numpy", "rich", "typer")

# The layers, ground first. A module belongs to the first layer with a prefix that matches it (a prefix ending in "."
# covers a whole package; otherwise the name must match exactly).
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    # facts and helpers every floor uses: the op contract, errors, artifact files, the device
    ("ground", ("debx", "debx.contract", "debx.errors", "debx.artifacts", "debx.device", "debx.verbosity")),
    # the model and what feeds it: tasks and their metrics, tokenizer, checkpoints, presets, training, GPU kernels
    ("model", ("debx.relpos", "debx.model", "debx.kernels", "debx.kernels.", "debx.tasks", "debx.metrics", "debx.tokenizer",
               "debx.checkpoint", "debx.presets", "debx.variants", "debx.train")),
    # turning a model into deployable files and running them: export, calibration, the runners, the TensorRT
    # plan builder (debx.engine imports only the ground floor; the TensorRT runner loads plans with its helpers)
    ("backends", ("debx.exporters", "debx.exporters.", "debx.calib", "debx.calib.", "debx.runtimes", "debx.runtimes.", "debx.engine")),
    # flows that put backends together: evaluation, the accuracy gate, benchmarks, reports
    ("flows", ("debx.evaluate", "debx.gate", "debx.bench", "debx.opbench", "debx.optimum_baseline", "debx.report",
               "debx.triton")),
    # the Python API (`from debx import export, ...`: the package root reaches it by name, importlib, lazily)
    ("api", ("debx.api",)),
    ("cli", ("debx.cli", "debx.cli.", "debx.__main__")),
]


def layer_of(module: str) -> int:
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if module == p or (p.endswith(".") and module.startswith(p)):
                return i
    raise KeyError(f"{module}: in no layer of scripts/import_graph.py LAYERS (add it there)")


def modules(root: Path = ROOT) -> dict[str, Path]:
    """Module name -> file, for every .py file of the packages."""
    out = {}
    for pkg in PACKAGES:
        for path in sorted((root / pkg).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            parts[0] = INSTALLED_AS.get(parts[0], parts[0])
            out[".".join(parts)] = path
    return out


@dataclass(frozen=True)
class Edge:
    src: str
    dst: str
    line: int
    in_function: bool

    def __str__(self) -> str:
        where = "inside a function" if self.in_function else "module level"
        return f"{self.src} -> {self.dst}  ({source_file(self.src)}:{self.line}, {where})"


def source_file(module: str, root: Path = ROOT) -> str:
    """The file of an internal module, relative to the checkout (exporters/x.py for debx.exporters.x)."""
    path = modules(root).get(module)
    return str(path.relative_to(root)) if path else module.replace(".", "/") + ".py"


def _resolve(name: str, known: dict[str, Path]) -> str | None:
    """The internal module an imported dotted name lands in (the longest known prefix), or None if external."""
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        cand = ".".join(parts[:n])
        if cand in known:
            return cand
    return None


def external_imports(root: Path = ROOT) -> dict[str, set[str]]:
    """Module -> the top-level external packages it imports at module level (outside functions)."""
    known = modules(root)
    out: dict[str, set[str]] = {}
    for mod, path in known.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        names: set[str] = set()
        for node in tree.body:  # module level only (a try/if at module level counts too)
            for sub in ast.walk(node):
                if isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    continue
                if isinstance(sub, ast.Import):
                    names |= {a.name.split(".")[0] for a in sub.names}
                elif isinstance(sub, ast.ImportFrom) and not sub.level and sub.module:
                    names.add(sub.module.split(".")[0])
        out[mod] = {n for n in names if _resolve(n, known) is None}
    return out


def heavy_at_import(es: list[Edge], root: Path = ROOT) -> dict[str, set[str]]:
    """Module -> the HEAVY packages importing it loads (through its module-level internal imports, transitively)."""
    ext = external_imports(root)
    below: dict[str, list[str]] = {}
    for e in es:
        if not e.in_function:
            below.setdefault(e.src, []).append(e.dst)
    out: dict[str, set[str]] = {}

    def visit(m: str, seen: set[str]) -> set[str]:
        if m in out:
            return out[m]
        seen.add(m)
        heavy = {n for n in ext.get(m, ()) if n in HEAVY}
        for d in below.get(m, ()):
            if d not in seen:
                heavy |= visit(d, seen)
        out[m] = heavy
        return heavy

    for m in ext:
        visit(m, set())
    return out


def needless_deferred(es: list[Edge], root: Path = ROOT) -> list[Edge]:
    """Imports inside functions of modules that load no HEAVY package: nothing is saved by deferring them."""
    heavy = heavy_at_import(es, root)
    return [e for e in es if e.in_function and not heavy.get(e.dst)]


def edges(root: Path = ROOT) -> list[Edge]:
    known = modules(root)
    out: list[Edge] = []
    for mod, path in known.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        is_pkg = path.name == "__init__.py"
        parents: dict[ast.AST, ast.AST] = {}
        for node in ast.walk(tree):
            for child in ast.iter_child_nodes(node):
                parents[child] = node

        def in_function(node: ast.AST) -> bool:
            while node in parents:
                node = parents[node]
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                    return True
            return False

        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    prefix = ".".join(base + ([node.module] if node.module else []))
                else:
                    prefix = node.module or ""
                # `from pkg import sub` imports the submodule when there is one, else a name of pkg itself
                targets = [f"{prefix}.{a.name}" if f"{prefix}.{a.name}" in known else prefix for a in node.names]
            for t in targets:
                dst = _resolve(t, known)
                if dst is not None and dst != mod:
                    out.append(Edge(mod, dst, node.lineno, in_function(node)))
    # one edge per (src, dst): the first occurrence
    seen, unique = set(), []
    for e in sorted(out, key=lambda e: (e.src, e.dst, e.line)):
        if (e.src, e.dst) not in seen:
            seen.add((e.src, e.dst))
            unique.append(e)
    return unique


def circles(es: list[Edge]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    graph: dict[str, list[str]] = {}
    for e in es:
        graph.setdefault(e.src, []).append(e.dst)
        graph.setdefault(e.dst, [])
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(out)


def upward(es: list[Edge]) -> list[Edge]:
    """Imports from a lower layer into a higher one."""
    return [e for e in es if layer_of(e.dst) > layer_of(e.src)]


def report(es: list[Edge]) -> str:
    lines = ["layers (ground first; a module may import its own layer and those below):"]
    for i, (name, prefixes) in enumerate(LAYERS):
        lines.append(f"  {i} {name:9s} {', '.join(p.rstrip('.') + ('.*' if p.endswith('.') else '') for p in prefixes)}")
    inside = sum(e.in_function for e in es)
    needless = needless_deferred(es)
    lines.append(f"{len(es)} internal imports ({inside} inside functions: {inside - len(needless)} defer a heavy "
                 f"package, {len(needless)} defer nothing)")
    for e in needless:
        lines.append(f"  defers nothing: {e}")
    cs = circles(es)
    lines.append(f"{len(cs)} import circle(s)")
    for c in cs:
        members = set(c)
        lines.append("  circle: " + " <-> ".join(c))
        for e in es:
            if e.src in members and e.dst in members:
                lines.append(f"    {e}")
    ups = upward(es)
    lines.append(f"{len(ups)} upward import(s) (at most {MAX_UPWARD} allowed)")
    for e in ups:
        lines.append(f"  {LAYERS[layer_of(e.src)][0]} -> {LAYERS[layer_of(e.dst)][0]}: {e}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    es = edges()
    if "--edges" in argv:
        for e in es:
            print(e)
        return 0
    print(report(es))
    return 0 if not circles(es) and len(upward(es)) <= MAX_UPWARD else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
