"""BERT training throughput: our train_step on the DeepSpeed engine vs a bare PyTorch loop, and the pad trim's gain.

Data: real BERT samples (MLM + sentence-order prediction). The first --corpus-docs documents of the bundled
corpus ``data/corpus/python_docs.jsonl.gz`` are preprocessed into a temp dir with ``tools/preprocess_data.py
--split-sentences --tokenizer-type BertWordPieceLowerCase`` and the shipped WordPiece vocab; the run config comes
from ``megatron.cli.configure(BERT_SPEC, argv)`` (the real CLI checks, tokenizer and bridge), the datasets from
``BERT_SPEC.build_datasets``, the samples in order from ``BERT_SPEC.build_data_loader`` -- what pretrain_bert.py
would train on first. Most samples fill --seq-length (at seq 128 about 80% here), so a micro-batch of the
loader's stream rarely leaves padding that the trim could cut; by default (``--samples padded``) only the
samples that leave padding are kept, in loader order, and grouped into micro-batches (``--samples all``: the
loader's micro-batches as they come). The share the trim would remove from the plain stream is printed too.

Three step functions train the same BertModel (``BERT_SPEC.build_model``, same initial weights) on the same
micro-batches:

* ``ours (pad trim)``: ``megatron.training.loop.train_step`` on the DeepSpeed engine with the data-efficiency
  object ``build_data_efficiency(cfg, BERT_SPEC.batch_layout, None, rank=0)``, then ``end_step`` and the LR
  scheduler step, as ``pretrain()`` runs them (the grad norm only on logged iterations; no log line printed).
  BERT's post-process cuts every micro-batch to the data-parallel max non-pad length, rounded up to 8.
* ``ours (no trim)``: the same, with a post-process that returns the batch unchanged
  (``dataclasses.replace(BERT_SPEC, data_post_process=lambda b, s: dict(b))``): every position is computed.
* ``bare PyTorch``: a plain loop over the same module: ``BERT_SPEC.forward_step`` (MLM + SOP loss), backward,
  ``clip_grad_norm_`` at the same --clip-grad, torch AdamW over Megatron's two weight-decay param groups
  (torch autocast under --bf16). It gets the micro-batches already trimmed (outside the timing), so it runs
  the same sequence lengths as ``ours (pad trim)``.

Timing: after --warmup-steps untimed steps per side, --rounds rounds of --steps steps; step i always trains
the same micro-batches, and step i of the three sides runs back to back in a rotating order, so machine noise
hits all alike. A step's rate is its real (non-pad) tokens over its wall time; medians (and the best steps)
of the per-step rates are compared. Two figures come out of the one run:

1. ours / bare (both trimmed, same lengths; target >= 0.95), with the MFU of every side against the fp32 (or
   bf16) matmul peak of this device (a timed 2048 x 2048 matmul on the CPU, 8192 x 8192 on a GPU where fp32 means
   TF32, before and after training; clocks read after the device synchronises), FLOPs from
   ``bert_flops_per_token`` at the length each micro-batch was computed at;
2. the dynamic pad trim's speed-up in real tokens/s (trim vs no trim) and the share of positions it removes:
   (sum over the timed micro-batches of removed positions) / (all their positions), also shown as a share of
   their pad positions.

One intra-op thread by default: on a shared 2-core machine two threads under contention make steps erratic
(``--threads 0`` uses torch's default).

    python bench/bert_train_throughput.py                 # 4 layers, hidden 256, seq 128, micro-batch 4, fp32
    python bench/bert_train_throughput.py --num-layers 2 --hidden-size 128 --steps 4 --rounds 2
    python bench/bert_train_throughput.py --seq-length 512 --micro-batch-size 8 --samples all --corpus-docs 0
    python bench/bert_train_throughput.py --bf16 --global-batch-size 8 --threads 0
    python bench/bert_train_throughput.py --device cuda --bf16 --seq-length 512 --micro-batch-size 16
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gzip
import io
import os
import statistics
import sys
import tempfile
import time
from typing import Any, Callable

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import torch  # noqa: E402

from bench_device import add_device_flag, describe, matmul_flops, pick_device, synchronize  # noqa: E402

CORPUS = os.path.join(REPO, "data", "corpus", "python_docs.jsonl.gz")
WORDPIECE = os.path.join(REPO, "data", "tokenizers", "bert-wordpiece", "vocab.txt")
TRIM, NO_TRIM, BARE = "ours (pad trim)", "ours (no trim)", "bare PyTorch"


def parse() -> argparse.Namespace:
    """Benchmark flags."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--num-layers", type=int, default=4)
    p.add_argument("--hidden-size", type=int, default=256)
    p.add_argument("--num-attention-heads", type=int, default=4)
    p.add_argument("--seq-length", type=int, default=128)
    p.add_argument("--micro-batch-size", type=int, default=4)
    p.add_argument("--global-batch-size", type=int, default=None, help="default: one micro-batch per step")
    p.add_argument("--bf16", action="store_true", help="bf16 (DeepSpeed bf16 vs torch autocast)")
    p.add_argument("--zero-stage", type=int, default=0)
    p.add_argument("--clip-grad", type=float, default=1.0)
    p.add_argument("--corpus-docs", type=int, default=400,
                   help="documents of the bundled corpus to preprocess (0: all of it)")
    p.add_argument("--data-dir", default=None, help="keep the preprocessed slice here (default: a temp dir)")
    p.add_argument("--warmup-steps", type=int, default=2, help="untimed steps per side")
    p.add_argument("--steps", type=int, default=8, help="timed steps per round and side")
    p.add_argument("--rounds", type=int, default=4, help="timed rounds")
    p.add_argument("--samples", default="padded", choices=["padded", "all"],
                   help="padded: only the samples that leave padding (non-pad length < --seq-length), in loader "
                        "order; all: the loader's micro-batches as they come")
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads (0: torch's default); 1 keeps timings steady on a shared machine")
    p.add_argument("--seed", type=int, default=1234)
    add_device_flag(p)
    args = p.parse_args()
    args.device = pick_device(args.device, p)
    return args


def preprocess_slice(docs: int, out_dir: str) -> str:
    """The first `docs` documents of the bundled corpus, sentence-split with the shipped WordPiece vocab."""
    import importlib.util

    prefix = os.path.join(out_dir, f"docs{docs or 'all'}")
    if os.path.exists(prefix + "_text_sentence.idx"):
        return prefix + "_text_sentence"
    jsonl = os.path.join(out_dir, "docs.jsonl")
    with gzip.open(CORPUS, "rt", encoding="utf-8") as src, open(jsonl, "w", encoding="utf-8") as dst:
        for i, line in enumerate(src):
            if docs and i >= docs:
                break
            dst.write(line)
    spec = importlib.util.spec_from_file_location("_preprocess_data", os.path.join(REPO, "tools", "preprocess_data.py"))
    assert spec is not None and spec.loader is not None
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    log = io.StringIO()
    with contextlib.redirect_stdout(log):
        status = tool.main(["--input", jsonl, "--output-prefix", prefix, "--tokenizer-type", "BertWordPieceLowerCase",
                            "--vocab-file", WORDPIECE, "--split-sentences", "--no-progress"])
    if status not in (0, None):
        raise SystemExit(f"{log.getvalue()}preprocess_data.py failed with status {status}")
    return prefix + "_text_sentence"


def configure_run(b: argparse.Namespace, data_prefix: str, samples_needed: int) -> tuple[Any, Any]:
    """(RunConfig, tokenizer) as pretrain_bert.py would build them, with at least `samples_needed` train samples."""
    from megatron.cli import configure
    from megatron.specs.bert import BERT_SPEC

    gbs = b.global_batch_size or b.micro_batch_size
    train_iters = max(1, -(-samples_needed // gbs))
    argv = ["--num-layers", str(b.num_layers), "--hidden-size", str(b.hidden_size),
            "--num-attention-heads", str(b.num_attention_heads), "--seq-length", str(b.seq_length),
            "--max-position-embeddings", str(b.seq_length), "--micro-batch-size", str(b.micro_batch_size),
            "--global-batch-size", str(gbs), "--train-iters", str(train_iters), "--lr", "1e-4",
            "--min-lr", "1e-5", "--lr-decay-style", "linear", "--lr-warmup-iters", "0",
            "--clip-grad", str(b.clip_grad), "--zero-stage", str(b.zero_stage), "--data-path", data_prefix,
            "--vocab-file", WORDPIECE, "--split", "949,50,1", "--eval-iters", "1", "--eval-interval", "1000000",
            "--num-workers", "0", "--seed", str(b.seed), "--log-interval", "100"]
    if b.bf16:
        argv.append("--bf16")
    return configure(BERT_SPEC, argv)


def load_micro_batches(cfg: Any, tokenizer: Any, count: int, padded_only: bool
                       ) -> tuple[list[dict[str, torch.Tensor]], float, int]:
    """`count` training micro-batches in the order pretrain()'s data loader yields the samples.

    With `padded_only` only the samples that leave padding (non-pad length < --seq-length) are kept and regrouped
    into micro-batches, still in loader order. Also returns the share of positions the pad trim would remove
    from the loader's own micro-batches (all samples) scanned on the way, and how many of those were scanned.
    """
    from megatron.specs.bert import BERT_SPEC

    S, mbs = cfg.training.seq_length, cfg.training.micro_batch_size
    trim = BERT_SPEC.batch_layout.make_post_process(S)
    train_ds, _, _ = BERT_SPEC.build_datasets(cfg, tokenizer)
    loader = BERT_SPEC.build_data_loader(train_ds, 0, cfg, rank=0, world=1)
    if loader is None:
        raise SystemExit("the train split is empty: raise --corpus-docs")
    rows: list[dict[str, torch.Tensor]] = []
    scanned, kept_positions = 0, 0
    for batch in loader:
        scanned += 1
        kept_positions += trim(batch, {"current_difficulties": {}})["text"].numel()
        if not padded_only:
            rows.append(batch)
        else:
            keep = (batch["padding_mask"].sum(dim=1) < S).nonzero().flatten().tolist()
            rows += [{k: v[i:i + 1] for k, v in batch.items()} for i in keep]
        if len(rows) >= (count if not padded_only else count * mbs):
            break
    else:
        raise SystemExit(f"the training data ran out after {scanned} micro-batches: raise --corpus-docs")
    loader_removed = 1.0 - kept_positions / (scanned * mbs * S)
    if not padded_only:
        return rows[:count], loader_removed, scanned
    out = [{k: torch.cat([r[k] for r in rows[i * mbs:(i + 1) * mbs]]) for k in rows[0]} for i in range(count)]
    return out, loader_removed, scanned


def ours(cfg: Any, spec: Any, initial_state: dict[str, torch.Tensor]) -> Callable[[list], None]:
    """A step function running train_step on the DeepSpeed engine, with end_step and the scheduler, as pretrain()."""
    from megatron.training.data_efficiency_hooks import build_data_efficiency
    from megatron.training.engine import setup_model_and_optimizer
    from megatron.training.loop import _reports_step, train_step
    from megatron.training.state import TrainState

    de = build_data_efficiency(cfg, spec.batch_layout, spec.data_post_process, rank=0)
    model = de.prepare_model(spec.build_model(cfg))
    model.load_state_dict(initial_state)
    engine, scheduler = setup_model_and_optimizer(model, cfg)
    scheduler = de.wrap_scheduler(scheduler, engine.optimizer)
    engine.train()
    state = TrainState()
    t = cfg.training

    def step(batches: list) -> None:
        out = train_step(engine, iter(batches), spec.forward_step, de, state, cfg,
                         want_grad_norm=_reports_step(state.iteration + 1, cfg))
        state.iteration += 1
        state.consumed_train_samples += t.global_batch_size
        acct = de.end_step(out.last_batch, state)
        state.consumed_train_tokens += acct.tokens
        state.actual_seq_length = acct.actual_seq_length
        scheduler.step(increment=t.global_batch_size, token_num=state.consumed_train_tokens)

    return step


def bare(cfg: Any, spec: Any, initial_state: dict[str, torch.Tensor], device: torch.device
         ) -> Callable[[list], None]:
    """A step function of a plain PyTorch loop: same module, loss, AdamW groups, clipping; no DeepSpeed."""
    from megatron.training.engine import build_optimizer, get_param_groups

    model = spec.build_model(cfg)
    model.load_state_dict(initial_state)
    model.to(device).train()
    optimizer = build_optimizer(get_param_groups(model, cfg.optimizer.weight_decay), cfg.optimizer, device.type)
    n_micro = cfg.training.num_micro_batches
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.training.precision == "bf16")

    def step(batches: list) -> None:
        for batch in batches[:n_micro]:
            with autocast:
                loss, _ = spec.forward_step(batch, model, cfg)
            (loss / n_micro).backward()
        if cfg.optimizer.clip_grad > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optimizer.clip_grad, foreach=True)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def chunks(batches: list, n_micro: int, steps: int) -> list[list]:
    """The micro-batches of steps 0..steps-1 (cycling through `batches`)."""
    return [[batches[(i * n_micro + j) % len(batches)] for j in range(n_micro)] for i in range(steps)]


def timed(step: Callable[[list], None], chunk: list, device: torch.device) -> float:
    """Seconds of one step (the device synchronised before each clock read)."""
    synchronize(device)
    t0 = time.perf_counter()
    step(chunk)
    synchronize(device)
    return time.perf_counter() - t0


def main() -> None:
    """Run the benchmark and print the figures."""
    b = parse()
    if b.threads:
        torch.set_num_threads(b.threads)
    import logging

    for name in ("megatron.training", "megatron.data"):  # no argument dump / dataset log lines between the figures
        logging.getLogger(name).setLevel(logging.WARNING)
    from megatron.model import bert_flops_per_token, num_parameters
    from megatron.specs.bert import BERT_SPEC
    from megatron.training.initialize import initialize_distributed, set_random_seed

    gbs = b.global_batch_size or b.micro_batch_size
    n_micro = gbs // b.micro_batch_size
    n_batches = max(b.steps, b.warmup_steps) * n_micro
    padded_only = b.samples == "padded"
    with tempfile.TemporaryDirectory(prefix="bert_bench_") as tmp:
        data_dir = b.data_dir or tmp
        os.makedirs(data_dir, exist_ok=True)
        t0 = time.perf_counter()
        prefix = preprocess_slice(b.corpus_docs, data_dir)
        prep_s = time.perf_counter() - t0
        # padded-only: room for the samples that fill --seq-length (most of them at seq 128) to be skipped
        cfg, tokenizer = configure_run(b, prefix, n_batches * b.micro_batch_size * (20 if padded_only else 1))
        initialize_distributed(cfg.training.distributed_backend, cfg.training.distributed_timeout_minutes)
        batches, loader_removed, scanned = load_micro_batches(cfg, tokenizer, n_batches, padded_only)
    set_random_seed(cfg.training.seed, 0)
    initial = {k: v.clone() for k, v in BERT_SPEC.build_model(cfg).state_dict().items()}

    S = cfg.training.seq_length
    trim = BERT_SPEC.batch_layout.make_post_process(S)  # what the data-efficiency object applies (no curriculum)
    trimmed = [trim(batch, {"current_difficulties": {}}) for batch in batches]  # for the bare loop, untimed
    no_trim_spec = dataclasses.replace(BERT_SPEC, data_post_process=lambda batch, state: dict(batch))
    timed_raw = chunks(batches, n_micro, b.steps)
    timed_cut = chunks(trimmed, n_micro, b.steps)
    inputs = {TRIM: timed_raw, NO_TRIM: timed_raw, BARE: timed_cut}
    sides = {TRIM: ours(cfg, BERT_SPEC, initial), NO_TRIM: ours(cfg, no_trim_spec, initial),
             BARE: bare(cfg, BERT_SPEC, initial, b.device)}

    dtype = torch.bfloat16 if b.bf16 else torch.float32
    matmul = matmul_flops(dtype, b.device)
    for name, step in sides.items():
        for chunk in chunks(batches if name != BARE else trimmed, n_micro, b.warmup_steps):
            step(chunk)
    times: dict[str, list[list[float]]] = {name: [[] for _ in range(b.rounds)] for name in sides}
    names = list(sides)
    for r in range(b.rounds):
        for i in range(b.steps):  # step i of every side back to back, in an order that rotates
            k = (r * b.steps + i) % len(names)
            for name in (names[k:] + names[:k])[::1 if r % 2 == 0 else -1]:
                times[name][r].append(timed(sides[name], inputs[name][i], b.device))
    matmul += matmul_flops(dtype, b.device)  # measured before and after training: the machine may be shared
    peak = max(matmul)  # the speed of light: the least disturbed run

    # per step: real (non-pad) tokens, positions computed with and without the trim, model FLOPs of each side
    real = [sum(int(mb["padding_mask"].sum()) for mb in chunk) for chunk in timed_raw]
    cut_pos = [sum(mb["text"].numel() for mb in chunk) for chunk in timed_cut]
    full_pos = [sum(mb["text"].numel() for mb in chunk) for chunk in timed_raw]
    fpt = lambda s: bert_flops_per_token(cfg.model, s)  # noqa: E731
    cut_flops = [sum(mb["text"].numel() * fpt(mb["text"].shape[1]) for mb in chunk) for chunk in timed_cut]
    flops = {TRIM: cut_flops, NO_TRIM: [pos * fpt(S) for pos in full_pos], BARE: cut_flops}
    positions = {TRIM: cut_pos, NO_TRIM: full_pos, BARE: cut_pos}

    def rates(name: str, per_step: list[float]) -> list[float]:
        """Amount per second of every timed step of `name` (step i of each round trains chunk i)."""
        return [per_step[i] / t for ts in times[name] for i, t in enumerate(ts)]

    precision = "bf16" if b.bf16 else "fp32"
    print(f"config: BERT (MLM + SOP), {b.num_layers} layers, hidden {b.hidden_size}, heads {b.num_attention_heads}, "
          f"seq {S}, micro-batch {b.micro_batch_size}, {n_micro} micro-batch(es)/step, "
          f"vocab {cfg.model.padded_vocab_size}, {precision}, ZeRO {b.zero_stage}, device {describe(b.device)}, "
          f"{num_parameters(BERT_SPEC.build_model(cfg)) / 1e6:.1f}M params")
    lengths = sorted(mb["text"].shape[1] for chunk in timed_cut for mb in chunk)
    which = "samples that leave padding" if padded_only else "samples"
    print(f"data: first {b.corpus_docs or 'all'} docs of python_docs.jsonl.gz, sentence-split WordPiece "
          f"({prep_s:.1f} s); timed per round: {len(lengths)} micro-batches of the loader's first {which}, trimmed to "
          f"{lengths[0]}..{lengths[-1]} (median {statistics.median(lengths):g}) of {S}; the trim would remove "
          f"{100 * loader_removed:.1f}% of the positions of the loader's first {scanned} micro-batches (all samples)")
    n = 8192 if b.device.type == "cuda" else 2048
    kind = "fp32 (TF32)" if precision == "fp32" and b.device.type == "cuda" else precision
    print(f"matmul ({kind}, {n}^2, {len(matmul)} runs): peak {peak / 1e9:.1f} GFLOP/s, "
          f"median {statistics.median(matmul) / 1e9:.1f} GFLOP/s; MFU below is against the peak")
    med, best = {}, {}
    for name in names:
        step_s = [t for ts in times[name] for t in ts]
        real_rates = rates(name, real)
        med[name], best[name] = statistics.median(real_rates), max(real_rates)
        mfu = statistics.median(rates(name, flops[name])) / peak
        print(f"{name:>16}: {statistics.median(step_s) * 1000:8.1f} ms/step (median of {len(step_s)}) | "
              f"{med[name]:8.1f} real tokens/s | {statistics.median(rates(name, positions[name])):8.1f} "
              f"positions/s | MFU {100 * mfu:5.1f}%")
    print(f"1. ours / bare (both with the pad trim, same lengths): {med[TRIM] / med[BARE]:.3f} on medians, "
          f"{best[TRIM] / best[BARE]:.3f} on best steps (target >= 0.95)")
    total, pads = sum(full_pos), sum(full_pos) - sum(real)
    removed = total - sum(cut_pos)
    print(f"2. dynamic pad trim: {med[TRIM] / med[NO_TRIM]:.3f}x real tokens/s vs no trim on medians "
          f"({best[TRIM] / best[NO_TRIM]:.3f}x on best steps); removed {removed} of {total} positions "
          f"({100 * removed / total:.1f}%) = {100 * removed / max(1, pads):.1f}% of the pad positions "
          f"({100 * pads / total:.1f}% of all)")


if __name__ == "__main__":
    from megatron.cli import run_cli

    run_cli(main)
