"""Calibration batches: a seeded, reproducible sample at real lengths, exactly the model's inputs, bad settings."""

from __future__ import annotations

import numpy as np
import pytest

from debx.calib.data import CalibDataConfig, FeedReader, calibration_data, sample_indices
from debx.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def tok(tiny_checkpoints):
    from debx.tokenizer import load_tokenizer

    return load_tokenizer(tiny_checkpoints["v3"])


def test_same_seed_same_rows_and_batches(tok, glue_dir):
    cfg = CalibDataConfig(task="sst2", data_dir=glue_dir, num_samples=20, seed=7, batch_size=6)
    a = calibration_data(cfg, tok, ["input_ids", "attention_mask"], 128)
    b = calibration_data(cfg, tok, ["input_ids", "attention_mask"], 128)
    assert a.guids == b.guids and len(a.guids) == 20 == a.num_samples
    assert len(a.batches) == 4  # 6 + 6 + 6 + 2
    for x, y in zip(a.batches, b.batches):
        assert x.keys() == y.keys() and all(np.array_equal(x[k], y[k]) for k in x)
    other = calibration_data(CalibDataConfig(task="sst2", data_dir=glue_dir, num_samples=20, seed=8), tok,
                             ["input_ids", "attention_mask"], 128)
    assert other.guids != a.guids
    lines = [int(g.split(":")[1]) for g in a.guids]
    assert lines == sorted(lines) and all(g.startswith("train.tsv:") for g in a.guids)


def test_batches_are_length_sorted_with_dynamic_padding(tok, glue_dir):
    data = calibration_data(CalibDataConfig(task="sst2", data_dir=glue_dir, num_samples=40, seed=0, batch_size=8),
                            tok, ["input_ids", "attention_mask"], 128)
    widths = [b["input_ids"].shape[1] for b in data.batches]
    assert widths == sorted(widths) and widths[0] < widths[-1]
    for b in data.batches:
        lengths = b["attention_mask"].sum(axis=1)
        assert lengths.max() == b["input_ids"].shape[1]  # padded only to the batch's own longest row
        assert b["input_ids"].dtype == np.int64 and (b["input_ids"][b["attention_mask"] == 0] == 0).all()
    assert sum(len(b["input_ids"]) for b in data.batches) == 40


def test_feeds_follow_the_model_inputs_and_the_length_limit(tok, glue_dir):
    data = calibration_data(CalibDataConfig(task="rte", data_dir=glue_dir, num_samples=8, split="dev", max_seq_len=16),
                            tok, ["input_ids", "attention_mask", "token_type_ids"], 128)
    assert set(data.batches[0]) == {"input_ids", "attention_mask", "token_type_ids"}
    assert max(b["input_ids"].shape[1] for b in data.batches) <= 16 and data.truncated > 0
    assert data.split == "dev" and data.task == "rte" and all(g.startswith("dev.tsv:") for g in data.guids)
    rec = data.record(seed=0)
    assert rec["rows"] == data.guids and rec["task"] == "rte" and rec["split"] == "dev"


def test_small_split_uses_every_row_and_reader_rewinds():
    assert sample_indices(5, 10, 0).tolist() == [0, 1, 2, 3, 4]
    assert len(set(sample_indices(1000, 100, 3).tolist())) == 100
    r = FeedReader([{"x": 1}, {"x": 2}])
    assert [r.get_next(), r.get_next(), r.get_next()] == [{"x": 1}, {"x": 2}, None]
    r.rewind()
    assert r.get_next() == {"x": 1}


def test_bad_settings(tok, glue_dir):
    with pytest.raises(ConfigError, match="--calib-split"):
        CalibDataConfig(task="sst2", split="test")
    with pytest.raises(ConfigError, match="--num-samples"):
        CalibDataConfig(task="sst2", num_samples=0)
    with pytest.raises(ConfigError, match="cannot feed"):
        calibration_data(CalibDataConfig(task="sst2", data_dir=glue_dir), tok, ["pixel_values"], 128)
    with pytest.raises(DataError, match="unknown task"):
        calibration_data(CalibDataConfig(task="nope", data_dir=glue_dir), tok, ["input_ids"], 128)
