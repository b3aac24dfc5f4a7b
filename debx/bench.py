"""`debx bench`: side-by-side latency and throughput of several engines, in one process, on the same inputs.

Method (what the numbers mean):
  * every engine is loaded first; a failure to load or build any requested engine stops the run before timing, with
    one line saying why (an engine is never silently dropped);
  * for each (batch, seq) shape: the same random token ids (seeded, all positions real, below 1000 and below the
    smallest vocabulary among the entries) go to every engine;
    `warmup` untimed calls per engine, then timed calls in round-robin turns (engine A, B, C, A, B, C, ... with the
    starting engine rotating every round), so that machine noise and thermal drift hit all engines alike. Each turn
    is one untimed settling call followed by `block` timed calls (default 3): thread pools of the engine that ran
    before (ONNX Runtime's and OpenMP's workers spin for a while after a call) would otherwise still hold the cores
    when the next engine starts, which measurably slows whichever engine follows (on 2 cores, by up to 40%);
  * latency percentiles (p50/p90/p99) are over the wall-clock time of single `infer` calls (inputs already in
    NumPy, outputs converted to NumPy: what a caller pays); throughput is batch / p50 (sequences/s) and
    batch * seq / p50 (tokens/s);
  * memory: `load_mb` is the growth of the process's resident set (RSS) while the engine was loaded (weights,
    session, graph optimisation); `run_mb` is the further RSS growth during that engine's warm-up calls at a shape
    (activation buffers and arenas; 0 when memory reserved at an earlier, larger shape is reused). Both are RSS
    deltas of the shared process, so allocator reuse between engines can hide memory: treat them as indications;
  * peak memory, per entry, measured apart (`peak_rss`, on by default): each entry is loaded again in a child
    process of its own, which runs `warmup` + 3 calls at every shape, and reports its peak resident set
    (VmHWM, the high-water mark of its own memory; see peak_mb): `peak_rss_mb` = loading and running, `load_peak_mb` = up to the end of loading,
    `imports_mb` = the runtime's libraries alone (the child's peak before loading; included in both). Numbers of
    different entries do not mix, and the child measures what a service with this one model pays. Next to them,
    `disk_mb`: the size on disk of the file with its external weights (a checkpoint folder: its weight files);
  * `ratio` is p50 latency divided by the reference entry's p50 at the same shape (the first entry unless
    `ratio_to` names another): below 1 is faster;
  * `max_abs_diff` is the largest difference of the engine's output from the first entry's output on the same
    inputs (put the FP32 reference first; a guard against "fast but wrong", the accuracy gate is `debx eval`).

Engines: a checkpoint folder (the debx PyTorch model, eager FP32), any .onnx file (ONNX Runtime), a TensorRT plan
(when TensorRT is present), and the baselines `pytorch` (debx PyTorch), `hf` (transformers PyTorch model), and
`optimum` (Optimum's ONNX export, optimized, FP32 and dynamic INT8; see debx/optimum_baseline.py).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from debx.artifacts import artifact_source, atomic_dir, check_writable, package_versions, read_sidecar, stale_reason
from debx.contract import INPUT_NAMES, input_names
from debx.errors import ConfigError, DebxError, MissingDependencyError
from debx.runtimes import backend_for, runner_for
from debx.runtimes.rewrites import summary as rewrite_summary

COMPARE = ("pytorch", "hf", "optimum", "optimum-fp32", "optimum-int8")
FEED_VOCAB = 1000  # random input ids are drawn below this (and below every entry's vocabulary)
FORMAT = "debx-bench/1"


# ---------------------------------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class BenchConfig:
    models: list[Path] = field(default_factory=list)  # checkpoint folders: the debx PyTorch model
    engines: list[Path] = field(default_factory=list)  # .onnx / .plan files
    batches: tuple[int, ...] = (1,)
    seqs: tuple[int, ...] = (128,)
    threads: int | None = None  # intra-op threads for every engine (None: each runtime's default)
    compare: tuple[str, ...] = ()  # pytorch, hf, optimum (= optimum-fp32 + optimum-int8)
    warmup: int = 3
    iters: int | None = 20  # timed calls per engine and shape (None: use `seconds`)
    seconds: float | None = None  # time budget per shape, shared by all engines (at least `min_iters` calls each)
    min_iters: int = 3
    block: int = 3  # timed calls per turn, after one untimed settling call
    ratio_to: str | None = None  # engine name for the ratio column (default: the first entry)
    seed: int = 0
    json_path: Path | None = None
    plot_path: Path | None = None
    cache_dir: Path | None = None  # exported baselines (default: $DEBX_CACHE or ~/.cache/debx)
    device: str | None = None  # PyTorch entries (--model, pytorch, hf): cpu | cuda | auto (None: auto)
    provider: str | None = None  # ONNX Runtime entries: cpu | cuda | tensorrt (None: cpu)
    peak_rss: bool = True  # each entry's peak RSS, measured in a child process of its own (see the module doc)

    def __post_init__(self) -> None:
        self.models = [Path(p) for p in self.models]
        self.engines = [Path(p) for p in self.engines]
        self.batches = tuple(int(b) for b in self.batches)
        self.seqs = tuple(int(s) for s in self.seqs)
        compare = []
        for c in self.compare:
            if c not in COMPARE:
                raise ConfigError(f"--compare {c!r}: choose from {', '.join(COMPARE[:3])}")
            compare += ["optimum-fp32", "optimum-int8"] if c == "optimum" else [c]
        self.compare = tuple(dict.fromkeys(compare))
        if not self.models and not self.engines:
            raise ConfigError("nothing to benchmark: give at least one --model CKPT_DIR or --engine FILE")
        if not self.batches or not self.seqs or min(self.batches) < 1 or min(self.seqs) < 1:
            raise ConfigError("--batch and --seq need positive integers, e.g. --batch 1,8 --seq 128")
        if self.device is not None:
            from debx.device import check_device_name

            self.device = check_device_name(self.device)
        if self.provider is not None:
            from debx.runtimes.onnxruntime import check_provider_name

            self.provider = check_provider_name(self.provider)
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"--threads must be >= 1, got {self.threads}")
        if self.block < 1:
            raise ConfigError(f"--block must be >= 1, got {self.block}")
        if self.warmup < 0:
            raise ConfigError(f"--warmup must be >= 0, got {self.warmup}")
        if self.iters is not None and self.seconds is not None:
            raise ConfigError("give --iters or --seconds, not both")
        if self.iters is None and self.seconds is None:
            self.iters = 20
        if self.iters is not None and self.iters < 1:
            raise ConfigError(f"--iters must be >= 1, got {self.iters}")
        if self.seconds is not None and self.seconds <= 0:
            raise ConfigError(f"--seconds must be > 0, got {self.seconds}")
        for p in self.models:
            if not p.is_dir():
                raise ConfigError(f"--model {p}: not a checkpoint folder")
        for p in self.engines:
            if not p.is_file():
                raise ConfigError(f"--engine {p}: no such file")
        for flag, p in (("--json", self.json_path), ("--plot", self.plot_path)):
            if p is not None:
                check_writable(p, flag)


def parse_int_list(text: str, flag: str) -> tuple[int, ...]:
    """'1,8,32' -> (1, 8, 32); one clear line on anything else."""
    try:
        values = tuple(int(x) for x in str(text).split(",") if x.strip())
    except ValueError:
        raise ConfigError(f"{flag} {text!r}: expected comma-separated integers, e.g. 1,8,32") from None
    if not values or min(values) < 1:
        raise ConfigError(f"{flag} {text!r}: expected positive integers, e.g. 1,8,32")
    return values


# ---------------------------------------------------------------------------------------------------------------------
# Engines: anything with activate / infer / deactivate
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class Engine:
    """One benchmarked entry. `runner` follows debx.runtimes.base.Runner (activate/infer/deactivate/describe)."""

    name: str
    kind: str  # debx-pytorch | hf-pytorch | onnxruntime | tensorrt | optimum-fp32 | optimum-int8
    runner: object
    path: str = ""
    precision: str = "fp32"
    max_seq_len: int | None = None
    vocab_size: int | None = None  # rows of the word-embedding table: the random ids stay below it (None: unknown)
    load_mb: float = 0.0
    info: dict = field(default_factory=dict)
    disk_mb: float | None = None  # size on disk (file + external weights; a checkpoint folder: its weight files)
    memory: dict = field(default_factory=dict)  # peak_rss_child()'s numbers, or {"error": why} (empty: not measured)


class HFRunner:
    """The transformers PyTorch model of a checkpoint folder (eager, FP32), with the Runner interface."""

    name = "hf"

    def __init__(self, path: Path, threads: int | None = None, device: str | None = None):
        from debx.device import check_device_name

        self.path, self.threads, self.model, self.type_vocab = Path(path), threads, None, 0
        self.device_name, self.device = check_device_name(device or "cpu"), None

    def activate(self):
        import torch
        import transformers

        from debx.device import resolve_device
        from debx.tokenizer import _quiet_transformers

        self.device = resolve_device(self.device_name)
        _quiet_transformers()
        if self.threads:
            torch.set_num_threads(self.threads)
        cfg = transformers.AutoConfig.from_pretrained(str(self.path))
        arch = (getattr(cfg, "architectures", None) or [""])[0]
        auto = (transformers.AutoModelForSequenceClassification if arch.endswith("SequenceClassification")
                else transformers.AutoModelForMaskedLM if arch.endswith("MaskedLM") else transformers.AutoModel)
        self.model = auto.from_pretrained(str(self.path)).to(self.device).eval()
        self.type_vocab = int(getattr(cfg, "type_vocab_size", 0) or 0)
        return self

    @property
    def input_names(self) -> list[str]:
        return input_names(self.type_vocab)

    def infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        args = {k: torch.from_numpy(np.ascontiguousarray(feeds[k], dtype=np.int64)).to(self.device)
                for k in self.input_names}
        with torch.inference_mode():
            out = self.model(**args)
        name = "logits" if hasattr(out, "logits") and out.logits is not None else "last_hidden_state"
        return {name: getattr(out, name).float().cpu().numpy()}

    def deactivate(self):
        self.model = None

    def describe(self) -> dict:
        import torch
        import transformers

        from debx.device import describe_device

        return {"runner": "hf", "backend": f"transformers {transformers.__version__} / torch {torch.__version__}",
                "precision": "fp32", "checkpoint": str(self.path),
                "device": describe_device(self.device) if self.device is not None else self.device_name}


def rss_mb() -> float:
    """Resident set size of this process in MiB (Linux /proc; elsewhere the peak from getrusage)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _activate(engine: Engine) -> Engine:
    before = rss_mb()
    try:
        engine.runner.activate()
    except DebxError:
        raise
    except ImportError as e:
        raise MissingDependencyError(f"{engine.name}: cannot load ({e})") from None
    except Exception as e:  # a runtime refusing a file: one line, not a traceback
        raise ConfigError(f"{engine.name}: cannot load {engine.path or engine.kind}: "
                          f"{str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__}") from None
    engine.load_mb = max(0.0, rss_mb() - before)
    try:
        engine.info = dict(engine.runner.describe())
    except Exception:  # describe is informative only
        engine.info = {}
    return engine


def _preimport(engines: Sequence[Engine]) -> None:
    """Import the runtimes before any engine loads, so that no engine's load_mb includes a library import."""
    kinds = {e.kind for e in engines}
    mods = (["torch"] if kinds & {"debx-pytorch", "hf-pytorch"} else []) + (["transformers"] if "hf-pytorch" in kinds else [])
    if kinds - {"debx-pytorch", "hf-pytorch", "tensorrt"}:
        mods.append("onnxruntime")
    for m in mods:
        try:
            __import__(m)
        except ImportError:
            pass  # the engine's own load reports it


def _checkpoint_config(path: Path | None):
    """The DebertaConfig of a checkpoint folder, or None when it is not one (loading it says why)."""
    from debx.checkpoint import read_config

    if path is None or not Path(path).is_dir():
        return None
    try:
        return read_config(path)[0]
    except DebxError:
        return None


def _checkpoint_limit(path: Path) -> int | None:
    """The longest sequence a checkpoint takes: its absolute position table, or None (relative positions only)."""
    cfg = _checkpoint_config(path)
    return cfg.length_limit if cfg is not None else None


def _checkpoint_vocab(path: Path | None) -> int | None:
    cfg = _checkpoint_config(path)
    return cfg.vocab_size if cfg is not None else None


def onnx_vocab_size(path: Path, model=None) -> int | None:
    """Rows of the table that `input_ids` index in an ONNX graph (the Gather of the word embeddings), read from the
    graph without its weights; None when the graph has no such constant table or cannot be read. model: the graph,
    already read without its weights."""
    from debx.artifacts import read_onnx

    if model is None:
        try:
            model = read_onnx(path)
        except DebxError:
            return None
    tables = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Gather" and len(node.input) == 2 and node.input[1] == INPUT_NAMES[0] \
                and node.input[0] in tables and tables[node.input[0]].dims:
            return int(tables[node.input[0]].dims[0])
    return None


def disk_mb(path: Path, model=None) -> float | None:
    """MiB on disk: a file with the external-data files its ONNX graph names (model: the graph, read without its
    weights), or a checkpoint folder's weight files (*.safetensors, *.bin); None when there is nothing to measure."""
    path = Path(path)
    if path.is_dir():
        files = {*path.glob("*.safetensors"), *path.glob("*.bin")}
    elif path.is_file():
        files = {path}
        if model is not None:
            from onnx.external_data_helper import ExternalDataInfo, uses_external_data

            files |= {path.parent / ExternalDataInfo(t).location for t in model.graph.initializer
                      if uses_external_data(t)}
    else:
        return None
    files = [f for f in files if f.is_file()]
    return sum(f.stat().st_size for f in files) / 2**20 if files else None


def feed_vocab(engines: Sequence[Engine]) -> int:
    """The id range of the random inputs: ids below 1000 (what every bench drew before), and below the smallest
    vocabulary among the entries, so that a model with a small vocabulary is timed rather than indexed out of range."""
    known = [e.vocab_size for e in engines if e.vocab_size]
    return min([FEED_VOCAB, *known])


def torch_engine(path: Path, threads: int | None, name: str = "debx-pytorch", device: str | None = None) -> Engine:
    """device: cpu | cuda | auto (None: auto, cuda when PyTorch sees a GPU)."""
    from debx.runtimes.torch import TorchRunner

    return Engine(name, "debx-pytorch", TorchRunner(path, threads=threads, device=device or "auto"), str(path), "fp32",
                  _checkpoint_limit(path), _checkpoint_vocab(path), disk_mb=disk_mb(path))


def hf_engine(path: Path, threads: int | None, device: str | None = None) -> Engine:
    return Engine("hf-pytorch", "hf-pytorch", HFRunner(path, threads, device or "auto"), str(path), "fp32",
                  _checkpoint_limit(path), _checkpoint_vocab(path), disk_mb=disk_mb(path))


def file_engine(path: Path, threads: int | None, name: str | None = None, kind: str | None = None,
                provider: str | None = None) -> Engine:
    """An .onnx file or TensorRT plan, through the one runner constructor (debx.runtimes.runner_for). threads and
    provider (the ONNX Runtime execution provider: cpu | cuda | tensorrt; None: cpu) apply to the runtimes that
    take them (a TensorRT plan has neither)."""
    backend = backend_for(path)
    try:
        runner = runner_for(path, where_taken=("threads", "provider"), threads=threads, provider=provider)
    except ImportError as e:
        raise MissingDependencyError(f"--engine {path}: the {backend} runtime is not available ({e})") from None
    side = read_sidecar(path)
    precision = side.get("precision") or ("int8" if "int8" in path.name else "fp32")
    source = artifact_source(path, side).checkpoint
    graph = None
    if backend == "onnxruntime":
        from debx.artifacts import read_onnx

        try:
            graph = read_onnx(path)  # the graph without its weights
        except DebxError:  # loading the engine says why
            pass
    vocab = onnx_vocab_size(path, graph) if graph is not None else None
    if vocab is None:  # a TensorRT plan, or a graph without a constant word-embedding table: its source checkpoint
        vocab = _checkpoint_vocab(source)
    return Engine(name or path.name, kind or backend, runner, str(path), precision, file_length_limit(side, source),
                  vocab, disk_mb=disk_mb(path, graph))


def file_length_limit(sidecar: dict, source: Path | None) -> int | None:
    """The longest sequence an exported file takes: its pinned sequence length, else what its source checkpoint takes
    (absolute position embeddings: max_position_embeddings; relative positions only: any length, as `debx eval`
    decides). The sidecar's shapes.max_seq_len is only the longest length validated at export; it stands in as the
    limit only when the source checkpoint cannot be read."""
    shapes = sidecar.get("shapes") if isinstance(sidecar.get("shapes"), dict) else {}
    if isinstance(shapes.get("sequence"), int):
        return shapes["sequence"]
    cfg = _checkpoint_config(source)
    if cfg is not None:
        return cfg.length_limit
    limit = shapes.get("max_seq_len")
    return limit if isinstance(limit, int) else None


def provenance_notes(cfg: BenchConfig) -> list[str]:
    """A warning per --engine that was not made from the checkpoint it is timed beside (a --model, else the folder
    its sidecar names, as that folder is now): its max_abs_diff would compare two different models."""
    from debx.checkpoint import fingerprint

    models = {}
    for m in cfg.models:
        try:
            models[m] = fingerprint(m)
        except DebxError:  # not a checkpoint: loading it says so
            pass
    notes = []
    for e in cfg.engines:
        src = artifact_source(e)
        if src.fingerprint is None or src.fingerprint in models.values():
            continue
        if models:  # compare with the --model at the recorded path, else with the first
            model = next((m for m in models if src.checkpoint and m.resolve() == src.checkpoint.resolve()),
                         next(iter(models)))
            why = stale_reason(e, model, models[model])
        else:
            why = stale_reason(e)
        if why:
            notes.append(f"warning: {why}")
    return notes


def source_checkpoint(cfg: BenchConfig) -> Path | None:
    """The checkpoint the baselines are built from: the first --model, else the first engine's sidecar source."""
    if cfg.models:
        return cfg.models[0]
    for e in cfg.engines:
        src = artifact_source(e).checkpoint
        if src is not None and src.is_dir():
            return src
    return None


# ---------------------------------------------------------------------------------------------------------------------
# Optimum baselines (built once per checkpoint fingerprint, cached)
# ---------------------------------------------------------------------------------------------------------------------


def cache_root(cfg: BenchConfig | None = None) -> Path:
    if cfg is not None and cfg.cache_dir is not None:
        return Path(cfg.cache_dir)
    return Path(os.environ.get("DEBX_CACHE", Path.home() / ".cache" / "debx"))


def optimum_python() -> Path | None:
    """The Python of the Optimum side venv: $DEBX_OPTIMUM_PYTHON, $DEBX_OPTIMUM_VENV, or <repo>/.venv-optimum."""
    if os.environ.get("DEBX_OPTIMUM_PYTHON"):
        return Path(os.environ["DEBX_OPTIMUM_PYTHON"])
    venv = os.environ.get("DEBX_OPTIMUM_VENV") or str(Path(__file__).resolve().parent.parent / ".venv-optimum")
    py = Path(venv) / "bin" / "python"
    return py if py.exists() else None


def _optimum_in_process() -> bool:
    try:
        import optimum.exporters.onnx  # noqa: F401
        import optimum.onnxruntime  # noqa: F401
    except Exception:  # ImportError, or a version clash raising something else at import
        return False
    return True


def optimum_baselines(checkpoint: Path, cache: Path, head: str = "classification",
                      runner: Callable[..., subprocess.CompletedProcess] = subprocess.run) -> dict:
    """{"fp32": path, "int8": path, ...}: Optimum's export + O2 optimization + dynamic INT8 of `checkpoint`,
    built in-process when Optimum imports here, else with the side venv's Python; cached by fingerprint."""
    from debx import optimum_baseline
    from debx.checkpoint import fingerprint

    task = optimum_baseline.TASKS.get(head, "text-classification")
    key = f"{fingerprint(checkpoint)}-{task}"
    target = cache / "optimum" / key
    done = target / "result.json"
    if done.is_file():
        result = json.loads(done.read_text())
        if all(Path(result[k]).is_file() for k in ("fp32", "int8")):
            return result
    with atomic_dir(target) as work:  # built in a temporary sibling, swapped into place when complete
        if _optimum_in_process():
            result = optimum_baseline.build(checkpoint, work, task)
        else:
            py = optimum_python()
            if py is None:
                raise MissingDependencyError(
                    "--compare optimum needs Optimum (optimum-onnx[onnxruntime]), which cannot be imported here and "
                    "has no side venv: run `bash scripts/optimum_env.sh` (creates .venv-optimum) or set "
                    "DEBX_OPTIMUM_VENV")
            proc = runner([str(py), str(Path(optimum_baseline.__file__).resolve()), str(checkpoint), str(work),
                           "--task", task], capture_output=True, text=True)
            line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("DEBX-OPTIMUM ")), None)
            if proc.returncode != 0 or line is None:
                err = [ln for ln in (proc.stderr or "").strip().splitlines() if ln.strip()]
                raise MissingDependencyError(
                    f"--compare optimum: building the Optimum baseline failed in {py} (exit {proc.returncode}): "
                    f"{err[-1][:240] if err else 'no output'}")
            result = json.loads(line[len("DEBX-OPTIMUM "):])
        # paths are inside `work`: re-root them at the final folder before moving it into place
        for k in ("fp32", "int8"):
            result[k] = str(target / Path(result[k]).relative_to(work))
        (work / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


# ---------------------------------------------------------------------------------------------------------------------
# Building the engine list
# ---------------------------------------------------------------------------------------------------------------------


def _head_of(checkpoint: Path) -> str:
    from debx.checkpoint import HEAD_OF_ARCHITECTURE

    try:
        arch = (json.loads((checkpoint / "config.json").read_text()).get("architectures") or [""])[0]
    except (OSError, json.JSONDecodeError):
        arch = ""
    return HEAD_OF_ARCHITECTURE.get(arch, "embeddings")


def build_engines(cfg: BenchConfig) -> list[Engine]:
    """Entries in order: --model folders, --engine files, then the --compare baselines (duplicates dropped)."""
    engines: list[Engine] = []
    names: set[str] = set()

    def add(e: Engine) -> None:
        base, i = e.name, 2
        while e.name in names:
            e.name, i = f"{base}#{i}", i + 1
        names.add(e.name)
        engines.append(e)

    for i, p in enumerate(cfg.models):
        add(torch_engine(p, cfg.threads, "debx-pytorch" if len(cfg.models) == 1 else f"debx-pytorch:{p.name}",
                         cfg.device))
    for p in cfg.engines:
        add(file_engine(p, cfg.threads, provider=cfg.provider))
    if cfg.compare:
        src = source_checkpoint(cfg)
        if src is None:
            raise ConfigError("--compare needs the source checkpoint: give --model CKPT_DIR (or an --engine whose "
                              ".json sidecar names an existing checkpoint)")
        if "pytorch" in cfg.compare and not (cfg.models and src == cfg.models[0]):
            add(torch_engine(src, cfg.threads, device=cfg.device))
        if "hf" in cfg.compare:
            add(hf_engine(src, cfg.threads, cfg.device))
        wanted = [c for c in cfg.compare if c.startswith("optimum-")]
        if wanted:
            result = optimum_baselines(src, cache_root(cfg), _head_of(src))
            for c in wanted:
                prec = c.split("-")[1]
                e = file_engine(Path(result[prec]), cfg.threads, name=c, kind=c, provider=cfg.provider)
                e.precision = prec
                e.max_seq_len = _checkpoint_limit(src)
                e.vocab_size = e.vocab_size or _checkpoint_vocab(src)
                e.info = {"recipe": result.get("recipe"), "versions": result.get("versions")}
                add(e)
    kinds = {e.kind for e in engines}
    if cfg.device is not None and not kinds & {"debx-pytorch", "hf-pytorch"}:
        raise ConfigError("--device applies to PyTorch entries (--model, --compare pytorch,hf); choose the device of "
                          "ONNX Runtime entries with --provider cpu|cuda|tensorrt")
    if cfg.provider is not None and not kinds & {"onnxruntime", "optimum-fp32", "optimum-int8"}:
        raise ConfigError("--provider applies to ONNX Runtime entries (.onnx --engine files, --compare optimum); "
                          "choose the device of PyTorch entries with --device cpu|cuda|auto")
    if cfg.provider is not None:  # a missing GPU provider stops the run before any engine loads
        from debx.runtimes.onnxruntime import providers_for

        providers_for(cfg.provider)
    return engines


# ---------------------------------------------------------------------------------------------------------------------
# Peak memory: each entry alone, in a child process
# ---------------------------------------------------------------------------------------------------------------------

PEAK_RSS_RUNS = 3  # calls per shape after the warm-up, in the child
PEAK_RSS_TAG = "DEBX-PEAK-RSS "
PEAK_RSS_TIMEOUT_S = 1800
# the large libraries a child may have loaded, reported with its numbers (an ONNX file needs only onnxruntime)
HEAVY_LIBRARIES = ("onnxruntime", "torch", "transformers", "onnxruntime_extensions", "tensorrt")


def peak_rss_spec(e: Engine, cfg: BenchConfig, vocab: int) -> dict | None:
    """What the child needs to load and run entry `e` again (None for an entry it cannot rebuild: no file)."""
    if not e.path or not Path(e.path).exists():
        return None
    return {"name": e.name, "kind": e.kind, "path": str(Path(e.path).resolve()), "threads": cfg.threads,
            "device": cfg.device, "provider": cfg.provider, "shapes": [[b, s] for b in cfg.batches for s in cfg.seqs],
            "warmup": cfg.warmup, "runs": PEAK_RSS_RUNS, "seed": cfg.seed, "vocab": vocab}


def peak_mb() -> float:
    """This process's peak resident set in MiB: VmHWM, the high-water mark of its own address space (Linux /proc).
    Not getrusage's ru_maxrss on Linux: that one survives execve, so a child started from a large parent reports at
    least the parent's resident set at the fork. Elsewhere, ru_maxrss."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    import resource

    scale = 2**20 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB elsewhere
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale


def peak_rss_child(spec: dict) -> dict:
    """In the child process: import the entry's runtime, load it, run warm-up + runs calls at every shape; its peak
    RSS at each stage in MiB. Only what that runtime needs is imported (an ONNX file does not pull in PyTorch)."""
    kind, path = spec["kind"], Path(spec["path"])
    if kind == "debx-pytorch":
        import torch  # noqa: F401  (the runtime's libraries, counted in imports_mb)

        from debx.runtimes.torch import TorchRunner

        runner = TorchRunner(path, threads=spec["threads"], device=spec["device"] or "auto")
    elif kind == "hf-pytorch":
        import torch  # noqa: F401
        import transformers  # noqa: F401

        runner = HFRunner(path, spec["threads"], spec["device"] or "auto")
    else:
        from debx.runtimes import runner_for

        if path.suffix.lower() == ".onnx":
            import onnxruntime  # noqa: F401
        runner = runner_for(path, where_taken=("threads", "provider"), threads=spec["threads"],
                            provider=spec["provider"])
    imports = peak_mb()
    runner.activate()
    loaded = peak_mb()
    for b, s in spec["shapes"]:
        feeds = make_feeds(b, s, spec["seed"], spec["vocab"])
        for _ in range(spec["warmup"] + spec["runs"]):
            runner.infer(feeds)
    return {"imports_mb": round(imports, 1), "load_peak_mb": round(loaded, 1), "peak_rss_mb": round(peak_mb(), 1),
            "rss_mb": round(rss_mb(), 1), "libraries": [m for m in HEAVY_LIBRARIES if m in sys.modules]}


def _peak_rss_main() -> int:
    """`python -c "from debx.bench import _peak_rss_main; _peak_rss_main()"` with the spec as JSON on stdin."""
    out = peak_rss_child(json.loads(sys.stdin.read()))
    sys.stdout.write(PEAK_RSS_TAG + json.dumps(out) + "\n")
    sys.stdout.flush()
    os._exit(0)  # the numbers are out: skip tearing the runtime down


def measure_peak_rss(spec: dict, runner: Callable[..., subprocess.CompletedProcess] = subprocess.run) -> dict:
    """Run `spec` in a fresh Python process (this one's interpreter, environment and debx); its numbers, or
    {"error": the child's last line} when it failed."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent)  # the debx this process runs, first on the child's path
    env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))])
    try:
        proc = runner([sys.executable, "-c", "from debx.bench import _peak_rss_main; _peak_rss_main()"],
                      input=json.dumps(spec), capture_output=True, text=True, env=env, timeout=PEAK_RSS_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {PEAK_RSS_TIMEOUT_S} s"}
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith(PEAK_RSS_TAG)), None)
    if proc.returncode != 0 or line is None:
        err = [ln for ln in (proc.stderr or "").strip().splitlines() if ln.strip()]
        return {"error": f"exit {proc.returncode}: {err[-1][:200] if err else 'no output'}"}
    return json.loads(line[len(PEAK_RSS_TAG):])


def memory_rows(report: dict) -> list[list[str]]:
    """The rows of the memory table: entry, size on disk, peak RSS while loading, peak RSS loading and running, and
    the runtime's imports (MiB; '-' where not measured)."""
    def mb(v):
        return "-" if v is None else f"{v:.0f}"

    out = []
    for e in report["engines"]:
        m = e.get("memory") or {}
        out.append([e["name"], mb(e.get("disk_mb")), mb(m.get("load_peak_mb")), mb(m.get("peak_rss_mb")),
                    mb(m.get("imports_mb")) if "error" not in m else f"failed: {m['error']}"])
    return out


MEMORY_COLUMNS = ["engine", "on disk MB", "peak RSS MB, load", "peak RSS MB, load + runs", "of it imports MB"]


# ---------------------------------------------------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------------------------------------------------


def make_feeds(batch: int, seq: int, seed: int = 0, vocab: int = FEED_VOCAB) -> dict[str, np.ndarray]:
    """Random ids in [5, vocab) (a [CLS]-like 1 first), every position a real token; token_type_ids zeros."""
    if vocab < 2:
        raise ConfigError(f"cannot draw input ids from a vocabulary of {vocab}")
    rng = np.random.default_rng(seed + 1000 * batch + seq)
    ids = rng.integers(min(5, vocab - 1), vocab, size=(batch, seq), dtype=np.int64)
    ids[:, 0] = 1
    return dict(zip(INPUT_NAMES, (ids, np.ones((batch, seq), np.int64), np.zeros((batch, seq), np.int64))))


def _first_output(out: Mapping[str, np.ndarray]) -> np.ndarray | None:
    return next(iter(out.values()), None) if out else None


def max_abs_diff(a: np.ndarray | None, b: np.ndarray | None) -> float | None:
    if a is None or b is None or a.shape != b.shape:
        return None
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max()) if a.size else 0.0


def round_robin(n_engines: int, rounds: int) -> list[int]:
    """Engine order for `rounds` rounds: every engine once per round, the starting engine rotating each round."""
    return [(r + i) % n_engines for r in range(rounds) for i in range(n_engines)]


def _turn(e: Engine, feeds: Mapping[str, np.ndarray], calls: int, clock: Callable[[], float]) -> list[float]:
    """One turn of an engine: an untimed settling call, then `calls` timed calls."""
    e.runner.infer(feeds)
    times = []
    for _ in range(calls):
        t0 = clock()
        e.runner.infer(feeds)
        times.append(clock() - t0)
    return times


def time_shape(engines: Sequence[Engine], feeds: Mapping[str, np.ndarray], cfg: BenchConfig,
               clock: Callable[[], float] = time.perf_counter) -> tuple[dict[str, list[float]], dict[str, float],
                                                                         dict[str, np.ndarray | None]]:
    """Warm up, then time every engine round-robin. Returns (latencies in s, run_mb, first outputs) per engine."""
    n = len(engines)
    lat: dict[str, list[float]] = {e.name: [] for e in engines}
    run_mb: dict[str, float] = {e.name: 0.0 for e in engines}
    outputs: dict[str, np.ndarray | None] = {}
    for r in range(max(cfg.warmup, 1)):  # at least one untimed call: it also gives the parity outputs
        for i in range(n):
            e = engines[(r + i) % n]
            before = rss_mb()
            out = e.runner.infer(feeds)
            run_mb[e.name] = max(run_mb[e.name], rss_mb() - before)
            outputs.setdefault(e.name, _first_output(out))
    if cfg.iters is not None:
        rounds = -(-cfg.iters // cfg.block)
        for idx in round_robin(n, rounds):
            e = engines[idx]
            lat[e.name] += _turn(e, feeds, min(cfg.block, cfg.iters - len(lat[e.name])), clock)
    else:
        start, r = clock(), 0
        while r < cfg.min_iters or clock() - start < cfg.seconds:
            for i in range(n):
                e = engines[(r + i) % n]
                lat[e.name] += _turn(e, feeds, cfg.block, clock)
            r += 1
    return lat, run_mb, outputs


def summarize(times: Sequence[float], batch: int, seq: int) -> dict:
    t = np.asarray(times, dtype=np.float64) * 1e3
    p50 = float(np.percentile(t, 50))
    return {"iters": int(t.size), "p50_ms": p50, "p90_ms": float(np.percentile(t, 90)),
            "p99_ms": float(np.percentile(t, 99)), "mean_ms": float(t.mean()), "min_ms": float(t.min()),
            "seq_per_s": batch / (p50 / 1e3), "tokens_per_s": batch * seq / (p50 / 1e3)}


@dataclass
class BenchResult:
    report: dict
    json_path: Path | None = None
    plot_path: Path | None = None


def device_note(report: dict) -> str:
    """One line naming where each entry ran: the PyTorch device or the ONNX Runtime provider actually used."""
    return "ran on: " + ", ".join(f"{e['name']} {e.get('device') or '?'}" for e in report["engines"])


def engine_device(e: Engine) -> str | None:
    """Where an engine ran, from its runner's describe(): the ONNX Runtime provider in use, else the device (a
    TensorRT plan always runs on the GPU)."""
    return e.info.get("provider") or e.info.get("device") or ("cuda" if e.kind == "tensorrt" else None)


def kernel_notes(report: dict) -> list[str]:
    """Per ONNX Runtime engine: the graph rewrite steps that ran as it loaded (debx.runtimes.rewrites), and for INT8
    graphs on the CPU the matmul kernel family (amx, avx512-vnni, avx-vnni, avx2, or ort: ONNX Runtime's own), the
    attention's mode (amx-bf16, avx512-bf16, float32) and the debx native ops."""
    from debx.runtimes.int8_cpu import kernel_summary

    lines = ((e["name"], line) for e in report["engines"]
             for line in (rewrite_summary(e.get("info") or {}), kernel_summary(e.get("info") or {})))
    return [f"{name}: {line}" for name, line in lines if line]


def _machine(threads: int | None) -> dict:
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), cpu)
    except OSError:
        pass
    return {"cpu": cpu, "logical_cpus": os.cpu_count(), "threads": threads, "python": platform.python_version(),
            "platform": platform.platform(), "load_avg_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}


def _jsonable(v):
    if isinstance(v, Path):
        return str(v)
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return v


def run_bench(cfg: BenchConfig, engines: Sequence[Engine] | None = None,
              progress: Callable[[str], None] | None = None) -> BenchResult:
    """Load every engine, time every shape, and write JSON/PNG when asked. `engines` overrides build_engines."""
    say = progress or (lambda msg: None)
    engines = list(engines) if engines is not None else build_engines(cfg)
    if not engines:
        raise ConfigError("nothing to benchmark")
    ref_name = cfg.ratio_to or engines[0].name
    if ref_name not in {e.name for e in engines}:
        raise ConfigError(f"--ratio-to {ref_name!r}: no such entry (entries: {', '.join(e.name for e in engines)})")
    limits = [(e.name, e.max_seq_len) for e in engines if e.max_seq_len]
    for s in cfg.seqs:
        for name, limit in limits:
            if s > limit:
                raise ConfigError(f"--seq {s} exceeds the {limit}-token limit of {name}")
    vocab = feed_vocab(engines)
    notes = provenance_notes(cfg)
    for note in notes:
        say(note)
    _preimport(engines)
    for e in engines:
        say(f"loading {e.name} ({e.kind})")
        _activate(e)
    rows: list[dict] = []
    try:
        for b in cfg.batches:
            for s in cfg.seqs:
                say(f"timing batch {b} x seq {s}")
                feeds = make_feeds(b, s, cfg.seed, vocab)
                lat, run_mb, outs = time_shape(engines, feeds, cfg)
                ref_p50 = float(np.percentile(lat[ref_name], 50))
                for e in engines:
                    row = {"engine": e.name, "kind": e.kind, "precision": e.precision,
                           "device": engine_device(e), "batch": b, "seq": s,
                           **summarize(lat[e.name], b, s), "load_mb": round(e.load_mb, 1),
                           "run_mb": round(max(run_mb[e.name], 0.0), 1)}
                    row["ratio"] = row["p50_ms"] / (ref_p50 * 1e3)
                    row["max_abs_diff"] = max_abs_diff(outs.get(e.name), outs.get(engines[0].name))
                    rows.append(row)
                say(f"  {b}x{s}: " + ", ".join(f"{r['engine']} {r['p50_ms']:.1f} ms" for r in rows[-len(engines):]))
    finally:
        for e in engines:
            try:
                e.runner.deactivate()
            except Exception:
                pass
    if cfg.peak_rss:  # after the timing (and with this process's engines released): one child per entry
        for e in engines:
            spec = peak_rss_spec(e, cfg, vocab)
            if spec is not None:
                say(f"peak memory of {e.name}, alone in a child process")
                e.memory = measure_peak_rss(spec)
    report = {
        "format": FORMAT,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": _machine(cfg.threads),
        "versions": package_versions(),
        "config": {k: _jsonable(v) for k, v in asdict(cfg).items() if k not in ("json_path", "plot_path", "cache_dir")},
        "input_ids_below": vocab,  # the random ids are drawn from [5, input_ids_below)
        "reference": ref_name,  # the ratio column's denominator; max_abs_diff is against the first entry
        "parity_reference": engines[0].name,
        "engines": [{"name": e.name, "kind": e.kind, "path": e.path, "precision": e.precision,
                     "device": engine_device(e), "load_mb": round(e.load_mb, 1),
                     "disk_mb": None if e.disk_mb is None else round(e.disk_mb, 1), "memory": e.memory,
                     "info": e.info} for e in engines],
        "results": rows,
        "provenance": notes,
        "method": f"round-robin turns of 1 untimed + {cfg.block} timed calls; wall-clock perf_counter; ratio = p50 / reference p50; "
                  "memory = RSS deltas (load_mb: while loading; run_mb: growth during warm-up at the shape)"
                  + ("; engines[].memory = peak RSS (VmHWM, MiB) of each entry alone in a child process: "
                     f"imports, load, then {cfg.warmup} + {PEAK_RSS_RUNS} calls per shape" if cfg.peak_rss else ""),
    }
    res = BenchResult(report)
    if cfg.json_path is not None:
        res.json_path = write_json(report, cfg.json_path)
    if cfg.plot_path is not None:
        res.plot_path = write_plot(report, cfg.plot_path)
    return res


# ---------------------------------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------------------------------


def write_json(report: dict, path: Path) -> Path:
    from debx.artifacts import write_json_atomic

    return write_json_atomic(path, report)


def write_plot(report: dict, path: Path) -> Path:
    """Grouped bars: p50 latency per shape and engine, whiskers to p90 (log scale when the spread is wide)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise MissingDependencyError("--plot needs matplotlib: pip install 'debx[onnx]'") from None
    rows = report["results"]
    shapes = list(dict.fromkeys((r["batch"], r["seq"]) for r in rows))
    names = [e["name"] for e in report["engines"]]
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(shapes) * max(1, len(names)) / 2), 4.5))
    width = 0.8 / max(1, len(names))
    for k, name in enumerate(names):
        p50 = [next(r["p50_ms"] for r in rows if r["engine"] == name and (r["batch"], r["seq"]) == s) for s in shapes]
        p90 = [next(r["p90_ms"] for r in rows if r["engine"] == name and (r["batch"], r["seq"]) == s) for s in shapes]
        xs = [i + (k - (len(names) - 1) / 2) * width for i in range(len(shapes))]
        ax.bar(xs, p50, width, label=name, yerr=[[0] * len(p50), [b - a for a, b in zip(p50, p90)]], capsize=2)
    ax.set_xticks(range(len(shapes)))
    ax.set_xticklabels([f"{b}×{s}" for b, s in shapes])
    ax.set_xlabel("batch × sequence length")
    ax.set_ylabel("latency p50 (ms), whisker p90")
    all_p50 = [r["p50_ms"] for r in rows]
    if all_p50 and max(all_p50) / max(min(all_p50), 1e-9) > 30:
        ax.set_yscale("log")
    threads = report["machine"].get("threads")
    ax.set_title(f"debx bench · {report['machine'].get('cpu', '')[:40]} · threads {threads or 'default'}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    import io

    from debx.artifacts import write_bytes_atomic

    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=120)
    finally:
        plt.close(fig)
    return write_bytes_atomic(path, buf.getvalue())


def table_rows(report: dict) -> list[list[str]]:
    """The rows of the on-screen table (also used by tests)."""
    out = []
    for r in report["results"]:
        d = r["max_abs_diff"]
        out.append([r["engine"], r["precision"], f"{r['batch']}×{r['seq']}", f"{r['p50_ms']:.2f}", f"{r['p90_ms']:.2f}",
                    f"{r['p99_ms']:.2f}", f"{r['seq_per_s']:.1f}", f"{r['tokens_per_s']:.0f}",
                    f"{r['load_mb']:.0f}+{r['run_mb']:.0f}", f"{r['ratio']:.3f}", "-" if d is None else f"{d:.1e}"])
    return out


TABLE_COLUMNS = ["engine", "prec", "B×N", "p50 ms", "p90 ms", "p99 ms", "seq/s", "tok/s", "RSS MB load+run",
                 "× ref p50", "max|Δ| vs 1st"]
