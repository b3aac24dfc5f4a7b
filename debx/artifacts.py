"""Small facts every artifact and report records (file digests, package versions), and the one way debx writes
files: stage in a temporary place beside the target, then commit atomically.

* `write_bytes_atomic` / `write_json_atomic`: one file (temporary name, then rename);
* `atomic_dir`: one folder, written in a temporary sibling and swapped into place;
* `staged_files`: a multi-file artifact (a graph, its weights, sidecar, ranges, cache) committed as one unit: weights
  under a name unique to this write (`onnx_data_name`), the other files renamed into place with the graph last,
  interrupts held back while the renames run, and the previous set restored if a rename fails anyway.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from debx.contract import TOKENIZER_FILES, WEIGHT_FILES
from debx.errors import CheckpointError

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


def read_sidecar(path: str | Path, strict: bool = False) -> dict:
    """The JSON sidecar beside an artifact (`model.onnx` -> `model.onnx.json`), or {} when there is none.

    An unreadable sidecar is {} too, unless `strict`: then it is a ConfigError naming the file."""
    path = Path(path)
    side = path.with_name(path.name + ".json")
    try:
        return json.loads(side.read_text()) if side.is_file() else {}
    except (OSError, json.JSONDecodeError) as e:
        if strict:
            from debx.errors import ConfigError

            raise ConfigError(f"{side}: invalid JSON ({e})") from None
        return {}


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


def commit_files(pairs: list[tuple[Path, Path]], backup_dir: Path) -> None:
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


class Staging:
    """The temporary folder of one multi-file write (see `staged_files`)."""

    def __init__(self, primary: Path, folder: Path):
        self.primary_target, self.dir = primary, folder
        self.token = secrets.token_hex(4)
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
        self._files.append((staged, target))
        return staged

    def onnx_data_name(self) -> str:
        """A name for the primary graph's external weights that is unique to this write: the graph in place keeps
        reading its own weights until the new graph replaces it."""
        return f"{self.primary_target.name}.{self.token}.data"

    def stale(self, *paths: str | Path | None) -> None:
        """Files of the previous artifact to delete once the new one is committed (unless it rewrote them)."""
        self._stale += [Path(p) for p in paths if p]

    def commit(self) -> None:
        pairs = [*self._files, (self.primary, self.primary_target)]
        missing = [s for s, _ in pairs if not s.exists()]
        if missing:
            raise FileNotFoundError(f"staged file missing: {missing[0]}")
        for s, _ in pairs:
            honour_umask(s)
        backups = self.dir / ".previous"
        backups.mkdir()
        commit_files(pairs, backups)
        written = {t.resolve() for _, t in pairs}
        for p in self._stale:
            if p.resolve() not in written:
                p.unlink(missing_ok=True)


@contextlib.contextmanager
def staged_files(primary: str | Path) -> Iterator[Staging]:
    """Stage a multi-file artifact in a temporary folder beside `primary` and commit it as one unit on success.

        with staged_files(out) as st:
            save(graph, st.primary, data=st.onnx_data_name())   # weights under a name unique to this write
            write(st.add(out.with_name(out.name + ".json")))      # sidecar & co: st.add(target) -> staged path
            st.stale(previous_data_file)                          # deleted once the new set is in place

    Registered files are renamed into place in order and the primary file last; any failure (an interrupt
    included) leaves the previous set complete, and the temporary folder is removed in every case."""
    primary = Path(primary)
    primary.parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f".{primary.name}.tmp-", dir=str(primary.parent)))
    try:
        st = Staging(primary, folder)
        yield st
        st.commit()
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
    name = read_sidecar(out).get("external_data")
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
        out += [path.with_name(path.name + ext) for ext in (".json", ".data")]
        data = read_sidecar(path).get("external_data")
        if isinstance(data, str) and data:
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
    from debx.errors import ConfigError

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
# Provenance: which checkpoint made an artifact (the one reader of the sidecar's "source" entry)
# ---------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """The checkpoint an artifact was made from, as its sidecar recorded it when the artifact was written."""

    checkpoint: Path | None  # the folder (as it was named then; it may have moved or changed since)
    fingerprint: str | None  # debx.checkpoint.fingerprint of that folder then; None when not recorded

    def to_dict(self) -> dict:
        return {"checkpoint": None if self.checkpoint is None else str(self.checkpoint),
                "fingerprint": self.fingerprint}


def artifact_source(path: str | Path, sidecar: dict | None = None) -> Source:
    """Source of an artifact (`model.onnx`, `model.plan`): the sidecar's "source" entry. Export sidecars (and the
    calibrate/build sidecars that carry them over) name the folder "checkpoint"; older calibrate sidecars "path";
    a plain string is the folder. `sidecar`: the already-read sidecar of `path`, when the caller has it."""
    side = read_sidecar(path) if sidecar is None else sidecar
    src = side.get("source") if isinstance(side, dict) else None
    if isinstance(src, str):
        return Source(Path(src) if src else None, None)
    if not isinstance(src, dict):
        return Source(None, None)
    folder = src.get("checkpoint") or src.get("path")
    fp = src.get("fingerprint")
    return Source(Path(folder) if isinstance(folder, str) and folder else None, fp if isinstance(fp, str) else None)


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

    from debx.errors import ConfigError

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
    from debx.errors import ConfigError

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
