"""Tasks: the nine GLUE tasks (ten names, MNLI has two dev sets) and user-defined tasks.

Everything about a task lives in one `TaskSpec`: where its files are, how to read them, its labels, its metrics and
the tolerance of the paper gate. The GLUE registry is the `TASKS` dict below; adding a task is one entry there
(plus its fixture in tests/test_tasks.py, which a test insists on).

Data layout (what the official `download_glue_data.py` writes):

    <data_dir>/<folder>/<file>      e.g. glue/SST-2/dev.tsv, glue/MNLI/dev_mismatched.tsv

`data_dir` may also point straight at the task folder. GLUE TSVs are split on tabs only, with no quote handling
(csv.QUOTE_NONE): RTE, MRPC, QQP and MNLI hold unbalanced `"` characters that are plain text.

User tasks are described by a small YAML/JSON file (see `load_task_spec`) and read TSV, CSV or JSONL.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from debx.errors import ConfigError, DataError
from debx.metrics import check_metric_fits

SPEC_SUFFIXES = (".yaml", ".yml", ".json")
FORMATS = ("tsv", "csv", "jsonl")
_REPO_ROOT = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------------------------------------------------------
# Data classes
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Example:
    text_a: str
    text_b: str | None
    label: int | float | None  # class index (int) or regression score (float); None if the split is unlabeled
    guid: str  # "<file>:<line>"


@dataclass(frozen=True)
class TaskSpec:
    name: str  # canonical Hugging Face run_glue name (cola, sst2, ..., mnli-mm) or the user's task name
    folder: str  # GLUE folder name (CoLA, SST-2, ...); "" for user tasks
    files: dict[str, str]  # split -> file name, relative to the task folder
    labels: tuple[str, ...] | None  # label strings in index order; None = regression
    metrics: tuple[str, ...]
    primary_metric: str  # the metric the accuracy gate uses
    paper_tolerance: float  # allowed drop in metric points (the DeBERTa paper's ± ranges)
    reader: Callable[[Path, "TaskSpec"], list[Example]]
    description: str = ""
    aliases: tuple[str, ...] = ()  # extra names accepted by get_task (folder and name are always accepted)
    spec_dir: Path | None = None  # user tasks: folder of the spec file (data paths are relative to it)

    def __post_init__(self) -> None:
        if not self.files:
            raise ConfigError(f"task {self.name}: no files")
        if not self.metrics:
            raise ConfigError(f"task {self.name}: no metrics")
        for metric in self.metrics:
            problem = check_metric_fits(metric, self.is_regression, self.num_labels)
            if problem:
                raise ConfigError(f"task {self.name}: {problem}")
        if self.primary_metric not in self.metrics:
            raise ConfigError(
                f"task {self.name}: primary_metric {self.primary_metric!r} is not one of its metrics "
                f"({', '.join(self.metrics)})"
            )
        if not (self.paper_tolerance >= 0):
            raise ConfigError(f"task {self.name}: tolerance must be >= 0, got {self.paper_tolerance}")

    @property
    def is_regression(self) -> bool:
        return self.labels is None

    @property
    def num_labels(self) -> int:
        return 1 if self.labels is None else len(self.labels)

    @property
    def id2label(self) -> dict[int, str]:
        return {} if self.labels is None else dict(enumerate(self.labels))

    @property
    def label2id(self) -> dict[str, int]:
        return {} if self.labels is None else {label: i for i, label in enumerate(self.labels)}

    @property
    def splits(self) -> tuple[str, ...]:
        return tuple(self.files)


# ---------------------------------------------------------------------------------------------------------------
# Readers
# ---------------------------------------------------------------------------------------------------------------
Column = int | str  # 0-based index (negative counts from the end) or a header name


@dataclass(frozen=True)
class Layout:
    """Where the fields of one kind of file sit."""

    header: bool  # the first line is a header (skipped; used to resolve column names and the field count)
    text_a: Column
    text_b: Column | None = None
    label: Column | None = None  # None: the file has no labels (GLUE test files)
    num_fields: int | None = None  # exact fields per row; None = as many as the header has (or just enough)


def _parse_label(task: TaskSpec, label2id: Mapping[str, int], raw: str, where: str) -> int | float:
    if task.is_regression:
        try:
            value = float(raw)
        except ValueError:
            raise DataError(f"{where}: score {raw!r} is not a number") from None
        if not math.isfinite(value):
            raise DataError(f"{where}: score {raw!r} is not a finite number")
        return value
    index = label2id.get(raw)
    if index is None:
        raise DataError(
            f"{where}: unknown label {raw!r} for task {task.name} (valid labels: {', '.join(task.labels or ())})"
        )
    return index


def _is_test_file(path: Path, task: TaskSpec) -> bool:
    test_file = task.files.get("test")
    return test_file is not None and Path(test_file).name == path.name


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text) of every non-empty line. Lines end at \\n alone (a stray \\r or a Unicode line
    separator inside a field is text); a \\r before the \\n is dropped, as is a leading BOM."""
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(f"{path}:{lineno}: not UTF-8 text ({e.reason})") from None
            if lineno == 1 and line.startswith("\ufeff"):
                line = line[1:]
            line = line[:-1] if line.endswith("\n") else line
            line = line[:-1] if line.endswith("\r") else line
            if line:
                yield lineno, line


def _tsv_rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) split on tabs only: csv.QUOTE_NONE semantics, quotes are plain text."""
    for lineno, line in _lines(path):
        yield lineno, line.split("\t")


def _csv_rows(path: Path, delimiter: str) -> Iterator[tuple[int, list[str]]]:
    """(first line number, fields) of every non-empty CSV record; quoted fields may span lines."""
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f, delimiter=delimiter, strict=True)
        start = 1
        try:
            for fields in reader:
                if fields:
                    yield start, fields
                start = reader.line_num + 1
        except csv.Error as e:
            raise DataError(f"{path}:{reader.line_num}: malformed CSV ({e})") from None
        except UnicodeDecodeError as e:
            raise DataError(f"{path}: not UTF-8 text near line {reader.line_num + 1} ({e.reason})") from None


@dataclass(frozen=True)
class TableReader:
    """Tab- or comma-separated files. TSV: split on tabs, quotes are text (QUOTE_NONE). CSV: standard quoting."""

    layout: Layout
    test_layout: Layout | None = None  # GLUE test files (the task's "test" split) have their own, unlabeled layout
    delimiter: str = "\t"

    def __call__(self, path: Path, task: TaskSpec) -> list[Example]:
        return list(self.iter_examples(path, task))

    def iter_examples(self, path: Path, task: TaskSpec) -> Iterator[Example]:
        path = Path(path)
        layout = self.test_layout if self.test_layout and _is_test_file(path, task) else self.layout
        rows = _tsv_rows(path) if self.delimiter == "\t" else _csv_rows(path, self.delimiter)
        kind = "tab-separated" if self.delimiter == "\t" else f"{self.delimiter!r}-separated"
        label2id = task.label2id
        columns: tuple[Column | None, ...] = (layout.text_a, layout.text_b, layout.label)
        expected = layout.num_fields
        if layout.header:
            header_line = next(rows, None)
            if header_line is None:
                return
            header_lineno, header = header_line
            columns = tuple(self._resolve(c, header, f"{path}:{header_lineno}") for c in columns)
            expected = expected or len(header)
        a, b, y = columns
        if expected is None:  # no header, no fixed count: every row needs the columns we read
            ints = [c for c in columns if isinstance(c, int)]
            expected_min = max((c + 1 if c >= 0 else -c) for c in ints)
        for lineno, fields in rows:
            where = f"{path}:{lineno}"
            if expected is not None and len(fields) != expected:
                raise DataError(f"{where}: malformed row: expected {expected} {kind} fields, found {len(fields)}")
            if expected is None and len(fields) < expected_min:
                raise DataError(f"{where}: malformed row: expected at least {expected_min} fields, found {len(fields)}")
            label = None if y is None else _parse_label(task, label2id, fields[y], where)
            yield Example(fields[a], None if b is None else fields[b], label, f"{path.name}:{lineno}")

    @staticmethod
    def _resolve(column: Column | None, header: list[str], where: str) -> int | None:
        if column is None or isinstance(column, int):
            return column
        if column not in header:
            raise DataError(f"{where}: no column {column!r} in the header (columns: {', '.join(header)})")
        return header.index(column)


def _json_label_text(value: Any) -> str:
    """Label values from JSON/YAML as the strings a TSV would hold: 1 -> "1", true -> "true"."""
    return value if isinstance(value, str) else json.dumps(value)


@dataclass(frozen=True)
class JsonlReader:
    """One JSON object per line; text_a/text_b/label are keys."""

    text_a: str
    text_b: str | None
    label: str | None

    def __call__(self, path: Path, task: TaskSpec) -> list[Example]:
        return list(self.iter_examples(path, task))

    def iter_examples(self, path: Path, task: TaskSpec) -> Iterator[Example]:
        path = Path(path)
        label2id = task.label2id
        for lineno, line in _lines(path):
            where = f"{path}:{lineno}"
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{where}: malformed JSON ({e.msg})") from None
            if not isinstance(record, dict):
                raise DataError(f"{where}: expected a JSON object, found {type(record).__name__}")
            text_a = self._text(record, self.text_a, where)
            text_b = None if self.text_b is None else self._text(record, self.text_b, where)
            label = None
            if self.label is not None:
                if self.label not in record:
                    raise DataError(f"{where}: no key {self.label!r} (keys: {', '.join(record)})")
                label = _parse_label(task, label2id, _json_label_text(record[self.label]), where)
            yield Example(text_a, text_b, label, f"{path.name}:{lineno}")

    @staticmethod
    def _text(record: dict, key: str, where: str) -> str:
        if key not in record:
            raise DataError(f"{where}: no key {key!r} (keys: {', '.join(record)})")
        value = record[key]
        if not isinstance(value, str):
            raise DataError(f"{where}: {key!r} must be a string, found {type(value).__name__}")
        return value


# ---------------------------------------------------------------------------------------------------------------
# The GLUE registry
# ---------------------------------------------------------------------------------------------------------------
def _glue_files(dev: str = "dev.tsv", test: str = "test.tsv") -> dict[str, str]:
    return {"train": "train.tsv", "dev": dev, "test": test}


# Official layouts. Labeled files first, then the GLUE test files (no label column).
_COLA = TableReader(  # source, label, original label, sentence; no header. Test: index, sentence (with header)
    Layout(header=False, text_a=3, label=1, num_fields=4), test_layout=Layout(header=True, text_a=1)
)
_SST2 = TableReader(Layout(header=True, text_a=0, label=1), test_layout=Layout(header=True, text_a=1))
_MRPC = TableReader(  # Quality, #1 ID, #2 ID, #1 String, #2 String (header starts with a BOM)
    Layout(header=True, text_a=3, text_b=4, label=0), test_layout=Layout(header=True, text_a=3, text_b=4)
)
_STSB = TableReader(  # index genre filename year old_index source1 source2 sentence1 sentence2 score
    Layout(header=True, text_a=7, text_b=8, label=9), test_layout=Layout(header=True, text_a=7, text_b=8)
)
_QQP = TableReader(  # id qid1 qid2 question1 question2 is_duplicate. Test: id question1 question2
    Layout(header=True, text_a=3, text_b=4, label=5), test_layout=Layout(header=True, text_a=1, text_b=2)
)
_MNLI = TableReader(  # 12 fields (train) or 16 (dev: label1..5); sentence1 col 8, sentence2 col 9, gold_label last
    Layout(header=True, text_a=8, text_b=9, label=-1), test_layout=Layout(header=True, text_a=8, text_b=9)
)
_PAIR = TableReader(  # QNLI (index question sentence label), RTE and WNLI (index sentence1 sentence2 label)
    Layout(header=True, text_a=1, text_b=2, label=3), test_layout=Layout(header=True, text_a=1, text_b=2)
)

_NLI3 = ("contradiction", "entailment", "neutral")
_NLI2 = ("entailment", "not_entailment")
_BINARY = ("0", "1")

# The one registry of GLUE tasks. Tolerances: the DeBERTa paper's ± ranges, in metric points.
TASKS: dict[str, TaskSpec] = {
    t.name: t
    for t in (
        TaskSpec("cola", "CoLA", _glue_files(), _BINARY, ("mcc",), "mcc", 1.0, _COLA,
                 "grammatical acceptability (1 = acceptable)"),
        TaskSpec("sst2", "SST-2", _glue_files(), _BINARY, ("accuracy",), "accuracy", 0.3, _SST2,
                 "movie review sentiment (1 = positive)"),
        TaskSpec("mrpc", "MRPC", _glue_files(), _BINARY, ("accuracy", "f1"), "accuracy", 0.5, _MRPC,
                 "paraphrase (1 = equivalent)"),
        TaskSpec("stsb", "STS-B", _glue_files(), None, ("pearson", "spearman"), "pearson", 0.3, _STSB,
                 "semantic similarity score 0-5 (regression)"),
        TaskSpec("qqp", "QQP", _glue_files(), _BINARY, ("accuracy", "f1"), "accuracy", 0.1, _QQP,
                 "duplicate Quora questions (1 = duplicate)"),
        TaskSpec("mnli", "MNLI", _glue_files("dev_matched.tsv", "test_matched.tsv"), _NLI3, ("accuracy",),
                 "accuracy", 0.2, _MNLI, "natural language inference, matched dev set",
                 aliases=("mnli-m", "mnli_matched")),
        TaskSpec("mnli-mm", "MNLI", _glue_files("dev_mismatched.tsv", "test_mismatched.tsv"), _NLI3, ("accuracy",),
                 "accuracy", 0.2, _MNLI, "natural language inference, mismatched dev set",
                 aliases=("mnli_mismatched",)),
        TaskSpec("qnli", "QNLI", _glue_files(), _NLI2, ("accuracy",), "accuracy", 0.2, _PAIR,
                 "does the sentence answer the question"),
        TaskSpec("rte", "RTE", _glue_files(), _NLI2, ("accuracy",), "accuracy", 1.0, _PAIR,
                 "textual entailment"),
        TaskSpec("wnli", "WNLI", _glue_files(), _BINARY, ("accuracy",), "accuracy", 0.0, _PAIR,
                 "Winograd pronoun entailment (1 = entailment)"),
    )
}


def _normalize(name: str) -> str:
    return "".join(ch for ch in name.strip().lower() if ch not in "-_ ")


def _task_keys(task: TaskSpec) -> set[str]:
    keys = {_normalize(task.name)} | {_normalize(a) for a in task.aliases}
    if task.folder and sum(t.folder == task.folder for t in TASKS.values()) == 1:  # MNLI is shared: no alias
        keys.add(_normalize(task.folder))
    return keys


def _build_aliases() -> dict[str, str]:
    table: dict[str, str] = {}
    for task in TASKS.values():
        for key in _task_keys(task):
            if table.setdefault(key, task.name) != task.name:
                raise RuntimeError(f"task alias {key!r} is claimed by both {table[key]} and {task.name}")
    return table


_ALIASES = _build_aliases()


def iter_tasks() -> Iterator[TaskSpec]:
    return iter(TASKS.values())


def get_task(name_or_spec: str | Path | TaskSpec) -> TaskSpec:
    """A GLUE task by run_glue name, folder name or alias (case-insensitive), or a user task from a spec file."""
    if isinstance(name_or_spec, TaskSpec):
        return name_or_spec
    text = str(name_or_spec).strip()
    key = _normalize(text)
    if key in _ALIASES:
        return TASKS[_ALIASES[key]]
    path = Path(text).expanduser()
    if path.suffix.lower() in SPEC_SUFFIXES or path.is_file():
        return load_task_spec(path)
    raise DataError(f"unknown task {text!r}; valid: {', '.join(TASKS)}, or a .yaml/.yml/.json task spec file")


def check_model_labels(task: TaskSpec, num_outputs: int, model: str | Path) -> None:
    """ConfigError unless a model with `num_outputs` logits per example fits `task`: one per class label, or one
    score for a regression task. `model` names the model in the message."""
    if num_outputs == task.num_labels:
        return
    wants = ("a regression task (one score per example)" if task.is_regression
             else f"{task.num_labels} labels ({', '.join(task.labels or ())})")
    has = "1 output (a regression head)" if num_outputs == 1 else f"{num_outputs} labels"
    raise ConfigError(f"task {task.name} has {wants}, but {model} predicts {has}; evaluate it on a task with "
                      "the labels it was trained for")


# ---------------------------------------------------------------------------------------------------------------
# Finding and loading data
# ---------------------------------------------------------------------------------------------------------------
def resolve_data_dir(data_dir: str | Path | None = None) -> Path:
    """The GLUE folder: `data_dir`, else $GLUE_DIR, else ../shared/glue from the current directory, else
    ../shared/glue from the repository root."""
    if data_dir is not None and str(data_dir) != "":
        path = Path(data_dir).expanduser()
        if not path.is_dir():
            raise DataError(f"data dir {path} does not exist or is not a folder")
        return path
    env = os.environ.get("GLUE_DIR")
    if env:
        path = Path(env).expanduser()
        if not path.is_dir():
            raise DataError(f"$GLUE_DIR={env} does not exist or is not a folder")
        return path
    candidates = [Path.cwd().parent / "shared" / "glue", _REPO_ROOT.parent / "shared" / "glue"]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate.resolve()
    looked = ", ".join(str(c) for c in candidates)
    raise DataError(f"no GLUE data folder found (looked in {looked}); pass --data-dir or set $GLUE_DIR")


def _task_dir(task: TaskSpec, root: Path, file: str) -> Path:
    exact = root / task.folder
    if exact.is_dir():
        return exact
    wanted = _normalize(task.folder)
    for child in sorted(root.iterdir()):
        if child.is_dir() and _normalize(child.name) == wanted:
            return child
    if _normalize(root.name) in _task_keys(task) | {wanted}:  # data_dir is the task folder itself
        return root
    raise DataError(f"no {task.folder} folder for task {task.name} in {root} (expected {exact / file})")


def split_path(task: TaskSpec | str, data_dir: str | Path | None, split: str) -> Path:
    """The file that holds `split` of `task`; DataError if the split is not defined or the file is missing."""
    task = get_task(task)
    if split not in task.files:
        raise DataError(f"task {task.name} has no split {split!r} (splits: {', '.join(task.files)})")
    file = task.files[split]
    if task.spec_dir is not None:  # user task: relative to data_dir when given, else to the spec's folder
        base = Path(data_dir).expanduser() if data_dir is not None and str(data_dir) != "" else task.spec_dir
        if not base.is_dir():
            raise DataError(f"data dir {base} does not exist or is not a folder")
        path = base / file
    else:
        path = _task_dir(task, resolve_data_dir(data_dir), file) / file
    if not path.is_file():
        raise DataError(f"missing {split} split of task {task.name}: {path} not found")
    return path


def load_split(
    task: TaskSpec | str, data_dir: str | Path | None, split: str, limit: int | None = None
) -> list[Example]:
    """Examples of one split (at most `limit`, read lazily when the reader allows). DataError on bad data."""
    return list(iter_split(task, data_dir, split, limit))


def iter_split(
    task: TaskSpec | str, data_dir: str | Path | None, split: str, limit: int | None = None
) -> Iterator[Example]:
    """The examples of one split one at a time, as the file is read (readers with `iter_examples`; others are read
    whole): memory does not grow with the split. DataError on bad data, when the bad row is reached."""
    task = get_task(task)
    path = split_path(task, data_dir, split)
    if limit is not None and limit < 0:
        raise ConfigError(f"limit must be >= 0, got {limit}")
    lazy = getattr(task.reader, "iter_examples", None)
    examples = lazy(path, task) if lazy else iter(task.reader(path, task))
    n = 0
    for example in examples if limit is None else itertools.islice(examples, limit):
        n += 1
        yield example
    if n == 0 and limit != 0:
        raise DataError(f"{path} is empty: no data rows")


# ---------------------------------------------------------------------------------------------------------------
# User-defined tasks
# ---------------------------------------------------------------------------------------------------------------
SPEC_KEYS = (
    "name", "description", "format", "files", "header", "text_a", "text_b", "label", "labels", "regression",
    "metrics", "primary_metric", "tolerance",
)
_SUFFIX_FORMATS = {".tsv": "tsv", ".csv": "csv", ".jsonl": "jsonl"}


def load_task_spec(path: str | Path) -> TaskSpec:
    """A user task from YAML or JSON, e.g.

        name: my-sentiment
        format: tsv                               # tsv | csv | jsonl (default: from the files' suffix)
        files: {train: train.tsv, dev: dev.tsv}   # relative to --data-dir when given, else to this file's folder
        header: true                              # tsv/csv: the first line names the columns
        text_a: review                            # column name, or 0-based index; jsonl: key
        text_b: null                              # optional second text
        label: stars                              # label column / key
        labels: [neg, pos]                        # class labels in index order; or `regression: true`
        metrics: [accuracy, f1]                   # default: accuracy, or pearson+spearman for regression
        primary_metric: accuracy                  # default: the first metric
        tolerance: 0.5                            # allowed drop in metric points for the gate (default 1.0)
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"task spec {path} not found")
    suffix = path.suffix.lower()
    if suffix not in SPEC_SUFFIXES:
        raise ConfigError(f"task spec {path} must be a {'/'.join(SPEC_SUFFIXES)} file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"task spec {path} is not UTF-8 text") from None
    if suffix == ".json":
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from None
    else:
        import yaml

        try:
            raw = yaml.safe_load(text)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
            problem = getattr(e, "problem", None) or "syntax error"
            raise ConfigError(f"{where}: invalid YAML ({problem})") from None
    return task_spec_from_dict(raw, base_dir=path.parent, source=str(path))


def task_spec_from_dict(raw: Any, base_dir: str | Path, source: str = "task spec") -> TaskSpec:
    """Validate a parsed spec (see load_task_spec) and build its TaskSpec. ConfigError names the bad key."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of keys, found {type(raw).__name__}")
    unknown = [k for k in raw if k not in SPEC_KEYS]
    if unknown:
        raise ConfigError(f"{source}: unknown key {unknown[0]!r} (valid keys: {', '.join(SPEC_KEYS)})")
    for key in ("name", "files", "text_a", "label"):
        if raw.get(key) is None:
            raise ConfigError(f"{source}: missing key {key!r}")

    def bad(message: str) -> ConfigError:
        return ConfigError(f"{source}: {message}")

    name = raw["name"]
    if not isinstance(name, str) or not name.strip():
        raise bad("'name' must be a non-empty string")
    files = raw["files"]
    if not isinstance(files, dict) or not files:
        raise bad("'files' must map split names to files, e.g. {train: train.tsv, dev: dev.tsv}")
    for split, file in files.items():
        if not isinstance(split, str) or not isinstance(file, str) or not file:
            raise bad(f"'files': {split!r} must map to a file name")

    fmt = raw.get("format")
    if fmt is None:
        found = {_SUFFIX_FORMATS.get(Path(f).suffix.lower()) for f in files.values()}
        if len(found) != 1 or None in found:
            raise bad(f"cannot tell the format from the file names; set 'format' ({', '.join(FORMATS)})")
        fmt = found.pop()
    if fmt not in FORMATS:
        raise bad(f"unknown format {fmt!r} (valid: {', '.join(FORMATS)})")
    header = raw.get("header", True)
    if not isinstance(header, bool):
        raise bad("'header' must be true or false")

    def column(key: str) -> Column | None:
        value = raw.get(key)
        if value is None:
            return None
        if fmt == "jsonl" and not isinstance(value, str):
            raise bad(f"{key!r} must be a JSON key (a string) for jsonl files")
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise bad(f"{key!r} must be a column name or a 0-based column index")
        if fmt != "jsonl" and not header and not isinstance(value, int):
            raise bad(f"{key!r} must be a 0-based column index when 'header' is false")
        return value

    text_a, text_b, label = column("text_a"), column("text_b"), column("label")

    regression = raw.get("regression", False)
    if not isinstance(regression, bool):
        raise bad("'regression' must be true or false")
    labels = raw.get("labels")
    if regression and labels is not None:
        raise bad("give either 'labels' or 'regression: true', not both")
    if not regression:
        if labels is None:
            raise bad("missing key 'labels' (the class labels in index order), or set 'regression: true'")
        if not isinstance(labels, list) or len(labels) < 2:
            raise bad("'labels' must be a list of at least 2 class labels")
        if any(isinstance(v, bool) for v in labels):
            raise bad("'labels' holds true/false: quote labels such as yes/no/on/off in YAML")
        if any(not isinstance(v, (str, int)) for v in labels):
            raise bad("'labels' must hold strings (or integers)")
        labels = tuple(_json_label_text(v) for v in labels)
        if len(set(labels)) != len(labels):
            raise bad("'labels' has duplicates")

    metrics = raw.get("metrics", ["pearson", "spearman"] if regression else ["accuracy"])
    if isinstance(metrics, str):
        metrics = [metrics]
    if not isinstance(metrics, list) or not metrics or not all(isinstance(m, str) for m in metrics):
        raise bad("'metrics' must be a non-empty list of metric names")
    num_labels = 1 if regression else len(labels)
    for metric in metrics:
        problem = check_metric_fits(metric, regression, num_labels)
        if problem:
            raise bad(problem)
    primary = raw.get("primary_metric", metrics[0])
    if primary not in metrics:
        raise bad(f"primary_metric {primary!r} is not one of the metrics ({', '.join(metrics)})")
    tolerance = raw.get("tolerance", 1.0)
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not tolerance >= 0:
        raise bad("'tolerance' must be a number >= 0 (metric points)")
    description = raw.get("description") or ""

    if fmt == "jsonl":
        reader: Callable[[Path, TaskSpec], list[Example]] = JsonlReader(text_a, text_b, label)
    else:
        reader = TableReader(Layout(header, text_a, text_b, label), delimiter="\t" if fmt == "tsv" else ",")
    return TaskSpec(
        name=name.strip(),
        folder="",
        files=dict(files),
        labels=None if regression else labels,
        metrics=tuple(metrics),
        primary_metric=primary,
        paper_tolerance=float(tolerance),
        reader=reader,
        description=str(description),
        spec_dir=Path(base_dir),
    )
