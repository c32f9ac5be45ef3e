"""GLUE finetuning throughput: our train_step on the DeepSpeed engine vs a bare PyTorch loop, and evaluation.

Data: a GLUE-format task (--task, default MRPC) written by ``tools/make_glue_suite.py`` into a temp dir
(--train-size / --dev-size rows; real sentences of the bundled corpus with checkable labels). The run config
comes from ``megatron.cli.configure(CLASSIFICATION_SPEC, argv)`` -- the flags ``tasks/main.py`` takes (``--task
--train-data --valid-data --epochs``), its ``complete_args``, the real CLI checks, the WordPiece tokenizer
``data/tokenizers/bert-wordpiece/vocab.txt`` and the bridge -- with no --pretrained-checkpoint (a random
initialization: the speed of a step does not depend on the weights). The training micro-batches are the first
ones of ``CLASSIFICATION_SPEC.build_data_loader`` over ``build_datasets``' train split (the "cyclic" loader
``complete_args`` picks, in its order), what tasks/main.py would train on first.

Training: two step functions train the same ``Classification`` model (``tasks.finetune.model_provider``, same
initial weights) on the same micro-batches:

* ``ours``: ``megatron.training.loop.train_step`` on the DeepSpeed engine with the data-efficiency object
  ``build_data_efficiency(cfg, CLASSIFICATION_SPEC.batch_layout, CLASSIFICATION_SPEC.data_post_process, rank=0)``
  and ``CLASSIFICATION_SPEC.forward_step``, then ``end_step`` and the LR scheduler step, as ``pretrain()`` runs
  them (the grad norm only on logged iterations; no log line printed). The BERT post-process trims every
  micro-batch to its max non-pad length, rounded up to 8.
* ``bare``: a plain loop over a module built the same way: ``model(text, padding_mask, tokentype_ids=types)``,
  the same cross-entropy (MSE for STS-B) on the float logits, backward, ``clip_grad_norm_`` at the same
  --clip-grad, torch AdamW over Megatron's two weight-decay param groups (``get_param_groups``; torch autocast
  under --bf16). It gets the micro-batches already trimmed (outside the timing), so both sides run the same
  sequence lengths.

After --warmup-steps untimed steps per side, --rounds rounds of --steps steps; step i always trains the same
micro-batches, and step i of the two sides runs back to back in an order that alternates, so machine noise hits
both alike. A step's rate is global-batch examples over its wall time; medians (and the best steps) of the
per-step rates are compared (target: ours / bare >= 0.95).

Evaluation: ``tasks.finetune.predict`` on our engine (what ``pretrain()``'s per-epoch evaluation runs: every dev
example once, micro-batches of --micro-batch-size collated from the dataset, no_grad, predictions as Python
lists) vs a bare ``torch.no_grad`` loop of the bare side's module over the same dev examples, collated into the
same micro-batches beforehand (outside the timing), argmax (STS-B: the score) to a list. Neither trims padding
(predict does not). One untimed pass per side, then --eval-rounds alternating timed passes; dev examples/s per
pass, medians and best compared. As a check, the first training losses of both sides and the share of dev
predictions on which they agree (STS-B: their mean distance) are printed: the first step runs both with the same
dropout masks, so the losses match; later steps draw different masks, so the weights drift apart a little.

One intra-op thread by default: on a shared 2-core machine two threads under contention make steps erratic
(``--threads 0`` uses torch's default).

    python bench/finetune_throughput.py                  # MRPC, 4 layers, hidden 256, seq 128, micro-batch 16, fp32
    python bench/finetune_throughput.py --task SST-2 --num-layers 2 --hidden-size 128 --steps 4 --rounds 2
    python bench/finetune_throughput.py --task MNLI --global-batch-size 32 --dev-size 200 --eval-rounds 5
    python bench/finetune_throughput.py --bf16 --threads 0
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

WORDPIECE = os.path.join(REPO, "data", "tokenizers", "bert-wordpiece", "vocab.txt")
GLUE_TASKS = ("MNLI", "QQP", "QNLI", "SST-2", "CoLA", "STS-B", "MRPC", "RTE")
OURS, BARE = "ours", "bare PyTorch"


def parse() -> argparse.Namespace:
    """Benchmark flags."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="MRPC", choices=list(GLUE_TASKS))
    p.add_argument("--train-size", type=int, default=800, help="training rows written by make_glue_suite.py")
    p.add_argument("--dev-size", type=int, default=100, help="dev rows (the evaluation set)")
    p.add_argument("--num-layers", type=int, default=4)
    p.add_argument("--hidden-size", type=int, default=256)
    p.add_argument("--num-attention-heads", type=int, default=4)
    p.add_argument("--seq-length", type=int, default=128)
    p.add_argument("--micro-batch-size", type=int, default=16)
    p.add_argument("--global-batch-size", type=int, default=None, help="default: one micro-batch per step")
    p.add_argument("--lr", type=float, default=2e-5)
    p.add_argument("--bf16", action="store_true", help="bf16 (DeepSpeed bf16 vs torch autocast)")
    p.add_argument("--zero-stage", type=int, default=0)
    p.add_argument("--clip-grad", type=float, default=1.0)
    p.add_argument("--data-dir", default=None, help="keep the GLUE-format files here (default: a temp dir)")
    p.add_argument("--warmup-steps", type=int, default=2, help="untimed training steps per side")
    p.add_argument("--steps", type=int, default=8, help="timed training steps per round and side")
    p.add_argument("--rounds", type=int, default=4, help="timed training rounds")
    p.add_argument("--eval-rounds", type=int, default=5, help="timed dev passes per side (after one untimed)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads (0: torch's default); 1 keeps timings steady on a shared machine")
    p.add_argument("--seed", type=int, default=1234)
    return p.parse_args()


def make_task(b: argparse.Namespace, out_dir: str) -> tuple[str, str]:
    """(train.tsv, dev file) of --task written by tools/make_glue_suite.py (reused when already there)."""
    task_dir = os.path.join(out_dir, b.task)
    train = os.path.join(task_dir, "train.tsv")
    dev = os.path.join(task_dir, "dev_matched.tsv" if b.task == "MNLI" else "dev.tsv")
    info = os.path.join(out_dir, "make_glue_suite.json")
    if os.path.isfile(train) and os.path.isfile(dev) and os.path.isfile(info):
        with open(info, encoding="utf-8") as f:
            entry = json.load(f).get("tasks", {}).get(b.task, {})
        if entry.get("seed") == b.seed and entry.get("sizes", {}).get("train") == b.train_size \
                and entry.get("sizes", {}).get("dev") == b.dev_size:
            return train, dev
    cmd = [sys.executable, os.path.join(REPO, "tools", "make_glue_suite.py"), "--tasks", b.task,
           "--train-size", str(b.train_size), "--dev-size", str(b.dev_size), "--test-size", "10",
           "--output-dir", out_dir, "--seed", str(b.seed)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{done.stdout}{done.stderr}make_glue_suite.py failed with status {done.returncode}")
    return train, dev


def configure_run(b: argparse.Namespace, train: str, dev: str, steps_needed: int) -> tuple[Any, Any]:
    """(RunConfig, tokenizer) as tasks/main.py would build them, with --epochs covering `steps_needed` steps."""
    from megatron.cli import configure
    from tasks.finetune import CLASSIFICATION_SPEC

    gbs = b.global_batch_size or b.micro_batch_size
    per_epoch = max(1, b.train_size // gbs)
    argv = ["--task", b.task, "--train-data", train, "--valid-data", dev,
            "--epochs", str(max(1, -(-steps_needed // per_epoch))),
            "--num-layers", str(b.num_layers), "--hidden-size", str(b.hidden_size),
            "--num-attention-heads", str(b.num_attention_heads), "--seq-length", str(b.seq_length),
            "--max-position-embeddings", str(b.seq_length), "--micro-batch-size", str(b.micro_batch_size),
            "--global-batch-size", str(gbs), "--lr", str(b.lr), "--lr-warmup-fraction", "0.1",
            "--lr-decay-style", "linear", "--weight-decay", "0.01", "--clip-grad", str(b.clip_grad),
            "--zero-stage", str(b.zero_stage), "--vocab-file", WORDPIECE, "--num-workers", "0",
            "--seed", str(b.seed), "--log-interval", "100"]
    if b.bf16:
        argv.append("--bf16")
    return configure(CLASSIFICATION_SPEC, argv)


def train_micro_batches(cfg: Any, train_ds: Any, count: int) -> list[dict[str, torch.Tensor]]:
    """The first `count` training micro-batches of the spec's loader, in its order (at most one epoch's worth)."""
    from tasks.finetune import CLASSIFICATION_SPEC

    loader = CLASSIFICATION_SPEC.build_data_loader(train_ds, 0, cfg, rank=0, world=1)
    if loader is None:
        raise SystemExit("the train split is empty: raise --train-size")
    out: list[dict[str, torch.Tensor]] = []
    for batch in loader:
        out.append(batch)
        if len(out) >= count:
            break
    return out


def ours(cfg: Any, spec: Any, initial_state: dict[str, torch.Tensor]) -> tuple[Callable[[list], Any], Any]:
    """(step function running train_step on the DeepSpeed engine with end_step and the scheduler, engine)."""
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

    def step(batches: list) -> Any:
        out = train_step(engine, iter(batches), spec.forward_step, de, state, cfg,
                         want_grad_norm=_reports_step(state.iteration + 1, cfg))
        state.iteration += 1
        state.consumed_train_samples += t.global_batch_size
        acct = de.end_step(out.last_batch, state)
        state.consumed_train_tokens += acct.tokens
        state.actual_seq_length = acct.actual_seq_length
        scheduler.step(increment=t.global_batch_size, token_num=state.consumed_train_tokens)
        return out.losses["lm loss"]

    return step, engine


def bare(cfg: Any, spec: Any, initial_state: dict[str, torch.Tensor], regression: bool
         ) -> tuple[Callable[[list], Any], torch.nn.Module]:
    """(step function of a plain PyTorch loop: same module, loss, AdamW groups, clipping; no DeepSpeed, module)."""
    from megatron.training.engine import build_optimizer, get_param_groups

    model = spec.build_model(cfg)
    model.load_state_dict(initial_state)
    model.train()
    optimizer = build_optimizer(get_param_groups(model, cfg.optimizer.weight_decay), cfg.optimizer, "cpu")
    n_micro = cfg.training.num_micro_batches
    clip = cfg.optimizer.clip_grad
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.training.precision == "bf16")

    def step(batches: list) -> Any:
        total = torch.zeros(())
        for batch in batches[:n_micro]:
            with autocast:
                logits = model(batch["text"], batch["padding_mask"], tokentype_ids=batch["types"])
            if regression:
                loss = F.mse_loss(logits.float().reshape(-1), batch["label"].float().reshape(-1))
            else:
                loss = F.cross_entropy(logits.float(), batch["label"].reshape(-1))
            (loss / n_micro).backward()
            total += loss.detach()
        if clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip, foreach=True)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return total / n_micro

    return step, model


def bare_predict(model: torch.nn.Module, batches: list, regression: bool, bf16: bool) -> list:
    """Predictions of a plain no_grad loop over pre-collated dev micro-batches."""
    preds: list = []
    model.eval()
    try:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            for batch in batches:
                logits = model(batch["text"], batch["padding_mask"], tokentype_ids=batch["types"]).float()
                preds += logits.reshape(-1).tolist() if regression else logits.argmax(dim=-1).tolist()
    finally:
        model.train()
    return preds


def chunks(batches: list, n_micro: int, steps: int) -> list[list]:
    """The micro-batches of steps 0..steps-1 (cycling through `batches`)."""
    return [[batches[(i * n_micro + j) % len(batches)] for j in range(n_micro)] for i in range(steps)]


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """(seconds, result) of one call."""
    t0 = time.perf_counter()
    result = fn()
    return time.perf_counter() - t0, result


def main() -> None:
    """Run the benchmark and print the figures."""
    b = parse()
    if b.threads:
        torch.set_num_threads(b.threads)
    import logging

    for name in ("megatron.training", "megatron.data"):  # no argument dump / warnings between the figures
        logging.getLogger(name).setLevel(logging.ERROR)
    from megatron.data.data_samplers import collate_samples
    from megatron.model import num_parameters
    from megatron.training.initialize import initialize_distributed, set_random_seed
    from tasks.finetune import CLASSIFICATION_SPEC as SPEC, predict

    gbs = b.global_batch_size or b.micro_batch_size
    n_micro = gbs // b.micro_batch_size
    n_batches = max(b.steps, b.warmup_steps) * n_micro
    regression = b.task == "STS-B"
    with tempfile.TemporaryDirectory(prefix="glue_bench_") as tmp:
        data_dir = b.data_dir or tmp
        os.makedirs(data_dir, exist_ok=True)
        t0 = time.perf_counter()
        train_path, dev_path = make_task(b, data_dir)
        make_s = time.perf_counter() - t0
        cfg, tokenizer = configure_run(b, train_path, dev_path, b.warmup_steps + b.rounds * b.steps)
        initialize_distributed(cfg.training.distributed_backend, cfg.training.distributed_timeout_minutes)
        train_ds, valid, _ = SPEC.build_datasets(cfg, tokenizer)
    dev_ds = valid[0]
    batches = train_micro_batches(cfg, train_ds, n_batches)
    set_random_seed(cfg.training.seed, 0)
    initial = {k: v.clone() for k, v in SPEC.build_model(cfg).state_dict().items()}

    S = cfg.training.seq_length
    trim = SPEC.batch_layout.make_post_process(S)  # what the data-efficiency object applies (no curriculum)
    trimmed = [trim(batch, {"current_difficulties": {}}) for batch in batches]  # for the bare loop, untimed
    inputs = {OURS: chunks(batches, n_micro, b.steps), BARE: chunks(trimmed, n_micro, b.steps)}
    warm = {OURS: chunks(batches, n_micro, b.warmup_steps), BARE: chunks(trimmed, n_micro, b.warmup_steps)}
    ours_step, engine = ours(cfg, SPEC, initial)
    bare_step, bare_model = bare(cfg, SPEC, initial, regression)
    sides = {OURS: ours_step, BARE: bare_step}
    mbs = b.micro_batch_size
    dev_batches = [collate_samples([dev_ds[i] for i in range(s, min(s + mbs, len(dev_ds)))])
                   for s in range(0, len(dev_ds), mbs)]
    evals = {OURS: lambda: predict(engine, dev_ds, cfg)[0],
             BARE: lambda: bare_predict(bare_model, dev_batches, regression, b.bf16)}

    first_loss = {}
    for name, step in sides.items():
        for k, chunk in enumerate(warm[name]):
            if k == 0:
                torch.manual_seed(b.seed + 1)  # the same dropout masks in both sides' first step
            loss = step(chunk)
            if k == 0:
                first_loss[name] = float(loss)
    names = list(sides)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(b.rounds):
        for i in range(b.steps):  # step i of both sides back to back, in an order that alternates
            order = names if (r * b.steps + i) % 2 == 0 else names[::-1]
            for name in order:
                times[name].append(timed(lambda: sides[name](inputs[name][i]))[0])

    preds = {name: evals[name]() for name in names}  # untimed warm-up pass
    eval_times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(b.eval_rounds):
        for name in (names if r % 2 == 0 else names[::-1]):
            seconds, preds[name] = timed(evals[name])
            eval_times[name].append(seconds)

    precision = "bf16" if b.bf16 else "fp32"
    print(f"config: GLUE {b.task} classification ({SPEC.name} spec, random init), {b.num_layers} layers, hidden "
          f"{b.hidden_size}, heads {b.num_attention_heads}, seq {S}, micro-batch {mbs}, {n_micro} micro-batch(es)/"
          f"step, vocab {cfg.model.padded_vocab_size}, {precision}, ZeRO {b.zero_stage}, {torch.get_num_threads()} "
          f"thread(s), {num_parameters(bare_model) / 1e6:.1f}M params")
    lengths = sorted(mb["text"].shape[1] for chunk in inputs[BARE] for mb in chunk)
    full = sum(mb["text"].numel() for chunk in inputs[OURS] for mb in chunk)
    cut = sum(mb["text"].numel() for chunk in inputs[BARE] for mb in chunk)
    print(f"data: make_glue_suite.py {b.task}, {len(train_ds)} train / {len(dev_ds)} dev examples ({make_s:.1f} s); "
          f"timed per round: {b.steps} steps = {len(lengths)} loader micro-batches, trimmed to "
          f"{lengths[0]}..{lengths[-1]} (median {statistics.median(lengths):g}) of {S} "
          f"({100 * (1 - cut / full):.1f}% of positions removed)")
    med, best = {}, {}
    for name in names:
        rates = [gbs / t for t in times[name]]
        med[name], best[name] = statistics.median(rates), max(rates)
        print(f"train {name:>12}: {statistics.median(times[name]) * 1000:8.1f} ms/step (median of "
              f"{len(times[name])}) | {med[name]:8.1f} examples/s median | {best[name]:8.1f} best")
    print(f"train ours / bare (same trimmed lengths): {med[OURS] / med[BARE]:.3f} on medians, "
          f"{best[OURS] / best[BARE]:.3f} on best steps (target >= 0.95)")
    emed, ebest = {}, {}
    n_dev = len(dev_ds)
    label = {OURS: "predict", BARE: "bare"}
    for name in names:
        rates = [n_dev / t for t in eval_times[name]]
        emed[name], ebest[name] = statistics.median(rates), max(rates)
        print(f"eval {label[name]:>13}: {statistics.median(eval_times[name]) * 1000:8.1f} ms/pass of {n_dev} "
              f"(median of {len(rates)}) | {emed[name]:8.1f} examples/s median | {ebest[name]:8.1f} best")
    print(f"eval predict / bare (untrimmed, micro-batch {mbs}): {emed[OURS] / emed[BARE]:.3f} on medians, "
          f"{ebest[OURS] / ebest[BARE]:.3f} on best passes")
    pairs = list(zip(preds[OURS], preds[BARE]))
    if regression:  # the weights drift apart after the first step (different dropout masks): a distance
        agreement = f"differ by {sum(abs(p - q) for p, q in pairs) / len(pairs):.4f} on average"
    else:
        agreement = f"agree on {sum(int(p == q) for p, q in pairs)}/{n_dev}"
    print(f"check: first-step loss ours {first_loss[OURS]:.5f} vs bare {first_loss[BARE]:.5f} (same dropout masks); "
          f"dev predictions after training {agreement}")

if __name__ == "__main__":
    from megatron.cli import run_cli

    run_cli(main)
