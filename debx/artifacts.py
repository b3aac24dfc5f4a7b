"""Small facts every artifact and report records: file digests, package versions, atomic JSON writes."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

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


def write_json_atomic(path: str | Path, data: dict) -> None:
    """Write JSON to a temporary file beside `path`, then rename: never a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=str(path.parent))
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=2, default=str)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def input_files(path: str | Path) -> list[Path]:
    """The files a command reads for the input `path`: a model file with its sidecar and external data, or a
    checkpoint folder with its config, weights and tokenizer files (and the folder itself)."""
    path = Path(path)
    out = [path]
    if path.is_dir():
        from debx.checkpoint import TOKENIZER_FILES, WEIGHT_FILES

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
