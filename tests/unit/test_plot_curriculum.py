"""tools/plot_curriculum.py: histograms of real analyzer output and schedules computed by our schedulers."""
from __future__ import annotations

import importlib.util
import json
import math
import struct
import sys
from pathlib import Path

import numpy as np
import pytest

from megatron.data.gpt_dataset import build_train_valid_test_datasets
from megatron.data.indexed_dataset import MMapIndexedDatasetBuilder
from megatron.data_efficiency.analyzer import run_map_reduce

REPO = Path(__file__).resolve().parents[2]
VOCAB = 97  # padded vocabulary of the toy corpus


def _load_tool():
    spec = importlib.util.spec_from_file_location("_plot_curriculum", REPO / "tools" / "plot_curriculum.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


TOOL = _load_tool()


@pytest.fixture(scope="module")
def analyzed(tmp_path_factory):
    """A toy GPT train split analyzed by the real analyzer: (analysis dir, the samples' token arrays)."""
    root = tmp_path_factory.mktemp("plot")
    rng = np.random.default_rng(7)
    prefix = str(root / "toy_text_document")
    builder = MMapIndexedDatasetBuilder(prefix + ".bin", np.uint16)
    for _ in range(40):
        builder.add_item((rng.zipf(1.5, int(rng.integers(5, 60))) - 1) % VOCAB)
        builder.end_document()
    builder.finalize(prefix + ".idx")
    train, _, _ = build_train_valid_test_datasets([prefix], "mmap", "100,0,0", [1, 1, 1], 16, 1234,
                                                  train_data_exact_num_epochs=1, return_data_index=True,
                                                  index_cache_dir=str(root))
    save = str(root / "analysis")
    run_map_reduce(train, ["total_vocab_freq", "vocab_rarity"], save, batch_size=32, padded_vocab_size=VOCAB,
                   seq_length=16, show_progress=False)
    return save, [np.asarray(train[i]["text"]) for i in range(len(train))]


def ds_config(**overrides) -> dict:
    """A DeepSpeed JSON with two curriculum metrics and random-LTD (4 layers, 2 dropping)."""
    cfg = {"data_efficiency": {"enabled": True, "seed": 1234, "data_routing": {"enabled": True, "random_ltd": {
        "enabled": True, "total_layer_num": 4, "random_ltd_layer_num": 2, "random_ltd_layer_id": [1, 2],
        "model_mask_name": "attention_mask", "model_type": "decoder", "hidden_state_order": "seq_batch_dim",
        "random_ltd_schedule": {"min_value": 16, "max_value": 64, "schedule_type": "fixed_linear",
                                "schedule_config": {"require_steps": 40, "seq_per_step": 16}}}},
        "data_sampling": {"enabled": True, "num_workers": 0, "curriculum_learning": {
            "enabled": True, "data_cluster_path": "/tmp/unused", "curriculum_metrics": {
                "voc": {"index_to_sample_path": "a", "index_to_metric_path": "b", "difficulty_type": "percentile",
                        "clustering_type": "schedule_based", "min_difficulty": 1, "max_difficulty": 100,
                        "schedule_type": "fixed_root",
                        "schedule_config": {"total_curriculum_step": 30, "difficulty_step": 1, "root_degree": 2}},
                "seqlen_truncate": {"difficulty_type": "value", "clustering_type": "single_cluster",
                                    "min_difficulty": 8, "max_difficulty": 64, "schedule_type": "fixed_linear",
                                    "schedule_config": {"total_curriculum_step": 50, "difficulty_step": 8}}}}}}}
    cfg.update(overrides)
    return cfg


def root_formula(step, lo, hi, total, dstep, root=1.0):
    """Spec §3.2, written out independently of the scheduler."""
    d = math.floor((step / total) ** (1.0 / root) * (hi - lo) + lo)
    return min(d - d % dstep, hi)


def test_distributions_match_the_analyzed_samples(analyzed):
    """vocab_rarity: counts per distinct value add up to the samples; total_vocab_freq = bincount of all tokens."""
    save, samples = analyzed
    assert TOOL.discover_metrics(save) == ["total_vocab_freq", "vocab_rarity"]
    freq = TOOL.load_metric_distribution(save, "total_vocab_freq")
    expected = np.bincount(np.concatenate(samples), minlength=VOCAB + 1)
    assert freq.kind == TOOL.ACCUMULATE and freq.counts.tolist() == expected.tolist()
    rarity = TOOL.load_metric_distribution(save, "vocab_rarity")
    f = np.where(expected == 0, 1, expected)  # spec §2.8: zero counts -> 1, then p = f / sum(f)
    nll = -np.log(f / f.sum())
    values, counts = np.unique([int(np.sum(nll[s])) for s in samples], return_counts=True)
    assert rarity.kind == TOOL.SINGLE
    assert rarity.values.tolist() == values.tolist() and rarity.counts.tolist() == counts.tolist()


def test_schedule_series_come_from_the_schedulers():
    """Each series equals the spec formula step by step; random-LTD uses k-1 completed optimizer steps."""
    series = TOOL.schedule_series(ds_config(), 60)
    assert list(series) == ["voc difficulty (percentile)", "curriculum seqlen (seqlen_truncate)",
                            "random-LTD reserved length", "actual seqlen"]
    x, voc = series["voc difficulty (percentile)"]
    assert x.tolist() == list(range(1, 61))
    assert voc.tolist() == [root_formula(k, 1, 100, 30, 1, 2) for k in range(1, 61)]
    _, seqlen = series["curriculum seqlen (seqlen_truncate)"]
    assert seqlen.tolist() == [root_formula(k, 8, 64, 50, 8) for k in range(1, 61)]
    _, reserved = series["random-LTD reserved length"]
    expected_r = [min(64, (16 + (k - 1) * 48 // 40) // 16 * 16) for k in range(1, 61)]
    assert reserved.tolist() == expected_r
    _, actual = series["actual seqlen"]
    assert actual.tolist() == [(s * 2 + r * 2) // 4 if r < s else s for s, r in zip(seqlen, expected_r)]


def test_spec_vectors_and_legacy_block():
    """Spec §3.2 linear/discrete vectors through the legacy block, and the §13.3 random-LTD points."""
    linear = {"curriculum_learning": {"enabled": True, "curriculum_type": "seqlen", "min_difficulty": 2,
                                      "max_difficulty": 10, "schedule_type": "fixed_linear",
                                      "schedule_config": {"total_curriculum_step": 8, "difficulty_step": 2}}}
    assert TOOL.schedule_series(linear, 10)["curriculum seqlen (legacy)"][1].tolist() == [2, 4, 4, 6, 6, 8, 8, 10,
                                                                                          10, 10]
    discrete = {"curriculum_learning": {"enabled": True, "curriculum_type": "seqlen", "min_difficulty": 1,
                                        "max_difficulty": 5, "schedule_type": "fixed_discrete",
                                        "schedule_config": {"difficulty": [1, 2, 3, 4, 5], "max_step": [2, 4, 6, 8]}}}
    assert TOOL.schedule_series(discrete, 9)["curriculum seqlen (legacy)"][1].tolist() == [1, 1, 2, 2, 3, 3, 4, 4, 5]
    cfg = ds_config()
    ltd = cfg["data_efficiency"]["data_routing"]["random_ltd"]
    ltd.update(total_layer_num=24, random_ltd_layer_num=22, random_ltd_layer_id=list(range(1, 23)))
    ltd["random_ltd_schedule"].update(min_value=128, max_value=2048)
    ltd["random_ltd_schedule"]["schedule_config"]["require_steps"] = 200000
    cfg["data_efficiency"]["data_sampling"]["curriculum_learning"]["enabled"] = False
    assert TOOL.default_steps(cfg) == 220000
    reserved = TOOL.schedule_series(cfg, 200001)["random-LTD reserved length"][1]
    assert (reserved[0], reserved[100000], reserved[200000]) == (128, 1088, 2048)  # after 0, 1e5, 2e5 steps


def test_cli_writes_a_png_whose_lines_are_the_series(analyzed, tmp_path, monkeypatch):
    """main(): a valid PNG; the figure's schedule lines hold exactly the scheduler series."""
    save, _ = analyzed
    config = tmp_path / "ds.json"
    config.write_text(json.dumps(ds_config()))
    out = tmp_path / "pics" / "curriculum.png"
    figures = []
    real_build = TOOL.build_figure
    monkeypatch.setattr(TOOL, "build_figure", lambda *a: figures.append(real_build(*a)) or figures[-1])
    assert TOOL.main(["--analysis-dir", save, "--deepspeed-config", str(config), "--output", str(out)]) == 0
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert width >= 600 and height >= 600 and len(data) > 10_000
    assert [p.name for p in out.parent.iterdir()] == ["curriculum.png"]  # no temporary file left
    axes = figures[0].axes
    assert len(axes) == 2 + 4  # two histograms, four schedules
    expected = TOOL.schedule_series(ds_config(), TOOL.default_steps(ds_config()))
    assert TOOL.default_steps(ds_config()) == 55  # 1.1 x the longest schedule (50 steps)
    for ax, (label, (x, y)) in zip(axes[2:], expected.items()):
        line = ax.lines[0]
        assert line.get_label() == label
        assert np.array_equal(line.get_xdata(), x) and np.array_equal(line.get_ydata(), y)
    assert axes[0].get_title().startswith("total_vocab_freq") and axes[1].get_title().startswith("vocab_rarity")


@pytest.mark.parametrize("case,message", [
    ("no_inputs", "give --analysis-dir and/or --deepspeed-config"),
    ("missing_dir", "directory not found"),
    ("missing_metric", "--metrics seqlen: no analyzer output in"),
    ("bad_json", "line 1 column"),
    ("bad_key", "schedule_confg: unknown key (did you mean schedule_config?)"),
    ("not_png", "expected a .png file name"),
    ("nothing_enabled", "nothing to draw"),
])
def test_errors_are_one_line_exit_2(case, message, analyzed, tmp_path, capsys):
    """Missing files/keys and bad JSON: exit 2 with one `error:` line naming the problem; no PNG written."""
    save, _ = analyzed
    out = tmp_path / "x.png"
    config = tmp_path / "ds.json"
    bad = ds_config()
    bad["data_efficiency"]["data_sampling"]["curriculum_learning"]["curriculum_metrics"]["voc"]["schedule_confg"] = {}
    argv = {
        "no_inputs": ["--output", str(out)],
        "missing_dir": ["--analysis-dir", str(tmp_path / "nope"), "--output", str(out)],
        "missing_metric": ["--analysis-dir", save, "--metrics", "seqlen", "--output", str(out)],
        "bad_json": ["--deepspeed-config", str(config), "--output", str(out)],
        "bad_key": ["--deepspeed-config", str(config), "--output", str(out)],
        "not_png": ["--analysis-dir", save, "--output", str(tmp_path / "x.jpg")],
        "nothing_enabled": ["--deepspeed-config", str(config), "--output", str(out)],
    }[case]
    config.write_text({"bad_json": "{nope", "bad_key": json.dumps(bad), "nothing_enabled": json.dumps(
        {"train_batch_size": 8})}.get(case, "{}"))
    assert TOOL.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert not out.exists()
