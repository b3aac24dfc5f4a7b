"""Sequences longer than max_position_embeddings (issue 11, item 2).

Relative positions have no length limit (v2/v3/mDeBERTa: log buckets; v1: clamped linear distances), and
transformers runs every variant at any length. The tiny fixtures have max_position_embeddings = 128, so 513, 700 and
1500 tokens are 4x to 12x past it. Checked against **transformers** itself: the debx PyTorch model and the
`--attention onnx` / `--attention fast` exports (FP32, max abs diff <= 1e-4), plus `--attention debx` and `trt`.

v1: the tiny v1 fixture adds absolute position embeddings (position_biased_input), which transformers cannot run past
max_position_embeddings either, so it must fail with one clear line; the long-sequence v1 model is the same fixture
without them, which is how the released microsoft/deberta-base is configured.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from debx.errors import ConfigError

LENGTHS = (513, 700, 1500)
LONG_VARIANTS = ("v1", "v2", "v3", "mdeberta", "gimlp")
TOL = 1e-4


def _hf_model(ckpt):
    import transformers

    from debx.variants import HF_CLASSES

    model_type = json.loads((ckpt / "config.json").read_text())["model_type"]
    return getattr(transformers, HF_CLASSES[(model_type, "classification")][1]).from_pretrained(str(ckpt)).eval()


def _gate_hooks(hf, ckpt, n: int):
    """transformers has no giMLP: gate its content query/key projections (calls on the (B, n, C) hidden states, not
    the relative embeddings) the way the reference code does, with the batch-wide max."""
    from safetensors.torch import load_file

    cfg = json.loads((ckpt / "config.json").read_text())
    state = load_file(str(ckpt / "model.safetensors"))
    prefix = "deberta." if any(k.startswith("deberta.") for k in state) else ""
    handles = []
    for i, layer in enumerate(hf.base_model.encoder.layer):
        for side, proj in (("q", "query_proj"), ("k", "key_proj")):
            key = f"{prefix}encoder.layer.{i}.attention.self.inhibition_{side}"
            if f"{key}.weight" not in state:
                continue
            inh = (state[f"{key}.weight"], state[f"{key}.bias"])
            sel_key = key.replace("inhibition_", "select_")
            sel = (state[f"{sel_key}.weight"], state[f"{sel_key}.bias"])

            def hook(mod, args, out, inh=inh, sel=sel):
                x = args[0]
                if x.dim() != 3 or x.shape[1] != n:
                    return out
                s = F.linear(F.gelu(F.linear(x, *inh)), *sel)
                return out * (F.gelu(s - cfg["inhibition_level"] * torch.max(s)) + 1)

            handles.append(getattr(layer.attention.self, proj).register_forward_hook(hook))
    assert handles
    return handles


def _feeds(cfg, n: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(n)
    ids = rng.integers(5, cfg.vocab_size, (1, n)).astype(np.int64)
    ids[0, 0], ids[0, -1] = 1, 2
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    if cfg.type_vocab_size > 0:
        feeds["token_type_ids"] = (np.arange(n)[None] >= n // 2).astype(np.int64)
    return feeds


@pytest.fixture(scope="module")
def long_checkpoints(tmp_path_factory, tiny_checkpoints):
    from debx.variants import build_checkpoint

    out = {name: tiny_checkpoints[name] for name in LONG_VARIANTS if name != "v1"}
    # microsoft/deberta-base's own setting: relative positions only (the fixture's absolute ones end at 128)
    out["v1"] = build_checkpoint("v1", tmp_path_factory.mktemp("long") / "v1-relative", position_biased_input=False)
    return out


@pytest.fixture(scope="module")
def long_setup(tmp_path_factory, long_checkpoints):
    """variant -> (transformers model, debx model, {mode: ORT session}); built on first use."""
    from debx.checkpoint import load_model
    from debx.runtimes.onnxruntime import open_session
    from debx.exporters.export import ExportConfig, export_onnx

    root = tmp_path_factory.mktemp("long-exports")
    cache = {}

    def get(variant: str, modes=("onnx", "fast")):
        entry = cache.setdefault(variant, {"sessions": {}, "paths": {}})
        ckpt = long_checkpoints[variant]
        if "hf" not in entry:
            entry["hf"], entry["ours"] = _hf_model(ckpt), load_model(ckpt)[0]
        for mode in modes:
            if mode not in entry["sessions"]:
                out = root / f"{variant}.{mode}.onnx"
                export_onnx(ExportConfig(ckpt, out, attention=mode, validate=False))
                entry["paths"][mode] = out
                entry["sessions"][mode] = open_session(out, threads=1)
        return entry

    return get


def _reference(entry, ckpt, feeds, gated: bool) -> np.ndarray:
    n = feeds["input_ids"].shape[1]
    handles = _gate_hooks(entry["hf"], ckpt, n) if gated else []
    try:
        with torch.no_grad():
            return entry["hf"](**{k: torch.from_numpy(v) for k, v in feeds.items()}).logits.numpy()
    finally:
        for h in handles:
            h.remove()


@pytest.mark.parametrize("n", LENGTHS)
@pytest.mark.parametrize("variant", LONG_VARIANTS)
def test_pytorch_onnx_and_fast_match_transformers_past_max_positions(long_setup, long_checkpoints, variant, n):
    entry = long_setup(variant)
    cfg = entry["ours"].config
    assert n > cfg.max_position_embeddings
    feeds = _feeds(cfg, n)
    want = _reference(entry, long_checkpoints[variant], feeds, gated=variant == "gimlp")
    with torch.no_grad():
        got = {"pytorch": entry["ours"](**{k: torch.from_numpy(v) for k, v in feeds.items()}).numpy()}
    for mode, sess in entry["sessions"].items():
        got[mode] = sess.run(None, {i.name: feeds[i.name] for i in sess.get_inputs()})[0]
    diffs = {k: float(np.abs(v - want).max()) for k, v in got.items()}
    assert all(d <= TOL for d in diffs.values()), diffs


@pytest.mark.parametrize("mode", ["debx", "trt"])
def test_custom_op_modes_match_transformers_at_1500(long_setup, long_checkpoints, mode):
    """The fused debx op (native kernel or NumPy reference) and TensorRT's op (NumPy reference) past the limit."""
    entry = long_setup("v3", modes=(mode,))
    feeds = _feeds(entry["ours"].config, 1500)
    want = _reference(entry, long_checkpoints["v3"], feeds, gated=False)
    sess = entry["sessions"][mode]
    got = sess.run(None, {i.name: feeds[i.name] for i in sess.get_inputs()})[0]
    assert np.abs(got - want).max() <= TOL


def test_exported_graph_computes_the_index_from_the_length(long_setup):
    """Dynamic axes, no If/Loop, and the model's one saturated index table (none cut to a length)."""
    import onnx

    from debx.model import relative_index_reach

    entry = long_setup("v3")
    reach = relative_index_reach(64, 64, 128)  # the tiny v3: 64 buckets over 128 positions
    for mode in ("onnx", "fast"):
        g = onnx.load(str(entry["paths"][mode])).graph
        for i in g.input:
            assert [d.dim_param for d in i.type.tensor_type.shape.dim] == ["batch", "sequence"], mode
        assert not {node.op_type for node in g.node} & {"If", "Loop", "Scan"}, mode
        assert [tuple(t.dims) for t in g.initializer if t.data_type == onnx.TensorProto.INT64 and len(t.dims) == 1
                and t.dims[0] > 8] == [(2 * reach - 1,)], mode


@pytest.mark.parametrize("buckets,max_rel", [(0, 16), (0, 128), (32, 128), (64, 128), (256, 512), (256, 1024)])
def test_relative_index_of_any_length_matches_transformers(buckets, max_rel):
    """The model's saturated table + clamped distance == transformers' build_relative_position + clamp, far past
    the table."""
    from transformers.models.deberta_v2.modeling_deberta_v2 import build_relative_position

    from debx.model import relative_index, relative_index_reach, relative_index_table

    span = buckets if buckets > 0 else max_rel
    reach = relative_index_reach(span, buckets, max_rel)
    table = relative_index_table(reach, span, buckets, max_rel)
    for n in (1, 7, reach - 1, reach, reach + 1, 2 * reach + 3, 1500):
        q = torch.zeros(1, n, 4)
        ref = build_relative_position(q, q, bucket_size=buckets if buckets else -1, max_position=max_rel)[0]
        ref = torch.clamp(ref + span, 0, 2 * span - 1)
        assert torch.equal(relative_index(table, n), ref), n


def test_absolute_positions_past_their_table_are_one_clear_error(tiny_checkpoints, tmp_path):
    """The v1 fixture has absolute position embeddings (128): transformers fails past them, debx says why."""
    from debx.checkpoint import load_model
    from debx.exporters.export import ExportConfig, export_onnx

    ckpt = tiny_checkpoints["v1"]
    ours = load_model(ckpt)[0]
    feeds = {k: torch.from_numpy(v) for k, v in _feeds(ours.config, 700).items()}
    with pytest.raises(RuntimeError):
        _hf_model(ckpt)(**feeds)
    with pytest.raises(ConfigError, match="sequence length 700 exceeds the model's limit of 128 tokens") as e:
        ours(**feeds)
    assert "\n" not in str(e.value)
    with torch.no_grad():
        ours(**{k: v[:, :128] for k, v in feeds.items()})  # the limit itself runs
    out = tmp_path / "v1.onnx"
    with pytest.raises(ConfigError, match="--max-seq-len 700 exceeds the model's limit of 128 tokens"):
        export_onnx(ExportConfig(ckpt, out, max_seq_len=700, validate=False))
    assert list(tmp_path.iterdir()) == []


def _long_task(tmp_path, words: int = 900):
    """A user task whose dev rows tokenize to ~1000 tokens (GLUE sentences are short)."""
    rng = np.random.default_rng(0)
    vocab = "the cat sat on a mat while every dog in town barked loudly at passing cars and bicycles".split()
    rows = [{"text": " ".join(rng.choice(vocab, words)), "label": str(i % 2)} for i in range(4)]
    (tmp_path / "dev.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = tmp_path / "long.yaml"
    spec.write_text("name: long-text\nformat: jsonl\nfiles: {train: dev.jsonl, dev: dev.jsonl}\ntext_a: text\n"
                    "label: label\nlabels: ['0', '1']\nmetrics: [accuracy]\nprimary_metric: accuracy\n")
    return spec


def test_eval_takes_lengths_past_max_positions(tmp_path, long_checkpoints, tiny_checkpoints):
    """`debx eval --max-seq-len 1200` on a relative-position model (PyTorch and its ONNX export) scores untruncated
    ~1000-token rows with identical predictions; on a model with absolute positions it is one clear error."""
    from debx.evaluate import EvalConfig, evaluate
    from debx.tokenizer import encode, load_tokenizer
    from debx.exporters.export import ExportConfig, export_onnx

    spec = _long_task(tmp_path)
    ckpt = long_checkpoints["v3"]
    texts = [json.loads(line)["text"] for line in (tmp_path / "dev.jsonl").read_text().splitlines()]
    lengths = [len(x) for x in encode(load_tokenizer(ckpt), texts, None, 4096).input_ids]
    assert 600 < min(lengths) and max(lengths) <= 1200, lengths
    onnx_file = export_onnx(ExportConfig(ckpt, tmp_path / "v3.fast.onnx", attention="fast", validate=False)).output
    runs = {}
    for name, engine in (("pytorch", ckpt), ("fast", onnx_file)):
        res = evaluate(EvalConfig(task=str(spec), engine=engine, max_seq_len=1200, progress=False, threads=1,
                                  batch_size=2))
        assert res.report["truncated"] == 0 and res.report["n_examples"] == 4
        runs[name] = res.predictions
    assert np.array_equal(runs["pytorch"], runs["fast"])
    with pytest.raises(ConfigError, match="--max-seq-len 1200 exceeds the model's limit of 128 tokens"):
        evaluate(EvalConfig(task=str(spec), engine=tiny_checkpoints["v1"], max_seq_len=1200, progress=False))


def test_padded_batch_through_the_fused_op_matches_transformers(long_setup, long_checkpoints):
    """A batch padded to its longest row (700, 513 and 40 tokens), as services and `debx eval` send it: the native
    op skips each row's trailing padding, and every row's logits still match transformers on the padded batch and
    the row run alone."""
    entry = long_setup("v3", modes=("debx",))
    cfg = entry["ours"].config
    lengths = (700, 513, 40)
    rows = [_feeds(cfg, n) for n in lengths]
    n = max(lengths)
    feeds = {key: np.zeros((len(rows), n), np.int64) for key in rows[0]}
    for b, row in enumerate(rows):
        for key, value in row.items():
            feeds[key][b, : value.shape[1]] = value[0]
    want = _reference(entry, long_checkpoints["v3"], feeds, gated=False)
    sess = entry["sessions"]["debx"]
    run = lambda f: sess.run(None, {i.name: f[i.name] for i in sess.get_inputs()})[0]  # noqa: E731
    got = run(feeds)
    assert np.abs(got - want).max() <= TOL
    for b, row in enumerate(rows):
        assert np.abs(run(row)[0] - got[b]).max() <= TOL
