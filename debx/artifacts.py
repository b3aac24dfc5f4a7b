"""Small facts every artifact and report records (file digests, package versions), and the one way debx writes
files: stage in a temporary place beside the target, then commit atomically.

* `write_bytes_atomic` / `write_json_atomic`: one file (temporary name, then rename);
* `atomic_dir`: one folder, written in a temporary sibling and swapped into place;
* `publish`: a multi-file artifact (a graph, its weights, sidecar, ranges, cache; a plan and its sidecar) committed
  as one unit: weights under a name unique to this write (`onnx_data_name`), the other files renamed into place
  with the primary file last, interrupts held back while the renames run, and the previous set restored if a
  rename fails anyway.

And the sidecar beside every artifact (`model.onnx` -> `model.onnx.json`): one type, `Sidecar`, with one reader,
`read_sidecar`, and one writer, `write_sidecar` (`publish(...).sidecar` for a multi-file artifact).

Everything is created with the modes the user's umask gives (temporary files and folders are 0600/0700 while
staged), and the staging place is removed on any failure, SIGINT and SIGTERM included (debx.cli turns SIGTERM
into the same KeyboardInterrupt as SIGINT).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
import signal
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from debx.contract import TOKENIZER_FILES, WEIGHT_FILES
from debx.errors import CheckpointError, ConfigError, DebxError

PACKAGES = ("debx", "torch", "transformers", "numpy", "onnx", "onnxscript", "onnxruntime", "onnxruntime-extensions")


def file_digest(path: str | Path, length: int | None = 16) -> str:
    """sha256 of a file (hex), cut to `length` characters (None: the whole digest)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:length]


def package_versions(packages: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    """Python and the installed versions of `packages` (absent ones are left out); no package is imported."""
    import importlib.metadata as md
    import platform

    out = {"python": platform.python_version()}
    for pkg in packages:
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def current_umask() -> int:
    """The process umask, read without changing it where /proc allows."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def honour_umask(path: str | Path) -> None:
    """Give `path` the mode a plain open()/mkdir() would have (0666/0777 less the umask): mkstemp, mkdtemp and
    safetensors create 0600/0700, which made reports, sidecars and checkpoints private against the user's wish."""
    path = Path(path)
    base = 0o777 if path.is_dir() else 0o666
    os.chmod(path, base & ~current_umask())


@contextlib.contextmanager
def deferred_signals() -> Iterator[None]:
    """SIGINT, SIGTERM and SIGHUP are held back (delivered on exit) while a commit's renames run."""
    sigs = {signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", signal.SIGTERM)}
    try:
        old = signal.pthread_sigmask(signal.SIG_BLOCK, sigs)
    except (AttributeError, ValueError, OSError):  # no pthread_sigmask on this platform
        yield
        return
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _commit_files(pairs: list[tuple[Path, Path]], backup_dir: Path) -> None:
    """Rename each staged file onto its target, in order, as one unit: with interrupts deferred, and when a rename
    fails the targets already replaced get their previous content back (hard-linked aside first)."""
    done: list[tuple[Path, Path | None]] = []
    with deferred_signals():
        try:
            for n, (src, dst) in enumerate(pairs):
                backup = None
                if dst.exists():
                    backup = backup_dir / f".previous-{n}"
                    try:
                        os.link(dst, backup)
                    except OSError:  # no hard links on this filesystem
                        shutil.copy2(dst, backup)
                done.append((dst, backup))
                os.replace(src, dst)
        except BaseException:
            for dst, backup in reversed(done):
                with contextlib.suppress(OSError):
                    if backup is not None:
                        os.replace(backup, dst)
                    else:
                        dst.unlink(missing_ok=True)
            raise


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Write `data` to a temporary file beside `path`, then rename: never a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=str(path.parent))
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        honour_umask(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json_atomic(path: str | Path, data: dict) -> Path:
    """Write JSON to a temporary file beside `path`, then rename: never a half-written file."""
    return write_bytes_atomic(path, (json.dumps(data, indent=2, default=str) + "\n").encode())


@contextlib.contextmanager
def atomic_dir(target: str | Path) -> Iterator[Path]:
    """Write a folder completely in a temporary sibling, then swap it into place. Nothing half-written survives."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield tmp
        for p in [tmp, *tmp.rglob("*")]:
            if not p.is_symlink():
                honour_umask(p)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = target.with_name(f".{target.name}.old-{os.getpid()}-{secrets.token_hex(3)}")
    with deferred_signals():
        had_old = target.exists()
        if had_old:
            os.replace(target, old)
        try:
            os.replace(tmp, target)
        except BaseException:
            if had_old:
                os.replace(old, target)
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    if had_old:
        shutil.rmtree(old, ignore_errors=True)


class Publication:
    """One multi-file artifact being written: its staging folder and what goes where (see `publish`)."""

    def __init__(self, primary: Path, folder: Path):
        self.primary_target, self.dir = primary, folder
        self.token = secrets.token_hex(4)
        self.sidecar: Sidecar | Mapping | None = None  # set it: written (write_sidecar) and committed with the rest
        self._files: list[tuple[Path, Path]] = []
        self._stale: list[Path] = []

    @property
    def primary(self) -> Path:
        """Where to write the main file (committed last, after everything it refers to)."""
        return self.dir / self.primary_target.name

    def add(self, target: str | Path) -> Path:
        """Register `target` (beside the primary file) as part of this artifact; returns where to stage it."""
        target = Path(target)
        staged = self.dir / target.name
        if (staged, target) not in self._files:
            self._files.append((staged, target))
        return staged

    def onnx_data_name(self) -> str:
        """A name for the primary graph's external weights that is unique to this write: the graph in place keeps
        reading its own weights until the new graph replaces it. A file of that name written beside `primary` is
        part of the artifact (no need to `add` it)."""
        return f"{self.primary_target.name}.{self.token}.data"

    def stale(self, *paths: str | Path | None) -> None:
        """Files of the previous artifact to delete once the new one is committed (unless it rewrote them). The
        previous graph's weights file (its sidecar's external_data, or the legacy `<file>.data`) is one already."""
        self._stale += [Path(p) for p in paths if p]

    def commit(self) -> None:
        data = self.dir / self.onnx_data_name()
        if data.exists():
            self.add(self.primary_target.with_name(data.name))
        if self.sidecar is not None:
            write_sidecar(self.primary, self.sidecar)  # staged beside the staged primary
            self.add(sidecar_path(self.primary_target))
        pairs = [*self._files, (self.primary, self.primary_target)]
        missing = [s for s, _ in pairs if not s.exists()]
        if missing:
            raise FileNotFoundError(f"staged file missing: {missing[0]}")
        if self.primary_target.suffix == ".onnx":  # read from the sidecar now in place, before it is replaced
            self.stale(*previous_onnx_data(self.primary_target))
        for s, _ in pairs:
            honour_umask(s)
        backups = self.dir / ".previous"
        backups.mkdir()
        _commit_files(pairs, backups)
        written = {t.resolve() for _, t in pairs}
        for p in self._stale:
            if p.resolve() not in written:
                p.unlink(missing_ok=True)


@contextlib.contextmanager
def publish(primary: str | Path) -> Iterator[Publication]:
    """Write a multi-file artifact (a graph with its weights file, sidecar, ranges, cache; a plan and its sidecar;
    a checkpoint's weights and config) in a temporary folder beside `primary` and commit it as one unit on success:

        with publish(out) as pub:
            save(graph, pub.primary, data=pub.onnx_data_name())   # weights under a name unique to this write
            ranges.save(pub.add(out.with_name(out.name + ".ranges.json")))   # extras: pub.add(target) -> staged path
            pub.sidecar = Sidecar(...)                           # written with debx.artifacts.write_sidecar
            pub.stale(previous_cache)                            # deleted once the new set is in place

    Extras are renamed into place in the order added, then the weights file, the sidecar, and the primary file
    last; the previous graph's weights file is deleted after. Any failure (an interrupt included) leaves the
    previous set complete, and the temporary folder is removed in every case."""
    primary = Path(primary)
    primary.parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f".{primary.name}.tmp-", dir=str(primary.parent)))
    try:
        pub = Publication(primary, folder)
        yield pub
        pub.commit()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def weights_bytes(model) -> int:
    """Bytes of an ONNX ModelProto's initializers held in the proto (the measure debx.contract.INLINE_WEIGHTS_LIMIT
    applies to; tensors already in an external data file count 0)."""
    return sum(len(t.raw_data) or 4 * len(t.float_data) or 2 * len(t.int32_data) for t in model.graph.initializer)


def save_onnx_model(model, path: str | Path, data_name: str | None = None, size_threshold: int = 1024,
                    copy: bool = True) -> Path | None:
    """Write an ONNX ModelProto to `path`; with `data_name`, tensors of `size_threshold` bytes or more go to that
    file beside `path` (returned). The data location depends on `path` only: onnx.save_model(location=...)
    refuses when the *current directory* holds a file of that name. `copy=False` lets the caller's proto be
    rewritten to point at the external file (saves memory when the caller drops it)."""
    import onnx
    from onnx.external_data_helper import convert_model_to_external_data

    path = Path(path)
    if data_name is None:
        onnx.save_model(model, str(path))
        return None
    if copy:
        dup = onnx.ModelProto()
        dup.CopyFrom(model)
        model = dup
    # location=None: onnx picks a uuid name without looking at the current directory; ours replaces it below
    convert_model_to_external_data(model, all_tensors_to_one_file=True, location=None, size_threshold=size_threshold)
    for t in _all_tensors(model):
        for entry in t.external_data:
            if entry.key == "location":
                entry.value = data_name
    data = path.with_name(data_name)
    data.unlink(missing_ok=True)  # onnx appends to an existing file
    onnx.save_model(model, str(path))
    return data if data.exists() else None


def previous_onnx_data(out: str | Path) -> list[Path]:
    """The external-data files of the ONNX artifact now at `out`, to delete once a new one replaces it: the legacy
    `<out>.data` and the unique name its sidecar records (a name of that form only, never a path elsewhere)."""
    import re

    out = Path(out)
    files = [out.with_name(out.name + ".data")]
    try:
        name = read_sidecar(out).external_data
    except DebxError:  # the artifact being replaced has a broken sidecar: only its legacy data file is known
        name = None
    if isinstance(name, str) and re.fullmatch(re.escape(out.name) + r"\.[0-9a-f]{8}\.data", name):
        files.append(out.with_name(name))
    return files


def _all_tensors(model):
    from onnx.external_data_helper import _get_all_tensors

    return _get_all_tensors(model)


def input_files(path: str | Path) -> list[Path]:
    """The files a command reads for the input `path`: a model file with its sidecar and external data, or a
    checkpoint folder with its config, weights and tokenizer files (and the folder itself)."""
    path = Path(path)
    out = [path]
    if path.is_dir():

        out += [path / n for n in ("config.json", *WEIGHT_FILES, *TOKENIZER_FILES)]
        out += [f for f in path.glob("*.safetensors")] + [f for f in path.glob("*.bin")]
    elif path.is_file():
        out += [sidecar_path(path), path.with_name(path.name + ".data")]
        try:
            data = read_sidecar(path).external_data
        except DebxError:  # a broken sidecar: the command reading it says so; its weights file is not known here
            data = None
        if data:
            out.append(path.with_name(data))
    return out


def _same(a: Path, b: Path) -> bool:
    if a.resolve() == b.resolve():
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)  # hard links too
    except OSError:
        return False


def refuse_overwriting_inputs(outputs: dict[str, str | Path | None], inputs: list[str | Path | None]) -> None:
    """ConfigError when an output (flag -> path) is one of the inputs or a file they consist of (paths resolved,
    links followed), or when two outputs are the same file: nothing a command reads is ever overwritten."""
    given = [(flag, Path(p)) for flag, p in outputs.items() if p is not None]
    files = [(Path(i), f) for i in inputs if i is not None for f in input_files(i)]
    for n, (flag, out) in enumerate(given):
        for src, f in files:
            if _same(out, f):
                what = "is" if f == Path(src) else f"is {f.name}, part of"
                raise ConfigError(f"{flag} {out}: {what} the input {src}; choose another output file")
        for other_flag, other in given[n + 1:]:
            if _same(out, other):
                raise ConfigError(f"{flag} {out} and {other_flag} {other} are the same file")


# ---------------------------------------------------------------------------------------------------------------------
# The sidecar: the JSON beside every artifact (`model.onnx` -> `model.onnx.json`), one type, one reader, one writer
# ---------------------------------------------------------------------------------------------------------------------


SIDECAR_SUFFIX = ".json"


def sidecar_path(artifact: str | Path) -> Path:
    """Where the sidecar of `artifact` lives: `model.onnx` -> `model.onnx.json`, `m.plan` -> `m.plan.json`."""
    artifact = Path(artifact)
    return artifact.with_name(artifact.name + SIDECAR_SUFFIX)


@dataclass(frozen=True)
class Source:
    """The checkpoint an artifact was made from, as its sidecar recorded it when the artifact was written."""

    checkpoint: Path | None  # the folder (as it was named then; it may have moved or changed since)
    fingerprint: str | None  # debx.checkpoint.fingerprint of that folder then; None when not recorded
    model_type: str | None = field(default=None, compare=False)  # the checkpoint's model_type, when recorded
    extra: dict = field(default_factory=dict, compare=False, hash=False)  # other entries, kept as read

    @classmethod
    def from_entry(cls, entry) -> Source | None:
        """The sidecar's "source" entry in any spelling debx ever wrote: {"checkpoint": DIR, "fingerprint": FP,
        "model_type": T} (export, and the calibrate/build sidecars that carry it over), {"path": DIR} (older
        calibrate sidecars), or a plain string DIR. None: no entry."""
        if entry is None or entry == "" or entry == {}:
            return None
        if isinstance(entry, str):
            return cls(Path(entry), None)
        if not isinstance(entry, dict):
            return None
        folder = entry.get("checkpoint") or entry.get("path")
        fp, mt = entry.get("fingerprint"), entry.get("model_type")
        extra = {k: v for k, v in entry.items() if k not in ("checkpoint", "path", "fingerprint", "model_type")}
        return cls(Path(folder) if isinstance(folder, str) and folder else None, fp if isinstance(fp, str) else None,
                   mt if isinstance(mt, str) else None, extra)

    def to_dict(self) -> dict:
        """{"checkpoint": DIR, "fingerprint": FP} (what an eval report records)."""
        return {"checkpoint": None if self.checkpoint is None else str(self.checkpoint), "fingerprint": self.fingerprint}

    def to_entry(self) -> dict:
        """The sidecar's "source" entry as debx writes it now (always "checkpoint", never the old "path")."""
        out = self.to_dict()
        if self.fingerprint is None:
            del out["fingerprint"]
        if self.model_type is not None:
            out["model_type"] = self.model_type
        return {**out, **self.extra}


# the typed entries of a sidecar: name -> the JSON type its value must have (None is always allowed)
_TYPED = {"format": str, "file": str, "external_data": str, "precision": str, "attention": str, "head": str,
          "shapes": dict, "rewrites": list}
_KIND_NAMES = {str: "a string", dict: "a JSON object", list: "a JSON array"}


@dataclass(eq=False)  # equality is the Mapping's: the same entries, whatever the order
class Sidecar(Mapping):
    """What debx records beside an artifact: where it came from, what it is, how it was made. The entries every
    reader needs are typed fields; every other entry (parity, calibration, versions, a plan's builder flags, entries
    a newer debx wrote) is kept in `extra` as read, so reading and writing a sidecar back loses nothing.

    It reads like the JSON object too (`side.get("calibration")`, `side["precision"]`): a Mapping of `to_dict()`.
    Read with `read_sidecar`, write with `write_sidecar` (or `publish(...).sidecar`): nothing else in debx opens a
    sidecar (tests/test_sidecar.py holds that)."""

    format: str | None = None  # "debx-onnx/1" (export, calibrate, rewrite) | "debx-plan/1" (build)
    file: str | None = None  # the artifact's file name when written
    external_data: str | None = None  # the file beside it that holds its weights (a name, never a path)
    source: Source | None = None  # the checkpoint it was made from
    precision: str | None = None  # fp32 | fp16 | int8
    attention: str | None = None  # the export's --attention mode
    head: str | None = None  # the task head (classification, ...)
    shapes: dict = field(default_factory=dict)  # batch, sequence, max_seq_len (the longest length validated)
    rewrites: list = field(default_factory=list)  # the named graph rewrites that made this file, in order
    extra: dict = field(default_factory=dict)  # every other entry, kept as read
    order: list = field(default_factory=list, repr=False, compare=False)  # the entries' order as read

    @classmethod
    def from_dict(cls, data: Mapping, where: str | Path = "sidecar") -> Sidecar:
        """A Sidecar from a JSON object (every old spelling accepted); ConfigError naming `where` for an entry of
        the wrong type."""
        if isinstance(data, Sidecar):
            return cls.from_dict(data.to_dict(), where)
        if not isinstance(data, Mapping):
            raise ConfigError(f"{where}: not a JSON object (got {type(data).__name__})")
        typed = {}
        for key, kind in _TYPED.items():
            value = data.get(key)
            if value is not None and not isinstance(value, kind):
                raise ConfigError(f"{where}: entry {key!r} must be {_KIND_NAMES[kind]}, got {value!r:.60}")
            if value is not None:
                typed[key] = list(value) if kind is list else dict(value) if kind is dict else value
        extra = {k: v for k, v in data.items() if k not in _TYPED and k != "source"}
        return cls(**typed, source=Source.from_entry(data.get("source")), extra=extra, order=list(data))

    def to_dict(self) -> dict:
        """The JSON object: typed entries that are set, every kept entry, in the order read (new entries last)."""
        out: dict = {}
        for key in _TYPED:
            value = getattr(self, key)
            if (value is not None and value != [] and value != {}) or key in self.order:
                out[key] = value
        if "external_data" in self.order or self.format == "debx-onnx/1":  # an ONNX sidecar always says
            out.setdefault("external_data", None)
        if self.source is not None:
            out["source"] = self.source.to_entry()
        out.update(self.extra)
        first = [k for k in self.order if k in out]
        return {**{k: out[k] for k in first}, **{k: v for k, v in out.items() if k not in first}}

    @property
    def max_seq_len(self) -> int | None:
        """The longest sequence validated at export (shapes.max_seq_len), when recorded."""
        n = self.shapes.get("max_seq_len")
        return n if isinstance(n, int) and not isinstance(n, bool) else None

    # the Mapping view of to_dict()
    def __getitem__(self, key: str):
        return self.to_dict()[key]

    def __iter__(self):
        return iter(self.to_dict())

    def __len__(self) -> int:
        return len(self.to_dict())

    def __bool__(self) -> bool:
        return bool(self.to_dict())


def read_sidecar(artifact: str | Path) -> Sidecar:
    """The one sidecar reader: the Sidecar beside `artifact`, empty when there is none (or `artifact` is a folder).
    A sidecar that is not valid JSON (or not an object, or has a typed entry of the wrong type) is a ConfigError in
    one line naming the file; a caller that must go on without it (deleting the files of an artifact it replaces)
    catches that itself."""
    side = sidecar_path(artifact)
    if Path(artifact).is_dir() or not side.is_file():  # a checkpoint folder has no sidecar (runs/x.json is not one)
        return Sidecar()
    try:
        data = json.loads(side.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"{side}: invalid JSON ({e})" if not isinstance(e, OSError)
                          else f"{side}: cannot read it ({e.strerror or e})") from None
    return Sidecar.from_dict(data, side)


def sidecar_bytes(sidecar: Sidecar | Mapping) -> bytes:
    """The sidecar as written to disk (JSON, indented; paths and other objects as strings)."""
    side = sidecar if isinstance(sidecar, Sidecar) else Sidecar.from_dict(sidecar)
    return (json.dumps(side.to_dict(), indent=2, default=str) + "\n").encode()


def write_sidecar(artifact: str | Path, sidecar: Sidecar | Mapping) -> Path:
    """The one sidecar writer: `sidecar` (a Sidecar, or a dict of its entries) beside `artifact`, atomically.
    Returns the sidecar's path. For a sidecar that belongs to a multi-file artifact, set `publish(...).sidecar`."""
    return write_bytes_atomic(sidecar_path(artifact), sidecar_bytes(sidecar))


def artifact_source(path: str | Path, sidecar: Mapping | None = None) -> Source:
    """Source of an artifact (`model.onnx`, `model.plan`) as its sidecar recorded it (every spelling: see
    Source.from_entry); Source(None, None) when none is recorded. `sidecar`: the already-read sidecar of `path`."""
    side = read_sidecar(path) if sidecar is None else sidecar
    if not isinstance(side, Sidecar):
        side = Sidecar.from_dict(side, sidecar_path(path))
    return side.source or Source(None, None)


# ---------------------------------------------------------------------------------------------------------------------
# Provenance: is an artifact still what its checkpoint would give?
# ---------------------------------------------------------------------------------------------------------------------


def stale_reason(artifact: str | Path, checkpoint: str | Path | None = None, fingerprint: str | None = None,
                 sidecar: dict | None = None) -> str | None:
    """None when `artifact` was made from `checkpoint` as it is now; else one line saying how they differ.

    checkpoint: the folder the caller compares with (default: the one the sidecar names). fingerprint: its current
    fingerprint when the caller has it. Nothing recorded, or no such folder: None (nothing to compare)."""
    src = artifact_source(artifact, sidecar)
    folder = Path(checkpoint) if checkpoint is not None else src.checkpoint
    if src.fingerprint is None or folder is None or not (folder / "config.json").is_file():
        return None
    try:
        now = fingerprint or checkpoint_fingerprint(folder)
    except Exception:  # missing weights etc.: the command that loads the checkpoint reports that itself
        return None
    if now == src.fingerprint:
        return None
    name = Path(artifact).name
    same = src.checkpoint is not None and _same(folder, src.checkpoint)
    if same or checkpoint is None:
        return (f"{name} is stale: {folder} has changed since {name} was made from it (fingerprint "
                f"{src.fingerprint} then, {now} now); re-export it from the current checkpoint")
    return (f"{name} is stale for {folder}: it was made from {src.checkpoint or 'another checkpoint'} (fingerprint "
            f"{src.fingerprint}), and {folder} has fingerprint {now}; re-export it, or compare it with the "
            "checkpoint it came from")


# ---------------------------------------------------------------------------------------------------------------------
# Reading ONNX files and checking output locations: one clear line instead of a parser traceback
# ---------------------------------------------------------------------------------------------------------------------


def external_data_problem(path: str | Path, model) -> str | None:
    """Why the external-data files an ONNX graph (loaded without them) refers to cannot be read, or None."""
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    path = Path(path)
    sizes: dict[Path, int] = {}
    for t in model.graph.initializer:
        if not uses_external_data(t):
            continue
        info = ExternalDataInfo(t)
        data = path.parent / info.location
        if data not in sizes:
            if not data.is_file():
                return f"{path}: its weights file {info.location} is missing (expected at {data})"
            sizes[data] = data.stat().st_size
        end = (info.offset or 0) + (info.length or 0)
        if end > sizes[data]:
            return (f"{path}: its weights file {info.location} is truncated ({sizes[data]} bytes, tensor "
                    f"{t.name} needs {end})")
    return None


def read_onnx(path: str | Path, load_external_data: bool = False):
    """An onnx.ModelProto from a file, or ConfigError in one line: no such file, not a readable ONNX model
    (truncated, foreign), or external-data weights missing/truncated. Weights in external files are only checked
    (not loaded) unless `load_external_data`."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such ONNX file")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # protobuf/onnx raise many kinds for a corrupt file
        raise ConfigError(f"{path}: not a readable ONNX model, truncated or corrupt? "
                          f"({str(e).splitlines()[0][:120]})") from None
    problem = external_data_problem(path, model)
    if problem:
        raise ConfigError(problem)
    if load_external_data:
        from onnx.external_data_helper import load_external_data_for_model

        load_external_data_for_model(model, str(path.parent))
    return model


def check_writable(path: str | Path, what: str = "output") -> None:
    """ConfigError unless a file or folder can be created at `path`: its nearest existing parent must be a folder
    this process may write (checked before any work, so a read-only destination fails in one line, not at the end)."""
    path = Path(path).expanduser()
    parent = path.parent if not path.is_dir() else path
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(f"{what} {path}: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"{what} {path}: cannot write in {parent} (read-only or permission denied)")


# ---------------------------------------------------------------------------------------------------------------------
# Checkpoint folders: which weights, and the fingerprint that names the exact model an artifact came from
# ---------------------------------------------------------------------------------------------------------------------


def weight_files(path: Path) -> list[Path]:
    for name in WEIGHT_FILES:
        f = path / name
        if f.is_file():
            if name.endswith(".index.json"):
                try:
                    shards = sorted(set(json.loads(f.read_text())["weight_map"].values()))
                except (json.JSONDecodeError, KeyError) as e:
                    raise CheckpointError(f"{f}: invalid shard index ({e})") from None
                missing = [s for s in shards if not (path / s).is_file()]
                if missing:
                    raise CheckpointError(f"{path}: missing weight shards: {', '.join(missing)}")
                return [path / s for s in shards]
            return [f]
    raise CheckpointError(f"{path}: no model weights (expected model.safetensors or pytorch_model.bin)")


def fingerprint(path: str | Path) -> str:
    """sha256 over config.json and the weight files: identifies the exact model a report or artifact came from."""
    path = Path(path)
    h = hashlib.sha256()
    for f in [path / "config.json", *weight_files(path)]:
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


checkpoint_fingerprint = fingerprint  # for functions here that take an argument named `fingerprint`
