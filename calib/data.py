"""Deterministic calibration batches from a task split.

The sample is a seeded draw of row indices (same seed, same split file -> same rows), encoded with the model's
tokenizer at real lengths and grouped into length-sorted batches padded only to their own longest row (dynamic
padding), so that padding positions barely enter the activation statistics. The guids of the rows are recorded:
when calibrating on dev, `debx eval` leaves exactly those rows out of every later evaluation of the artifact.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from debx.contract import INPUT_NAMES
from debx.errors import ConfigError, DataError, check_at_least
from debx.tasks import get_task, load_split, split_path

SPLITS = ("train", "dev")
FEED_NAMES = INPUT_NAMES  # what debx can feed (debx.contract)


@dataclass
class CalibDataConfig:
    task: str
    data_dir: Path | None = None
    split: str = "train"  # train | dev
    num_samples: int = 256
    seed: int = 0
    batch_size: int = 8
    max_seq_len: int | None = None  # default: the model limit (max_position_embeddings)

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise ConfigError(f"--calib-split {self.split!r}: choose one of {', '.join(SPLITS)}")
        if self.num_samples < 1:
            raise ConfigError(f"--num-samples must be >= 1, got {self.num_samples}")
        if self.batch_size < 1:
            raise ConfigError(f"calibration batch size must be >= 1, got {self.batch_size}")
        check_at_least("--max-seq-len", self.max_seq_len)


@dataclass
class CalibData:
    """Feeds for the model (one dict per batch) and what they were made from."""

    task: str  # canonical task name
    split: str
    guids: list[str]  # rows used, in file order
    batches: list[dict[str, np.ndarray]] = field(default_factory=list)  # int64 (B, N_b) each, N_b = batch's longest
    truncated: int = 0
    source: str = ""  # the split file

    @property
    def num_samples(self) -> int:
        return len(self.guids)

    def record(self, seed: int) -> dict:
        """The sidecar's `calibration` entry (debx.evaluate.excluded_rows reads task/split/rows)."""
        return {"task": self.task, "split": self.split, "rows": list(self.guids), "num_samples": self.num_samples,
                "seed": seed, "batches": len(self.batches), "truncated": self.truncated, "data": self.source}


def sample_indices(n_rows: int, num_samples: int, seed: int) -> np.ndarray:
    """Sorted row indices of a seeded draw without replacement (all rows when the split is smaller)."""
    if num_samples >= n_rows:
        return np.arange(n_rows)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n_rows, size=num_samples, replace=False))


def calibration_data(cfg: CalibDataConfig, tokenizer, input_names: list[str] | tuple[str, ...],
                     max_len: int) -> CalibData:
    """Encode the sampled rows of `cfg.split`; each batch holds exactly the feeds named in `input_names`."""
    from debx.tokenizer import encode

    unknown = [n for n in input_names if n not in FEED_NAMES]
    if unknown:
        raise ConfigError(f"the model has inputs debx cannot feed: {', '.join(unknown)} (expected {', '.join(FEED_NAMES)})")
    task = get_task(cfg.task)
    if cfg.split not in task.files:
        raise DataError(f"task {task.name} has no {cfg.split} split")
    examples = load_split(task, cfg.data_dir, cfg.split)
    rows = sample_indices(len(examples), cfg.num_samples, cfg.seed)
    chosen = [examples[i] for i in rows]
    pairs = chosen[0].text_b is not None
    if cfg.max_seq_len is not None and cfg.max_seq_len > max_len:
        raise ConfigError(f"--max-seq-len {cfg.max_seq_len} exceeds {max_len} tokens, the longest sequence the "
                          "ONNX file was validated for (export it again with --max-seq-len N to calibrate longer rows)")
    limit = cfg.max_seq_len or max_len
    enc = encode(tokenizer, [e.text_a for e in chosen], [e.text_b for e in chosen] if pairs else None, limit)
    pad = tokenizer.pad_token_id or 0
    order = np.argsort([len(x) for x in enc.input_ids], kind="stable")  # length-sorted: little padding per batch
    batches = []
    for s in range(0, len(order), cfg.batch_size):
        full = enc.batch(order[s:s + cfg.batch_size], pad_id=pad)
        batches.append({k: full[k] for k in input_names})
    return CalibData(task=task.name, split=cfg.split, guids=[e.guid for e in chosen], batches=batches,
                     truncated=enc.truncated, source=str(split_path(task, cfg.data_dir, cfg.split)))


def model_input_names(model) -> list[str]:
    """Graph inputs of an onnx.ModelProto that are not initializers."""
    inits = {t.name for t in model.graph.initializer}
    return [i.name for i in model.graph.input if i.name not in inits]


class FeedReader:
    """An onnxruntime.quantization.CalibrationDataReader over a list of feed dicts (rewindable, sliceable)."""

    def __init__(self, batches: list[dict[str, np.ndarray]]):
        self.batches = batches
        self._next = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._next >= len(self.batches):
            return None
        self._next += 1
        return self.batches[self._next - 1]

    def rewind(self) -> None:
        self._next = 0

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        return iter(self.batches)


def as_calibration_reader(batches: list[dict[str, np.ndarray]]):
    """A FeedReader that is also an instance of ORT's CalibrationDataReader (imported lazily)."""
    from onnxruntime.quantization import CalibrationDataReader

    class _Reader(FeedReader, CalibrationDataReader):
        pass

    return _Reader(batches)
