"""Curriculum learning and random-LTD wired into GPT pretraining, end to end on CPU (tiny, seeded).

Expected values are computed here from the spec formulas (§3.2 pacing, §3.6 accounting, §4 reshape rows,
§5.2 reserved length), not taken from the library under test.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import MERGES, REPO, VOCAB, _load_tool, gpt_argv, subprocess_env
from megatron.cli import pretrain_from_argv
from megatron.specs import gpt

SEQ, GBS, MBS = 32, 8, 4
ANALYSIS_ARGS = ["--analyzing-data-type", "GPT", "--tokenizer-type", "GPT2BPETokenizer", "--vocab-file", str(VOCAB),
                 "--merge-file", str(MERGES), "--data-impl", "mmap", "--micro-batch-size", "1",
                 "--global-batch-size", "1000", "--seq-length", str(SEQ), "--max-position-embeddings", str(SEQ),
                 "--num-layers", "1", "--hidden-size", "1", "--num-attention-heads", "1", "--split", "949,50,1",
                 "--seed", "1234", "--train-data-exact-num-epochs", "1", "--return-data-index"]


# ----------------------------------------------------------------------------------------------------------------
# spec formulas (independent of megatron/data_efficiency)
# ----------------------------------------------------------------------------------------------------------------
def paced(step: int, lo: int, hi: int, total: int, every: int, root: float = 1.0) -> int:
    """Spec §3.2 fixed_root / fixed_linear difficulty at curriculum step `step`."""
    d = math.floor((step / total) ** (1.0 / root) * (hi - lo) + lo)
    return min(d - d % every, hi)


def reserved(step: int, lo: int, hi: int, require: int, every: int) -> int:
    """Spec §5.2 reserved length after `step` completed optimizer steps."""
    r = math.floor(step / require * (hi - lo) + lo)
    return min(r - r % every, hi)


def ltd_actual(s: int, r: int, layers: int, n: int) -> int:
    """Spec §3.6: actual = (S(L-n) + r n) // L when r < S."""
    return (s * (layers - n) + r * n) // layers if r < s else s


def reshape_rows(b: int, seq: int, cs: int) -> int:
    """Spec §13.5: min(ceil(B(L+1)/(cs+1)), B(floor((L+1)/(cs+1)) + 1)), made even when > 1."""
    rows = min(math.ceil(b * (seq + 1) / (cs + 1)), b * ((seq + 1) // (cs + 1) + 1))
    return rows - 1 if rows > 1 and rows % 2 else rows


# ----------------------------------------------------------------------------------------------------------------
# fixtures and helpers
# ----------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def analyzed(gpt_data_prefix: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A private copy of the session corpus, analyzed (total_vocab_freq, vocab_rarity) as the recipes do."""
    root = tmp_path_factory.mktemp("de_data")
    prefix = str(root / "docs_text_document")
    for ext in (".bin", ".idx"):
        shutil.copy(gpt_data_prefix + ext, prefix + ext)
    spec = importlib.util.spec_from_file_location("_analyze_data_de", REPO / "examples_deepspeed" /
                                                  "data_efficiency" / "analyze_data.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    save = str(root / "analysis")
    assert cli.main(["--analyzing-task", "map_reduce", "--analyzing-metric", "total_vocab_freq", "vocab_rarity",
                     "--data-path", prefix, "--save", save, *ANALYSIS_ARGS]) == 0
    maps = f"{prefix}_train_indexmap_exact1ep_{SEQ}sl_1234s"
    return {"prefix": prefix, "root": str(root),
            "voc_samples": f"{save}/vocab_rarity/vocab_rarity_index_to_sample_percentile_merged",
            "voc_metric": f"{save}/vocab_rarity/vocab_rarity_index_to_metric",
            "sample_to_metric": f"{save}/vocab_rarity/vocab_rarity_sample_to_metric",
            "doc": f"{maps}_doc_idx.npy", "sample": f"{maps}_sample_idx.npy", "shuffle": f"{maps}_shuffle_idx.npy"}


def metric(name: str, lo: int, hi: int, total: int, *, every: int = 8, root: float = 1.0,
           data: dict[str, str] | None = None) -> dict:
    """One curriculum_metrics entry: `voc` (percentile, schedule_based) or a seqlen metric (value)."""
    entry = {"min_difficulty": lo, "max_difficulty": hi,
             "schedule_type": "fixed_root" if root != 1.0 else "fixed_linear",
             "schedule_config": {"total_curriculum_step": total, "difficulty_step": every}}
    if root != 1.0:
        entry["schedule_config"]["root_degree"] = root
    if name == "voc":
        assert data is not None
        entry.update(index_to_sample_path=data["voc_samples"], index_to_metric_path=data["voc_metric"],
                     difficulty_type="percentile", clustering_type="schedule_based")
    else:
        entry.update(index_to_sample_path="dummy", index_to_metric_path="dummy", difficulty_type="value",
                     clustering_type="single_cluster")
    return entry


def ds_config(tmp_path: Path, *, metrics: dict | None = None, ltd: dict | None = None, legacy: dict | None = None,
              name: str = "ds.json") -> str:
    """Write a DeepSpeed JSON with the given curriculum metrics / random-LTD block / legacy block."""
    js: dict = {"train_batch_size": GBS, "train_micro_batch_size_per_gpu": MBS}
    de: dict = {"enabled": bool(metrics or ltd), "seed": 1234}
    if metrics:
        de["data_sampling"] = {"enabled": True, "num_workers": 0, "curriculum_learning": {
            "enabled": True, "data_cluster_path": str(tmp_path / "clusters"), "curriculum_metrics": metrics}}
    if ltd:
        de["data_routing"] = {"enabled": True, "random_ltd": ltd}
    if metrics or ltd:
        js["data_efficiency"] = de
    if legacy:
        js["curriculum_learning"] = legacy
    path = tmp_path / name
    path.write_text(json.dumps(js, indent=1))
    return str(path)


def ltd_block(layers: int, ids: list[int], lo: int, hi: int, require: int, every: int = 8, **extra) -> dict:
    """A data_routing.random_ltd block (decoder, batch-first)."""
    return {"enabled": True, "total_layer_num": layers, "random_ltd_layer_num": len(ids), "random_ltd_layer_id": ids,
            "model_mask_name": "attention_mask", "model_type": "decoder", "hidden_state_order": "batch_seq_dim",
            "random_ltd_schedule": {"min_value": lo, "max_value": hi, "schedule_type": "fixed_linear",
                                    "schedule_config": {"require_steps": require, "seq_per_step": every}}, **extra}


def argv_for(data: dict[str, str], js: str, *, cl: bool = False, ltd: bool = False, **flags) -> list[str]:
    """pretrain_gpt flags on the analyzed corpus (pinned exact-epoch maps when the curriculum sampler is on)."""
    extra: dict = {"deepspeed_config": js, "no_pipeline_parallel": True, "data_efficiency_curriculum_learning": cl,
                   "random_ltd": ltd, "micro_batch_size": MBS, "global_batch_size": GBS, "eval_iters": 1}
    if cl:
        extra.update(train_data_exact_num_epochs=1, train_doc_idx_path=data["doc"],
                     train_sample_idx_path=data["sample"], train_shuffle_idx_path=data["shuffle"])
    extra.update(flags)
    return gpt_argv(data["prefix"], **extra)


class Run:
    """pretrain_gpt in this process, recording every training micro-batch the model sees, and the model."""

    def __init__(self, argv: list[str]) -> None:
        self.batches: list[tuple[tuple[int, ...], dict, np.ndarray | None]] = []
        """(text shape, difficulties handed to the hook, sample ids) of every training micro-batch."""
        self.models: list = []
        difficulties: list[dict] = []

        def hook(batch, sampler_state):
            difficulties.append(dict(sampler_state.get("current_difficulties", {})))
            if not sampler_state.get("current_difficulties"):
                return batch
            # the GPT spec's own post-process (the one used when no hook is given), at the raw rows' length
            seq_length = gpt.GPT_SPEC.batch_layout.model_seq_length(int(batch["text"].shape[1]))
            return gpt.GPT_SPEC.batch_layout.make_post_process(seq_length)(batch, sampler_state)

        def forward_step(batch, model, config):
            if torch.is_grad_enabled():  # evaluation runs under no_grad: not a training micro-batch
                index = batch["index"].numpy().ravel() if "index" in batch else None
                seen = difficulties.pop(0) if difficulties else {}
                self.batches.append((tuple(batch["text"].shape), seen, index))
            return gpt.forward_step(batch, model, config)

        def model_provider(config):
            model = gpt.model_provider(config)
            self.models.append(model)
            return model

        spec = dataclasses.replace(gpt.GPT_SPEC, build_model=model_provider, forward_step=forward_step,
                                   data_post_process=hook)
        self.result = pretrain_from_argv(spec, argv)

    def per_step(self, n_micro: int) -> list[list[tuple[tuple[int, ...], dict, np.ndarray | None]]]:
        """Recorded micro-batches grouped by optimizer step."""
        return [self.batches[i:i + n_micro] for i in range(0, len(self.batches), n_micro)]


def tensorboard(path: Path) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value), ...]} of every scalar written under `path`."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(path))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


# ----------------------------------------------------------------------------------------------------------------
# curriculum learning
# ----------------------------------------------------------------------------------------------------------------
def test_cl_voc_truncate_lengths_difficulties_and_tokens_follow_the_schedule(analyzed, tmp_path):
    """voc (percentile, fixed_root 2) + seqlen_truncate: each step's batches have the scheduled length and
    difficulty, samples come from the allowed vocab-rarity percentile, tokens add up step by step (§3.6)."""
    iters, total = 8, 6
    js = ds_config(tmp_path, metrics={"voc": metric("voc", 1, 100, total, every=1, root=2.0, data=analyzed),
                                      "seqlen_truncate": metric("seqlen_truncate", 8, SEQ, total)})
    tb = tmp_path / "tb"
    run = Run(argv_for(analyzed, js, cl=True, train_iters=iters, tensorboard_dir=tb, return_data_index=True))
    assert run.result.state.iteration == iters

    from megatron.data_efficiency.analyzer_io import read_index_rows

    values, _ = read_index_rows(analyzed["sample_to_metric"])
    ranked = np.sort(values.astype(np.int64))
    expected_tokens, cumulative = [], 0
    for step, micro in enumerate(run.per_step(GBS // MBS), start=1):
        cs = paced(step, 8, SEQ, total, 8)
        voc = paced(step, 1, 100, total, 1, root=2.0)
        for shape, difficulties, index in micro:
            assert shape == (MBS, cs + 1), (step, shape)
            assert difficulties == {"voc": voc, "seqlen_truncate": cs}, step
            # percentile p: the p% least rare samples (spec §3.3) -> no sample rarer than that quantile
            limit = ranked[(len(ranked) // 100) * voc - 1] if voc < 100 else ranked[-1]
            assert (values[index] <= limit).all(), (step, voc, values[index], limit)
        cumulative += GBS * cs
        expected_tokens.append(cumulative)
    assert run.result.state.consumed_train_tokens == expected_tokens[-1]
    assert run.result.state.actual_seq_length == SEQ

    scalars = tensorboard(tb)
    assert [step for step, _ in scalars["lm-loss-training/lm loss vs tokens"]] == expected_tokens
    assert [v for _, v in scalars["seqlen/curriculum seqlen"]] == [paced(k, 8, SEQ, total, 8)
                                                                    for k in range(1, iters + 1)]
    assert [v for _, v in scalars["seqlen/difficulty voc"]] == [paced(k, 1, 100, total, 1, root=2.0)
                                                                 for k in range(1, iters + 1)]
    assert [v for _, v in scalars["seqlen/actual_seq_length"]] == [paced(k, 8, SEQ, total, 8)
                                                                    for k in range(1, iters + 1)]


def test_cl_seqlen_reshape_row_counts_and_tokens(analyzed, tmp_path):
    """seqlen_reshape: a micro-batch of B rows of L+1 tokens becomes reshape_rows(B, L, cs) rows of cs+1;
    consumed tokens = dp x micro-batches x rows x cs (§3.6)."""
    iters, total = 6, 6
    js = ds_config(tmp_path, metrics={"seqlen_reshape": metric("seqlen_reshape", 8, SEQ, total)})
    run = Run(argv_for(analyzed, js, cl=True, train_iters=iters))
    consumed = 0
    for step, micro in enumerate(run.per_step(GBS // MBS), start=1):
        cs = paced(step, 8, SEQ, total, 8)
        rows = reshape_rows(MBS, SEQ, cs) if cs < SEQ else MBS
        assert [shape for shape, _, _ in micro] == [(rows, cs + 1)] * (GBS // MBS), step
        consumed += (GBS // MBS) * rows * cs
    assert reshape_rows(MBS, SEQ, 8) == 14  # ceil(4*33/9) = 15 -> even
    assert run.result.state.consumed_train_tokens == consumed
    assert run.result.state.consumed_train_samples == iters * GBS


def test_legacy_curriculum_block_truncates_by_schedule(analyzed, tmp_path):
    """The legacy top-level curriculum_learning block (seqlen) truncates with its schedule at iteration + 1."""
    legacy = {"enabled": True, "curriculum_type": "seqlen", "min_difficulty": 8, "max_difficulty": SEQ,
              "schedule_type": "fixed_linear", "schedule_config": {"total_curriculum_step": 4, "difficulty_step": 8}}
    run = Run(argv_for(analyzed, ds_config(tmp_path, legacy=legacy), train_iters=5))
    lengths = [micro[0][0][1] - 1 for micro in run.per_step(GBS // MBS)]
    expected = [paced(k, 8, SEQ, 4, 8) for k in range(1, 6)]
    assert lengths == expected == [8, 16, 24, 32, 32]
    assert run.result.state.consumed_train_tokens == GBS * sum(expected)


def test_train_tokens_and_token_lr_count_truncated_tokens(analyzed, tmp_path):
    """Under CL, --train-tokens stops at the first step whose real token total reaches it, and token-based
    LR warmup/decay follow the real totals."""
    total = 6
    js = ds_config(tmp_path, metrics={"seqlen_truncate": metric("seqlen_truncate", 8, SEQ, total)})
    per_step = [GBS * paced(k, 8, SEQ, total, 8) for k in range(1, 40)]
    cumulative = list(np.cumsum(per_step))
    budget = 1000  # 64 + 128 + 128 + 192 + 192 + 256 + 256 = 1216 >= 1000 at step 7 (a full-length run: step 4)
    stop = next(k for k, tokens in enumerate(cumulative, start=1) if tokens >= budget)
    warmup, decay, lr, min_lr = 300, 1200, 1e-3, 1e-4
    run = Run(argv_for(analyzed, js, cl=True, train_iters=None, train_tokens=budget, lr=lr, min_lr=min_lr,
                       lr_warmup_iters=None, lr_warmup_tokens=warmup, lr_decay_tokens=decay,
                       lr_decay_style="linear"))
    state = run.result.state
    assert stop == 7 and (state.iteration, state.consumed_train_tokens) == (stop, cumulative[stop - 1])
    expected_lrs = []
    for k in range(stop):  # the LR applied at step k+1 was set after k steps
        tokens = cumulative[k - 1] if k else 0
        if tokens <= warmup:
            expected_lrs.append(lr * tokens / warmup)
        else:
            expected_lrs.append(min_lr + (lr - min_lr) * (1 - (tokens - warmup) / (decay - warmup)))
    assert run.result.lrs == pytest.approx(expected_lrs, rel=1e-9, abs=1e-15)


# ----------------------------------------------------------------------------------------------------------------
# random-LTD
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("with_cl", [False, True], ids=["ltd", "cl+ltd"])
def test_random_ltd_wraps_exact_layers_and_accounts_tokens(analyzed, tmp_path, with_cl):
    """random-LTD on layers 1, 2 of 4: the inner layers see r tokens; tokens per step = rows x actual (§3.6),
    layer tokens = rows x (S(L-n) + min(r, S) n); with layer_token_lr_schedule the LR follows layer tokens."""
    iters, layers, ids = 7, 4, [1, 2]
    warm, total_lt = 4000, 12000
    ltd = ltd_block(layers, ids, 8, SEQ, 6, layer_token_lr_schedule={
        "enabled": True, "warmup_layer_tokens": warm, "total_layer_tokens": total_lt})
    metrics = {"seqlen_truncate": metric("seqlen_truncate", 16, SEQ, 4)} if with_cl else None
    tb = tmp_path / "tb"
    run = Run(argv_for(analyzed, ds_config(tmp_path, metrics=metrics, ltd=ltd), cl=with_cl, ltd=True,
                       num_layers=layers, train_iters=iters, tensorboard_dir=tb, lr=1e-3, min_lr=1e-4,
                       lr_decay_style="linear"))
    from megatron.data_efficiency.random_ltd import RandomLayerTokenDrop

    model = run.models[0]
    wrapped = [isinstance(layer, RandomLayerTokenDrop) for layer in model.encoder.layers]
    assert wrapped == [False, True, True, False]
    assert not any("random_ltd_layer" in key for key in model.state_dict())

    tokens, layer_tokens, lrs, seen_r = [], [], [], []
    consumed_lt = 0
    for k in range(1, iters + 1):
        r = reserved(k - 1, 8, SEQ, 6, 8)
        s = paced(k, 16, SEQ, 4, 8) if with_cl else SEQ
        seen_r.append(min(r, s))
        tokens.append(GBS * ltd_actual(s, r, layers, len(ids)))
        lr = 1e-3 * consumed_lt / warm if consumed_lt <= warm else \
            1e-4 + (1e-3 - 1e-4) * (1 - (consumed_lt - warm) / (total_lt - warm))
        lrs.append(lr)
        consumed_lt += GBS * (s * (layers - len(ids)) + min(r, s) * len(ids))
        layer_tokens.append(consumed_lt)
    state = run.result.state
    assert state.consumed_train_tokens == sum(tokens)
    assert state.counters["consumed_layer_tokens"] == layer_tokens[-1]
    assert run.result.lrs == pytest.approx(lrs, rel=1e-9, abs=1e-15)
    scalars = tensorboard(tb)
    assert [step for step, _ in scalars["lm-loss-training/lm loss vs tokens"]] == list(np.cumsum(tokens))
    assert [v for _, v in scalars["seqlen/layer tokens"]] == layer_tokens
    assert [int(v) for _, v in scalars["seqlen/random ltd reserved length"]] == [
        reserved(k - 1, 8, SEQ, 6, 8) for k in range(1, iters + 1)]
    assert any(r < SEQ for r in seen_r)


def test_random_ltd_layers_see_reserved_tokens_in_training_only(analyzed, tmp_path):
    """The wrapped layer's inner module gets [b, r, h] in training steps and [b, S, h] in evaluation."""
    from megatron.model.transformer import TransformerLayer

    seen: list[tuple[bool, int]] = []
    original = TransformerLayer.forward

    def spy(self, hidden_states, **kwargs):
        if self.layer_number == 2:  # Megatron numbering: the second layer, random_ltd_layer_id 1
            seen.append((self.training, hidden_states.shape[1]))
        return original(self, hidden_states, **kwargs)

    ltd = ltd_block(3, [1], 8, SEQ, 4)
    TransformerLayer.forward = spy
    try:
        Run(argv_for(analyzed, ds_config(tmp_path, ltd=ltd), ltd=True, num_layers=3, train_iters=3,
                     eval_interval=2))
    finally:
        TransformerLayer.forward = original
    train = [s for training, s in seen if training]
    assert train == [8, 8, 8, 8, 16, 16]  # r after 0, 1, 2 steps: 8, 14->8, 20->16 (two micro-batches each)
    assert {s for training, s in seen if not training} == {SEQ}


# ----------------------------------------------------------------------------------------------------------------
# resume, evaluation of an LTD checkpoint
# ----------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cl_ltd_runs(analyzed, tmp_path_factory):
    """CL (voc + truncate) + random-LTD with dropout: 8 uninterrupted steps, and 4 + resumed 4."""
    tmp = tmp_path_factory.mktemp("cl_ltd")
    js = ds_config(tmp, metrics={"voc": metric("voc", 1, 100, 6, every=1, root=2.0, data=analyzed),
                                 "seqlen_truncate": metric("seqlen_truncate", 8, SEQ, 6)},
                   ltd=ltd_block(4, [1, 2], 8, SEQ, 6))
    common = dict(cl=True, ltd=True, num_layers=4, train_iters=8, attention_dropout=0.1, hidden_dropout=0.1,
                  eval_interval=3, eval_iters=2)
    full = Run(argv_for(analyzed, js, save=tmp / "full", tensorboard_dir=tmp / "tb_full", **common))
    part = Run(argv_for(analyzed, js, save=tmp / "part", exit_interval=4, tensorboard_dir=tmp / "tb_part", **common))
    resumed = Run(argv_for(analyzed, js, load=tmp / "part", save=tmp / "part", tensorboard_dir=tmp / "tb_resumed",
                           **common))
    return {"full": full, "part": part, "resumed": resumed, "dir": tmp}


def test_resumed_cl_ltd_run_equals_uninterrupted(cl_ltd_runs):
    """Sampler stream, difficulties, random-LTD schedule and indices continue exactly after a resume."""
    full, part, resumed = cl_ltd_runs["full"], cl_ltd_runs["part"], cl_ltd_runs["resumed"]
    assert part.result.state.iteration == 4 and resumed.result.iterations == [5, 6, 7, 8]
    full_losses = [s["lm loss"] for s in full.result.losses]
    assert [s["lm loss"] for s in part.result.losses + resumed.result.losses] == full_losses
    assert [shape for shape, _, _ in part.batches + resumed.batches] == [shape for shape, _, _ in full.batches]
    assert [d for _, d, _ in part.batches + resumed.batches] == [d for _, d, _ in full.batches]
    for key in ("consumed_train_tokens", "consumed_train_samples", "actual_seq_length"):
        assert getattr(resumed.result.state, key) == getattr(full.result.state, key), key
    assert resumed.result.state.counters == full.result.state.counters
    tokens = {name: [step for step, _ in tensorboard(cl_ltd_runs["dir"] / f"tb_{name}")["lm-loss-training/lm loss vs tokens"]]
              for name in ("full", "part", "resumed")}
    assert tokens["part"] + tokens["resumed"] == tokens["full"] and len(tokens["full"]) == 8
    assert resumed.result.evaluations[-1] == full.result.evaluations[-1]


def test_ltd_checkpoint_evaluates_in_plain_model(cl_ltd_runs, tmp_path):
    """tools/eval_gpt.py loads the LTD-trained checkpoint into a plain GPTModel: same loss as in training."""
    eval_gpt = _load_tool("eval_gpt")
    out = tmp_path / "eval.json"
    results = eval_gpt.run(["--load", str(cl_ltd_runs["dir"] / "full"), "--results-path", str(out)])
    training_eval = cl_ltd_runs["full"].result.evaluations[-1][1]["lm loss"]
    assert results["valid"]["lm loss"] == pytest.approx(training_eval, rel=1e-6)
    assert results["iteration"] == 8 and results["valid"]["micro_batches"] == 2 * GBS // MBS
    assert json.loads(out.read_text())["valid"]["ppl"] == pytest.approx(math.exp(training_eval), rel=1e-5)
    assert eval_gpt.main(["--load", str(cl_ltd_runs["dir"] / "nope")]) == 2


# ----------------------------------------------------------------------------------------------------------------
# errors
# ----------------------------------------------------------------------------------------------------------------
def test_flag_json_mismatches_and_bad_blocks_are_one_clear_error(analyzed, tmp_path):
    """Flag without its JSON block, block without its flag, bad layer ids, missing index files."""
    from megatron.training import UsageError

    def error(argv: list[str]) -> str:
        with pytest.raises(UsageError) as info:
            Run(argv)
        return str(info.value)

    ltd_js = ds_config(tmp_path, ltd=ltd_block(2, [1], 8, SEQ, 4, allow_first_last_layers=True), name="ltd.json")
    cl_js = ds_config(tmp_path, metrics={"seqlen_truncate": metric("seqlen_truncate", 8, SEQ, 4)}, name="cl.json")
    plain = ds_config(tmp_path, name="plain.json")
    assert "--random-ltd needs --deepspeed_config with data_efficiency.data_routing.random_ltd.enabled" in error(
        argv_for(analyzed, plain, ltd=True))
    assert "random_ltd.enabled is true but --random-ltd is not given" in error(argv_for(analyzed, ltd_js))
    assert "curriculum_learning.enabled is true but --data-efficiency-curriculum-learning is not given" in error(
        argv_for(analyzed, cl_js))
    assert "total_layer_num" in error(argv_for(analyzed, ltd_js, ltd=True, num_layers=3))
    missing = dict(metric("voc", 1, 100, 4, every=1, root=2.0, data=analyzed),
                   index_to_sample_path=str(tmp_path / "no_such_index"))
    bad_index = ds_config(tmp_path, metrics={"voc": missing}, name="missing.json")
    assert "no_such_index" in error(argv_for(analyzed, bad_index, cl=True))

    proc = subprocess.run([sys.executable, str(REPO / "pretrain_gpt.py"), *argv_for(analyzed, ltd_js)], cwd=REPO,
                          env=subprocess_env(), capture_output=True, text=True, timeout=120)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and len(errors) == 1 and "--random-ltd is not given" in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr
