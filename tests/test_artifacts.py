"""debx.artifacts: refusing outputs that are inputs, the staged multi-file commit, file modes under the umask."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from debx.artifacts import refuse_overwriting_inputs
from debx.errors import ConfigError


def test_an_output_that_is_an_input_is_refused(tmp_path, monkeypatch):
    model = tmp_path / "m.onnx"
    model.write_bytes(b"graph")
    (tmp_path / "m.onnx.json").write_text('{"external_data": "m.onnx.1a2b.data"}')
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "config.json").write_text("{}")
    link = tmp_path / "link.onnx"
    link.symlink_to(model)
    hard = tmp_path / "hard.onnx"
    os.link(model, hard)
    monkeypatch.chdir(tmp_path)
    for out in (model, Path("m.onnx"), Path("sub/../m.onnx"), link, hard, tmp_path / "m.onnx.json",
                tmp_path / "m.onnx.data", tmp_path / "m.onnx.1a2b.data"):
        with pytest.raises(ConfigError, match="--report .*the input .*m.onnx; choose another output"):
            refuse_overwriting_inputs({"--report": out}, [None, model])
    for out in (ckpt, ckpt / "config.json", ckpt / "model.safetensors"):
        with pytest.raises(ConfigError, match="ckpt"):
            refuse_overwriting_inputs({"--json": out}, [ckpt])
    with pytest.raises(ConfigError, match="same file"):
        refuse_overwriting_inputs({"--json": tmp_path / "x.json", "--plot": Path("x.json")}, [model])
    # outputs beside the inputs are fine
    refuse_overwriting_inputs({"--report": tmp_path / "report.json", "--plot": ckpt / "bench.png"}, [model, ckpt])
    assert model.read_bytes() == b"graph"


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _write_set(folder: Path, tag: str, with_cache: bool) -> None:
    from debx.artifacts import publish

    out = folder / "m.onnx"
    with publish(out) as st:
        st.primary.write_text(f"graph {tag}")
        (st.dir / st.onnx_data_name()).write_text(f"weights {tag}")  # part of the set: no add() needed
        st.add(out.with_name("m.onnx.ranges.json")).write_text(f"ranges {tag}")
        if with_cache:
            st.add(out.with_name("m.onnx.calib.cache")).write_text(f"cache {tag}")
        else:
            st.stale(out.with_name("m.onnx.calib.cache"))
        st.sidecar = {"external_data": st.onnx_data_name(), "tag": tag}  # the previous weights go by themselves


def test_publish_commit_is_all_or_nothing(tmp_path, monkeypatch):
    """An interrupt at each rename of a commit in turn leaves exactly the previous set; then a clean commit gives
    exactly the new set (previous weights and files the new set lacks removed), and no temporary folder is left."""
    _write_set(tmp_path, "old", with_cache=True)
    old = _snapshot(tmp_path)
    assert len(old) == 5
    real = os.replace
    for k in range(1, 6):  # the sidecar staged (write_sidecar), then the renames: ranges, weights, sidecar, graph
        calls = []

        def replace(a, b, k=k, calls=calls):
            calls.append(b)
            if len(calls) == k:
                raise KeyboardInterrupt
            return real(a, b)

        monkeypatch.setattr(os, "replace", replace)
        with pytest.raises(KeyboardInterrupt):
            _write_set(tmp_path, "new", with_cache=False)
        monkeypatch.setattr(os, "replace", real)
        assert _snapshot(tmp_path) == old, f"interrupted at rename {k}"
    _write_set(tmp_path, "new", with_cache=False)
    new = _snapshot(tmp_path)
    assert sorted(v.decode().split()[-1] for k, v in new.items() if k != "m.onnx.json") == ["new"] * 3
    assert len(new) == 4 and "m.onnx.calib.cache" not in new
    assert new[json.loads(new["m.onnx.json"])["external_data"]] == b"weights new"


def test_failure_inside_the_block_changes_nothing(tmp_path):
    from debx.artifacts import publish

    (tmp_path / "m.onnx").write_text("kept")
    with pytest.raises(RuntimeError):
        with publish(tmp_path / "m.onnx") as st:
            st.primary.write_text("new")
            raise RuntimeError("validation failed")
    assert _snapshot(tmp_path) == {"m.onnx": b"kept"}


def test_stale_names_from_a_sidecar_stay_beside_the_artifact(tmp_path):
    from debx.artifacts import previous_onnx_data

    (tmp_path / "m.onnx.json").write_text('{"external_data": "../../etc/passwd"}')
    assert previous_onnx_data(tmp_path / "m.onnx") == [tmp_path / "m.onnx.data"]


def test_external_data_location_ignores_the_current_directory(tmp_path, monkeypatch):
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    from debx.artifacts import save_onnx_model

    w = numpy_helper.from_array(np.arange(4096, dtype=np.float32).reshape(64, 64), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 64])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 64])], [w])
    model = helper.make_model(graph)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    (cwd / "m.onnx.data").write_text("the user's own file")
    monkeypatch.chdir(cwd)
    with pytest.raises(FileExistsError):  # what onnx itself does
        onnx.save_model(model, str(tmp_path / "a.onnx"), save_as_external_data=True, location="m.onnx.data")
    out = tmp_path / "out" / "m.onnx"
    out.parent.mkdir()
    data = save_onnx_model(model, out, "m.onnx.data")
    assert data == out.with_name("m.onnx.data") and data.stat().st_size == 4096 * 4
    assert (cwd / "m.onnx.data").read_text() == "the user's own file"
    assert model.graph.initializer[0].raw_data  # copy=True: the caller's proto keeps its weights
    back = onnx.load(str(out))
    assert np.array_equal(numpy_helper.to_array(back.graph.initializer[0]), numpy_helper.to_array(w))


@pytest.fixture(params=[0o022, 0o027])
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def _mode(p: Path) -> int:
    return p.stat().st_mode & 0o777


def test_files_and_folders_follow_the_umask(tmp_path, umask):
    import torch
    from safetensors.torch import save_file

    from debx.artifacts import atomic_dir, publish, write_bytes_atomic, write_json_atomic

    write_json_atomic(tmp_path / "report.json", {"a": 1})
    write_bytes_atomic(tmp_path / "report.md", b"x")
    with atomic_dir(tmp_path / "last") as d:
        save_file({"w": torch.zeros(2)}, str(d / "model.safetensors"))  # safetensors itself creates 0600
        (d / "sub").mkdir()
    with publish(tmp_path / "m.onnx") as st:
        st.primary.write_bytes(b"graph")
        st.sidecar = {"precision": "fp32"}
    for f in ("report.json", "report.md", "last/model.safetensors", "m.onnx", "m.onnx.json"):
        assert _mode(tmp_path / f) == 0o666 & ~umask, f
    for d in ("last", "last/sub"):
        assert _mode(tmp_path / d) == 0o777 & ~umask, d


def _fail_at_rename(monkeypatch, k: int, exc=KeyboardInterrupt):
    """os.replace raises `exc` at its k-th call (the ones after go through: a commit's rollback)."""
    real, calls = os.replace, []

    def replace(a, b):
        calls.append(b)
        if len(calls) == k:
            raise exc("interrupted")
        return real(a, b)

    monkeypatch.setattr(os, "replace", replace)
    return calls


@pytest.mark.parametrize("exc", [KeyboardInterrupt, OSError])
def test_a_plan_and_its_sidecar_are_published_as_one_unit(tmp_path, monkeypatch, exc):
    """debx build's write_plan: a failure (or Ctrl-C) at any step leaves the previous plan AND its sidecar; it wrote
    the plan and then the sidecar separately, so a failure between left a new plan beside the old plan's sidecar."""
    from debx.engine import write_plan

    plan = tmp_path / "m.plan"
    write_plan(plan, b"PLAN old", {"format": "debx-plan/1", "profiles": "old"})
    old = _snapshot(tmp_path)
    assert set(old) == {"m.plan", "m.plan.json"}
    for k in range(1, 4):  # the sidecar staged, then the renames: sidecar, plan
        calls = _fail_at_rename(monkeypatch, k, exc)
        with pytest.raises(exc):
            write_plan(plan, b"PLAN new", {"format": "debx-plan/1", "profiles": "new"})
        monkeypatch.undo()
        assert len(calls) >= k and _snapshot(tmp_path) == old, f"failed at rename {k}"
    assert write_plan(plan, b"PLAN new", {"format": "debx-plan/1", "profiles": "new"}) == tmp_path / "m.plan.json"
    new = _snapshot(tmp_path)
    assert new["m.plan"] == b"PLAN new" and json.loads(new["m.plan.json"])["profiles"] == "new" and len(new) == 2


def test_the_best_checkpoint_is_swapped_in_as_one_unit(tmp_path, monkeypatch):
    """train's best checkpoint (OUT itself): the new config.json never sits beside the old weights."""
    from debx.train import _swap_best

    def best(tag):
        (tmp_path / "best.tmp").mkdir()
        for name in ("config.json", "spm.model", "model.safetensors"):
            (tmp_path / "best.tmp" / name).write_text(f"{name} {tag}")

    best("old")
    _swap_best(tmp_path)
    old = _snapshot(tmp_path)
    assert set(old) == {"config.json", "spm.model", "model.safetensors"}
    best("new")
    for k in range(1, 4):  # each of the 3 renames into place
        _fail_at_rename(monkeypatch, k)
        with pytest.raises(KeyboardInterrupt):
            _swap_best(tmp_path)
        monkeypatch.undo()
        assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == old, f"failed at rename {k}"
        assert len(list((tmp_path / "best.tmp").iterdir())) == 3
    _swap_best(tmp_path)  # best.tmp was left whole: the same swap, now uninterrupted
    assert {v.decode().split()[-1] for v in _snapshot(tmp_path).values()} == {"new"} and len(_snapshot(tmp_path)) == 3
