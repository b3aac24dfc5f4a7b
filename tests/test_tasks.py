"""debx.tasks: GLUE readers on the real data, a fixture for every registered task, errors, user task specs."""

from __future__ import annotations

import csv
import json
import os
from collections import Counter
from pathlib import Path

import pytest
import yaml

from debx import tasks
from debx.errors import ConfigError, DataError
from debx.tasks import TASKS, Example, get_task, load_split, load_task_spec, resolve_data_dir

REPO_ROOT = Path(__file__).resolve().parents[1]
GLUE = Path(os.environ.get("GLUE_DIR") or REPO_ROOT.parent / "shared" / "glue")


def write(path: Path, lines: list[str], bom: bool = False, final_newline: bool = True) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "\n".join(lines) + ("\n" if final_newline else "")
    path.write_text(("\ufeff" if bom else "") + text, encoding="utf-8")
    return path


def rows(examples: list[Example]) -> list[tuple]:
    return [(e.text_a, e.text_b, e.label) for e in examples]


# ---------------------------------------------------------------------------------------------------------------
# Real GLUE data (../shared/glue from the repository root, or $GLUE_DIR)
# ---------------------------------------------------------------------------------------------------------------
# task -> (train rows, dev rows, dev label counts by label string), as documented in shared/glue/README.md
REAL = {
    "cola": (8551, 1043, {"1": 721, "0": 322}),
    "sst2": (67349, 872, {"1": 444, "0": 428}),
    "mrpc": (3668, 408, {"1": 279, "0": 129}),
    "rte": (2490, 277, {"entailment": 146, "not_entailment": 131}),
    "stsb": (5749, 1500, None),
    "wnli": (635, 71, {"0": 40, "1": 31}),
}
REAL_TRAIN_LABELS = {"sst2": {"1": 37569, "0": 29780}, "mrpc": {"1": 2474, "0": 1194}}
REAL_FIRST_DEV = {
    "cola": ("The sailors rode the breeze clear of the rocks.", None, 1),
    "sst2": ("it 's a charming and often affecting journey . ", None, 1),
    "mrpc": (
        "He said the foodservice pie business doesn 't fit the company 's long-term growth strategy .",
        '" The foodservice pie business does not fit our long-term growth strategy .',  # unbalanced quote kept
        1,
    ),
    "rte": (
        "Dana Reeve, the widow of the actor Christopher Reeve, has died of lung cancer at age 44, according to the "
        "Christopher Reeve Foundation.",
        "Christopher Reeve had an accident.",
        1,  # not_entailment
    ),
    "stsb": ("A man with a hard hat is dancing.", "A man wearing a hard hat is dancing.", 5.0),
    "wnli": ("The drain is clogged with hair. It has to be cleaned.", "The hair has to be cleaned.", 0),
}


def real_task(name: str):
    task = TASKS[name]
    if not (GLUE / task.folder).is_dir():
        pytest.skip(f"GLUE {task.folder} not present in {GLUE}")
    return task


@pytest.mark.parametrize("name", sorted(REAL))
def test_real_glue_counts_labels_and_first_rows(name):
    task = real_task(name)
    n_train, n_dev, dev_counts = REAL[name]
    train, dev = load_split(task, GLUE, "train"), load_split(task, GLUE, "dev")
    assert (len(train), len(dev)) == (n_train, n_dev)
    assert rows(dev[:1]) == [REAL_FIRST_DEV[name]]
    assert dev[0].guid == ("dev.tsv:1" if name == "cola" else "dev.tsv:2")  # CoLA has no header line
    for ex in train + dev:
        assert ex.text_a and "\t" not in ex.text_a and "\n" not in ex.text_a
        assert (ex.text_b is None) == (name in ("cola", "sst2"))
    if dev_counts is None:  # STS-B: float scores in [0, 5]
        assert all(isinstance(e.label, float) and 0.0 <= e.label <= 5.0 for e in train + dev)
    else:
        assert Counter(task.labels[e.label] for e in dev) == dev_counts
    if name in REAL_TRAIN_LABELS:
        assert Counter(task.labels[e.label] for e in train) == REAL_TRAIN_LABELS[name]


def test_real_cola_dev_last_row_without_trailing_newline():
    task = real_task("cola")
    assert (GLUE / "CoLA" / "dev.tsv").read_bytes()[-1:] != b"\n"
    last = load_split(task, GLUE, "dev")[-1]
    assert (last.text_a, last.label, last.guid) == ("John talked to Bill about himself.", 1, "dev.tsv:1043")


@pytest.mark.parametrize("name", ["mrpc", "rte", "stsb", "wnli"])
def test_real_glue_matches_csv_module_with_quote_none(name):
    """An independent parse (csv.reader, QUOTE_NONE) agrees field for field: quotes are plain text."""
    task = real_task(name)
    with open(GLUE / task.folder / "dev.tsv", encoding="utf-8-sig", newline="") as f:
        parsed = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[1:]
    layout = task.reader.layout
    ours = load_split(task, GLUE, "dev")
    assert [(e.text_a, e.text_b) for e in ours] == [(r[layout.text_a], r[layout.text_b]) for r in parsed]
    assert any('"' in e.text_a + e.text_b for e in ours) or name == "wnli"


def test_real_limit_and_task_folder_as_data_dir():
    task = real_task("sst2")
    first = load_split(task, GLUE, "train", limit=5)
    assert rows(first) == rows(load_split(task, GLUE / "SST-2", "train")[:5])
    assert load_split(task, GLUE, "dev", limit=0) == []


# ---------------------------------------------------------------------------------------------------------------
# A fixture for every registered task: tiny files in the official layouts (also for tasks absent here)
# ---------------------------------------------------------------------------------------------------------------
def _cola(root: Path) -> dict:
    d = root / "CoLA"
    write(d / "train.tsv", ["gj04\t1\t\tThe sailors rode the breeze.", "gj04\t0\t*\tThe more he reads, the book."])
    write(d / "dev.tsv", ["w_80\t0\t*\tHim left.", "w_80\t1\t\tJohn left."], final_newline=False)
    write(d / "test.tsv", ["index\tsentence", "0\tBill whistled past the house."])
    return {
        "train": [("The sailors rode the breeze.", None, 1), ("The more he reads, the book.", None, 0)],
        "dev": [("Him left.", None, 0), ("John left.", None, 1)],
        "test": [("Bill whistled past the house.", None, None)],
    }


def _sst2(root: Path) -> dict:
    d = root / "SST-2"
    write(d / "train.tsv", ["sentence\tlabel", "a gorgeous film \t1", 'a " bleak mess \t0'])
    write(d / "dev.tsv", ["sentence\tlabel", "unflinchingly bleak \t0"])
    write(d / "test.tsv", ["index\tsentence", "0\tuneasy mishmash of styles ."])
    return {
        "train": [("a gorgeous film ", None, 1), ('a " bleak mess ', None, 0)],
        "dev": [("unflinchingly bleak ", None, 0)],
        "test": [("uneasy mishmash of styles .", None, None)],
    }


def _mrpc(root: Path) -> dict:
    d = root / "MRPC"
    head = "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String"
    train = '1\t702876\t702977\tAmrozi accused " his brother .\tHe accused his brother .'
    write(d / "train.tsv", [head, train], bom=True)
    write(d / "dev.tsv", [head, "0\t1\t2\tYucaipa owned it .\tYucaipa bought it ."], bom=True)
    test_head = "index\t#1 ID\t#2 ID\t#1 String\t#2 String"
    write(d / "test.tsv", [test_head, "0\t1089874\t1089925\tPCCW 's chief .\tThe chief ."])
    return {
        "train": [('Amrozi accused " his brother .', "He accused his brother .", 1)],
        "dev": [("Yucaipa owned it .", "Yucaipa bought it .", 0)],
        "test": [("PCCW 's chief .", "The chief .", None)],
    }


def _stsb(root: Path) -> dict:
    d = root / "STS-B"
    cols = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2"
    train = "0\tmain-captions\tMSRvid\t2012test\t0001\tnone\tnone\tA plane.\tAn air plane.\t5.000"
    write(d / "train.tsv", [cols + "\tscore", train])
    write(d / "dev.tsv", [cols + "\tscore", "0\tmain-news\tMSRpar\t2012test\t0000\tnone\tnone\tA man.\tA dog.\t0.250"])
    write(d / "test.tsv", [cols, "0\tmain-news\tMSRpar\t2012test\t0000\tnone\tnone\tA girl.\tA boy."])
    return {
        "train": [("A plane.", "An air plane.", 5.0)],
        "dev": [("A man.", "A dog.", 0.25)],
        "test": [("A girl.", "A boy.", None)],
    }


def _qqp(root: Path) -> dict:
    d = root / "QQP"
    head = "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate"
    write(d / "train.tsv", [head, '133273\t213221\t213222\tHow is "life?\tHow is life?\t1'])
    write(d / "dev.tsv", [head, "402555\t536040\t536041\tHow do I stop?\tHow can I quit?\t0"])
    write(d / "test.tsv", ["id\tquestion1\tquestion2", "0\tWhy?\tWhy not?"])
    return {
        "train": [('How is "life?', "How is life?", 1)],
        "dev": [("How do I stop?", "How can I quit?", 0)],
        "test": [("Why?", "Why not?", None)],
    }


_MNLI_HEAD = "\t".join(
    ["index", "promptID", "pairID", "genre", "sentence1_binary_parse", "sentence2_binary_parse", "sentence1_parse",
     "sentence2_parse", "sentence1", "sentence2"]
)


def _mnli_row(i: int, s1: str, s2: str, *labels: str) -> str:
    parses = ["( ( x ) )", "( y )", "(ROOT (S x))", "(ROOT (S y))"]
    return "\t".join([str(i), "31193", "31193n", "government", *parses, s1, s2, *labels])


def _mnli_files(root: Path, dev: str, test: str) -> dict:
    d = root / "MNLI"
    train = _mnli_row(0, 'Product " and geography.', "Geography.", "neutral", "neutral")
    write(d / "train.tsv", [_MNLI_HEAD + "\tlabel1\tgold_label", train])
    dev_head = _MNLI_HEAD + "\tlabel1\tlabel2\tlabel3\tlabel4\tlabel5\tgold_label"
    write(d / dev, [dev_head, _mnli_row(0, "He came.", "He left.", *["contradiction"] * 5, "contradiction"),
                    _mnli_row(1, "It rained.", "It was wet.", "entailment", "neutral", *["entailment"] * 4)])
    write(d / test, [_MNLI_HEAD, _mnli_row(0, "Hello.", "Hi.")])
    return {
        "train": [('Product " and geography.', "Geography.", 2)],
        "dev": [("He came.", "He left.", 0), ("It rained.", "It was wet.", 1)],
        "test": [("Hello.", "Hi.", None)],
    }


def _mnli(root: Path) -> dict:
    return _mnli_files(root, "dev_matched.tsv", "test_matched.tsv")


def _mnli_mm(root: Path) -> dict:
    return _mnli_files(root, "dev_mismatched.tsv", "test_mismatched.tsv")


def _pair_task(folder: str, head: list[str], labels: tuple[str, str]):
    def fixture(root: Path) -> dict:
        d = root / folder
        train = [f'0\tWho said "hi?\tShe said hi.\t{labels[0]}', f"1\tA.\tB.\t{labels[1]}"]
        write(d / "train.tsv", ["\t".join(head), *train])
        write(d / "dev.tsv", ["\t".join(head), f"0\tC.\tD.\t{labels[1]}"])
        write(d / "test.tsv", ["\t".join(head[:3]), "0\tE.\tF."])
        return {
            "train": [('Who said "hi?', "She said hi.", 0), ("A.", "B.", 1)],
            "dev": [("C.", "D.", 1)],
            "test": [("E.", "F.", None)],
        }

    return fixture


FIXTURES = {
    "cola": _cola,
    "sst2": _sst2,
    "mrpc": _mrpc,
    "stsb": _stsb,
    "qqp": _qqp,
    "mnli": _mnli,
    "mnli-mm": _mnli_mm,
    "qnli": _pair_task("QNLI", ["index", "question", "sentence", "label"], ("entailment", "not_entailment")),
    "rte": _pair_task("RTE", ["index", "sentence1", "sentence2", "label"], ("entailment", "not_entailment")),
    "wnli": _pair_task("WNLI", ["index", "sentence1", "sentence2", "label"], ("0", "1")),
}


def test_every_registered_task_has_a_fixture():
    assert set(FIXTURES) == set(TASKS), "add a fixture to FIXTURES for every task in debx.tasks.TASKS"


@pytest.mark.parametrize("name", sorted(TASKS))
def test_registered_task_reads_its_fixture(name, tmp_path):
    assert name in FIXTURES, f"task {name} has no fixture in tests/test_tasks.py"
    task = TASKS[name]
    expected = FIXTURES[name](tmp_path)
    assert set(expected) == set(task.files), f"fixture of {name} must cover every split"
    for split, want in expected.items():
        got = load_split(task, tmp_path, split)
        assert rows(got) == want, split
        assert all(e.guid.startswith(task.files[split] + ":") for e in got)


@pytest.mark.parametrize("name", sorted(TASKS))
def test_registry_entries_are_consistent(name):
    task = TASKS[name]
    assert get_task(name) is task
    assert task.primary_metric in task.metrics
    assert task.num_labels == (1 if task.is_regression else len(task.labels))
    assert {"train", "dev"} <= set(task.files)
    assert task.paper_tolerance >= 0


def test_label_orders_match_run_glue():
    assert TASKS["mnli"].labels == TASKS["mnli-mm"].labels == ("contradiction", "entailment", "neutral")
    assert TASKS["rte"].labels == TASKS["qnli"].labels == ("entailment", "not_entailment")
    for name in ("cola", "sst2", "mrpc", "qqp", "wnli"):
        assert TASKS[name].labels == ("0", "1")
    assert TASKS["stsb"].labels is None and TASKS["stsb"].num_labels == 1
    assert TASKS["mnli-mm"].files["dev"] == "dev_mismatched.tsv" and TASKS["mnli"].files["dev"] == "dev_matched.tsv"
    assert {n: t.primary_metric for n, t in TASKS.items() if t.primary_metric != "accuracy"} == {
        "cola": "mcc",
        "stsb": "pearson",
    }


# ---------------------------------------------------------------------------------------------------------------
# Names and data folders
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "alias, name",
    [("SST-2", "sst2"), ("sst-2", "sst2"), ("STS-B", "stsb"), ("sts_b", "stsb"), ("CoLA", "cola"), ("MNLI", "mnli"),
     ("mnli_matched", "mnli"), ("mnli_mismatched", "mnli-mm"), ("MNLI-MM", "mnli-mm"), (" qqp ", "qqp"),
     ("RTE", "rte")],
)
def test_aliases(alias, name):
    assert get_task(alias).name == name


def test_unknown_task_lists_valid_names():
    with pytest.raises(DataError, match="unknown task 'glue9'.*cola.*mnli-mm.*wnli"):
        get_task("glue9")


def test_missing_folder(tmp_path):
    with pytest.raises(DataError, match=r"no SST-2 folder .*SST-2/dev\.tsv"):
        load_split("sst2", tmp_path, "dev")
    with pytest.raises(DataError, match="does not exist"):
        load_split("sst2", tmp_path / "nope", "dev")


def test_missing_and_undefined_split(tmp_path):
    write(tmp_path / "SST-2" / "train.tsv", ["sentence\tlabel", "good\t1"])
    with pytest.raises(DataError, match=r"missing dev split of task sst2: .*dev\.tsv not found"):
        load_split("sst2", tmp_path, "dev")
    with pytest.raises(DataError, match="no split 'validation' .*train, dev, test"):
        load_split("sst2", tmp_path, "validation")


def test_folder_name_is_matched_case_insensitively(tmp_path):
    write(tmp_path / "sst-2" / "dev.tsv", ["sentence\tlabel", "good\t1"])
    assert rows(load_split("sst2", tmp_path, "dev")) == [("good", None, 1)]


@pytest.mark.parametrize("content", [b"", b"sentence\tlabel\n", b"\n\n"])
def test_empty_file(tmp_path, content):
    (tmp_path / "SST-2").mkdir()
    (tmp_path / "SST-2" / "dev.tsv").write_bytes(content)
    with pytest.raises(DataError, match="empty"):
        load_split("sst2", tmp_path, "dev")


@pytest.mark.parametrize(
    "folder, name, lines, where",
    [
        ("SST-2", "sst2", ["sentence\tlabel", "good\t1", "no tab here"], "dev.tsv:3"),
        ("SST-2", "sst2", ["sentence\tlabel", "good\t1", "a\tb\t1"], "dev.tsv:3"),
        ("CoLA", "cola", ["gj04\t1\t\tFine.", "gj04\t1\tToo few."], "dev.tsv:2"),
        ("RTE", "rte", ["index\tsentence1\tsentence2\tlabel", "0\ta\tb\tentailment", "", "1\ta\tb"], "dev.tsv:4"),
    ],
)
def test_malformed_row_names_file_and_line(tmp_path, folder, name, lines, where):
    write(tmp_path / folder / "dev.tsv", lines)
    with pytest.raises(DataError, match=f"{where}: malformed row"):
        load_split(name, tmp_path, "dev")


def test_unknown_label_names_file_line_and_valid_labels(tmp_path):
    write(tmp_path / "SST-2" / "dev.tsv", ["sentence\tlabel", "good\t1", "odd\tpositive"])
    with pytest.raises(DataError, match=r"dev\.tsv:3: unknown label 'positive' .*valid labels: 0, 1"):
        load_split("sst2", tmp_path, "dev")
    write(tmp_path / "RTE" / "dev.tsv", ["index\tsentence1\tsentence2\tlabel", "0\ta\tb\tentailed"])
    with pytest.raises(DataError, match=r"dev\.tsv:2: unknown label 'entailed' .*entailment, not_entailment"):
        load_split("rte", tmp_path, "dev")


def test_bad_regression_score(tmp_path):
    head = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore"
    write(tmp_path / "STS-B" / "dev.tsv", [head, "0\tg\tf\ty\t0\tn\tn\tA.\tB.\thigh"])
    with pytest.raises(DataError, match=r"dev\.tsv:2: score 'high' is not a number"):
        load_split("stsb", tmp_path, "dev")


def test_not_utf8_names_the_line(tmp_path):
    (tmp_path / "SST-2").mkdir()
    (tmp_path / "SST-2" / "dev.tsv").write_bytes(b"sentence\tlabel\ngood\t1\nbad \xff\t0\n")
    with pytest.raises(DataError, match=r"dev\.tsv:3: not UTF-8"):
        load_split("sst2", tmp_path, "dev")


def test_crlf_and_line_separators_inside_text(tmp_path):
    (tmp_path / "SST-2").mkdir()
    (tmp_path / "SST-2" / "dev.tsv").write_bytes("sentence\tlabel\r\nA\u2028B\x0bC\t1\r\n".encode())
    assert rows(load_split("sst2", tmp_path, "dev")) == [("A\u2028B\x0bC", None, 1)]


def test_glue_dir_resolution(tmp_path, monkeypatch):
    env_dir, arg_dir = tmp_path / "env", tmp_path / "arg"
    write(env_dir / "SST-2" / "dev.tsv", ["sentence\tlabel", "from env\t1"])
    write(arg_dir / "SST-2" / "dev.tsv", ["sentence\tlabel", "from arg\t0"])
    monkeypatch.setenv("GLUE_DIR", str(env_dir))
    assert resolve_data_dir(None) == env_dir
    assert load_split("sst2", None, "dev")[0].text_a == "from env"
    assert load_split("sst2", arg_dir, "dev")[0].text_a == "from arg"  # explicit beats $GLUE_DIR
    monkeypatch.setenv("GLUE_DIR", str(tmp_path / "missing"))
    with pytest.raises(DataError, match=r"\$GLUE_DIR=.*missing"):
        resolve_data_dir(None)


def test_default_data_dir_cwd_then_repo_root(tmp_path, monkeypatch):
    monkeypatch.delenv("GLUE_DIR", raising=False)
    (tmp_path / "shared" / "glue").mkdir(parents=True)
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    assert resolve_data_dir(None) == (tmp_path / "shared" / "glue").resolve()

    repo = tmp_path / "r" / "repo"
    (tmp_path / "r" / "shared" / "glue").mkdir(parents=True)
    monkeypatch.setattr(tasks, "_REPO_ROOT", repo)
    (tmp_path / "elsewhere" / "cwd").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "elsewhere" / "cwd")  # its ../shared/glue does not exist
    assert resolve_data_dir(None) == (tmp_path / "r" / "shared" / "glue").resolve()

    monkeypatch.setattr(tasks, "_REPO_ROOT", tmp_path / "x" / "repo")
    with pytest.raises(DataError, match="no GLUE data folder found"):
        resolve_data_dir(None)


# ---------------------------------------------------------------------------------------------------------------
# User-defined tasks
# ---------------------------------------------------------------------------------------------------------------
def write_spec(folder: Path, spec: dict, suffix: str = ".yaml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"task{suffix}"
    path.write_text(yaml.safe_dump(spec) if suffix != ".json" else json.dumps(spec), encoding="utf-8")
    return path


BASE_SPEC = {
    "name": "my-sentiment",
    "format": "tsv",
    "files": {"train": "train.tsv", "dev": "dev.tsv"},
    "header": True,
    "text_a": "review",
    "label": "stars",
    "labels": ["neg", "pos"],
    "metrics": ["accuracy", "f1"],
    "primary_metric": "accuracy",
    "tolerance": 0.5,
}


def test_user_task_yaml_tsv(tmp_path):
    write(tmp_path / "train.tsv", ["id\treview\tstars", '1\tloved " it\tpos', "2\tmeh\tneg"])
    write(tmp_path / "dev.tsv", ["id\treview\tstars", "3\tgreat\tpos"])
    path = write_spec(tmp_path, BASE_SPEC)
    task = get_task(str(path))
    assert (task.name, task.labels, task.metrics, task.primary_metric, task.paper_tolerance) == (
        "my-sentiment", ("neg", "pos"), ("accuracy", "f1"), "accuracy", 0.5)
    assert rows(load_split(task, None, "train")) == [('loved " it', None, 1), ("meh", None, 0)]
    assert load_split(task, None, "dev")[0].guid == "dev.tsv:2"


def test_user_task_data_dir_overrides_spec_folder(tmp_path):
    path = write_spec(tmp_path / "specs", BASE_SPEC)
    write(tmp_path / "data" / "dev.tsv", ["review\tstars", "fine\tpos"])
    task = load_task_spec(path)
    assert rows(load_split(task, tmp_path / "data", "dev")) == [("fine", None, 1)]
    with pytest.raises(DataError, match=r"missing dev split of task my-sentiment: .*specs/dev\.tsv not found"):
        load_split(task, None, "dev")


def test_user_task_json_csv_with_quotes(tmp_path):
    csv_lines = ["text,other,label", '"hello, world","second ""quoted""",yes', '"multi', 'line",x,no', "bad,row"]
    write(tmp_path / "dev.csv", csv_lines)
    spec = {"name": "csvtask", "files": {"dev": "dev.csv"}, "text_a": "text", "text_b": "other", "label": "label",
            "labels": ["no", "yes"]}
    task = load_task_spec(write_spec(tmp_path, spec, ".json"))
    assert task.metrics == ("accuracy",) and task.primary_metric == "accuracy" and task.paper_tolerance == 1.0
    with pytest.raises(DataError, match=r"dev\.csv:5: malformed row"):  # line numbers count the quoted newline
        load_split(task, None, "dev")
    write(tmp_path / "dev.csv", csv_lines[:-1])
    assert rows(load_split(task, None, "dev")) == [("hello, world", 'second "quoted"', 1), ("multi\nline", "x", 0)]


def test_user_task_jsonl_and_integer_labels(tmp_path):
    lines = [
        json.dumps({"premise": "A.", "hypothesis": "B.", "y": 1}),
        "",
        json.dumps({"premise": "C.", "hypothesis": "D.", "y": 0}),
    ]
    write(tmp_path / "train.jsonl", lines)
    spec = {"name": "nli", "files": {"train": "train.jsonl"}, "text_a": "premise", "text_b": "hypothesis",
            "label": "y", "labels": [0, 1], "metrics": ["mcc", "accuracy"]}
    task = load_task_spec(write_spec(tmp_path, spec))
    assert task.labels == ("0", "1")
    got = load_split(task, None, "train")
    assert rows(got) == [("A.", "B.", 1), ("C.", "D.", 0)] and got[1].guid == "train.jsonl:3"
    write(tmp_path / "train.jsonl", [lines[0], '{"premise": "x", "y": 1'])
    with pytest.raises(DataError, match=r"train\.jsonl:2: malformed JSON"):
        load_split(task, None, "train")
    write(tmp_path / "train.jsonl", [json.dumps({"premise": "x", "hypothesis": "y", "y": 2})])
    with pytest.raises(DataError, match=r"train\.jsonl:1: unknown label '2'"):
        load_split(task, None, "train")


def test_user_task_regression_headerless_tsv(tmp_path):
    write(tmp_path / "scores.tsv", ["A cat.\tA dog.\t3.5", "Rain.\tSun.\t0"])
    spec = {"name": "sim", "files": {"dev": "scores.tsv"}, "header": False, "text_a": 0, "text_b": 1, "label": 2,
            "regression": True}
    task = load_task_spec(write_spec(tmp_path, spec))
    assert task.is_regression and task.num_labels == 1 and task.metrics == ("pearson", "spearman")
    assert rows(load_split(task, None, "dev")) == [("A cat.", "A dog.", 3.5), ("Rain.", "Sun.", 0.0)]
    write(tmp_path / "scores.tsv", ["only one field"])
    with pytest.raises(DataError, match=r"scores\.tsv:1: malformed row: expected at least 3"):
        load_split(task, None, "dev")


def test_user_task_regression_jsonl(tmp_path):
    write(tmp_path / "d.jsonl", ['{"t": "a", "s": 4.25}', '{"t": "b", "s": "1"}', '{"t": "c", "s": NaN}'])
    spec = {"name": "r", "format": "jsonl", "files": {"dev": "d.jsonl"}, "text_a": "t", "label": "s",
            "regression": True, "metrics": ["spearman"]}
    task = load_task_spec(write_spec(tmp_path, spec, ".json"))
    assert rows(load_split(task, None, "dev", limit=2)) == [("a", None, 4.25), ("b", None, 1.0)]
    with pytest.raises(DataError, match=r"d\.jsonl:3: score 'NaN' is not a finite number"):
        load_split(task, None, "dev")


def test_user_task_column_missing_from_header(tmp_path):
    write(tmp_path / "dev.tsv", ["text\trating", "ok\tpos"])
    task = load_task_spec(write_spec(tmp_path, {**BASE_SPEC, "files": {"dev": "dev.tsv"}}))
    with pytest.raises(DataError, match=r"dev\.tsv:1: no column 'review' in the header \(columns: text, rating\)"):
        load_split(task, None, "dev")


@pytest.mark.parametrize(
    "change, message",
    [
        ({"name": None}, "missing key 'name'"),
        ({"label": None}, "missing key 'label'"),
        ({"labels": None}, "missing key 'labels'"),
        ({"lables": ["a", "b"]}, "unknown key 'lables'"),
        ({"metrics": ["accuracy", "bleu"]}, "unknown metric 'bleu'"),
        ({"format": "xml"}, "unknown format 'xml'"),
        ({"format": None, "files": {"dev": "dev.txt"}}, "cannot tell the format"),
        ({"regression": True}, "not both"),
        ({"labels": None, "regression": True}, "metric 'accuracy' needs class labels"),
        ({"labels": ["a", "b", "c"]}, "metric 'f1' needs exactly 2 labels"),
        ({"labels": ["a"]}, "at least 2"),
        ({"labels": ["a", "a"]}, "duplicates"),
        ({"primary_metric": "mcc"}, "primary_metric 'mcc' is not one of the metrics"),
        ({"tolerance": -1}, "tolerance"),
        ({"header": False}, "0-based column index"),
        ({"files": {}}, "'files' must map"),
    ],
)
def test_spec_validation(tmp_path, change, message):
    spec = {k: v for k, v in {**BASE_SPEC, **change}.items() if v is not None}
    with pytest.raises(ConfigError, match=message):
        load_task_spec(write_spec(tmp_path, spec))


def test_spec_file_problems(tmp_path):
    (tmp_path / "bools.yaml").write_text("name: t\nfiles: {dev: d.tsv}\ntext_a: a\nlabel: b\nlabels: [no, yes]\n")
    with pytest.raises(ConfigError, match="quote labels"):
        load_task_spec(tmp_path / "bools.yaml")
    (tmp_path / "broken.yaml").write_text("name: t\nfiles: [unclosed\n")
    with pytest.raises(ConfigError, match=r"broken\.yaml:\d+: invalid YAML"):
        load_task_spec(tmp_path / "broken.yaml")
    (tmp_path / "broken.json").write_text('{"name": "t",\n}')
    with pytest.raises(ConfigError, match=r"broken\.json:2: invalid JSON"):
        get_task(str(tmp_path / "broken.json"))
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_task_spec(tmp_path / "list.json")
    with pytest.raises(ConfigError, match="not found"):
        get_task(str(tmp_path / "absent.yaml"))
    (tmp_path / "spec.txt").write_text("name: t")
    with pytest.raises(ConfigError, match="must be a"):
        load_task_spec(tmp_path / "spec.txt")
