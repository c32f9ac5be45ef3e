"""Training throughput: our train_step on the DeepSpeed engine vs a bare PyTorch loop, plus MFU.

Both sides train the same GPTModel (same init, same batches, the same forward step and loss: those of the GPT
family spec megatron/specs/gpt.py that pretrain_gpt.py trains; torch AdamW with Megatron's weight-decay groups,
the same gradient clipping). Timed rounds alternate between the two so that machine noise hits both alike; the
medians are compared. MFU is measured against the fp32 (or bf16) matmul peak of this device (a timed 2048 x 2048
matmul on the CPU, 8192 x 8192 on a GPU, where fp32 means TF32 as in training); timers are read after the device
synchronises.

    python bench/train_throughput.py                      # 4 layers, hidden 512, seq 256, micro-batch 8, fp32
    python bench/train_throughput.py --num-layers 2 --hidden-size 256 --rounds 3
    python bench/train_throughput.py --device cuda --bf16 --num-layers 12 --hidden-size 768 --seq-length 1024
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from types import SimpleNamespace
from typing import Any, Callable

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import torch  # noqa: E402

from bench_device import add_device_flag, describe, matmul_flops, pick_device, synchronize  # noqa: E402


def parse() -> argparse.Namespace:
    """Benchmark flags."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--num-layers", type=int, default=4)
    p.add_argument("--hidden-size", type=int, default=512)
    p.add_argument("--num-attention-heads", type=int, default=8)
    p.add_argument("--seq-length", type=int, default=256)
    p.add_argument("--micro-batch-size", type=int, default=8)
    p.add_argument("--global-batch-size", type=int, default=None, help="default: one micro-batch per step")
    p.add_argument("--vocab-size", type=int, default=8192, help="padded vocabulary size")
    p.add_argument("--bf16", action="store_true", help="bf16 (DeepSpeed bf16 vs torch autocast)")
    p.add_argument("--zero-stage", type=int, default=0)
    p.add_argument("--clip-grad", type=float, default=1.0)
    p.add_argument("--warmup-steps", type=int, default=2, help="untimed steps per side")
    p.add_argument("--steps", type=int, default=4, help="timed steps per round and side")
    p.add_argument("--rounds", type=int, default=3, help="alternating timed rounds")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--seed", type=int, default=1234)
    add_device_flag(p)
    args = p.parse_args()
    args.device = pick_device(args.device, p)
    return args


def build_run_config(b: argparse.Namespace) -> Any:
    """The RunConfig our pretrain() would build for these flags (through the real CLI checks and bridge)."""
    from megatron.arguments import parse_args, validate_args
    from megatron.config import build_configs

    argv = ["--num-layers", str(b.num_layers), "--hidden-size", str(b.hidden_size),
            "--num-attention-heads", str(b.num_attention_heads), "--seq-length", str(b.seq_length),
            "--micro-batch-size", str(b.micro_batch_size),
            "--global-batch-size", str(b.global_batch_size or b.micro_batch_size),
            "--train-iters", "1000000", "--lr", "1e-4", "--clip-grad", str(b.clip_grad),
            "--zero-stage", str(b.zero_stage), "--data-path", "synthetic", "--seed", str(b.seed)]
    if b.bf16:
        argv.append("--bf16")
    args = parse_args(argv)
    validate_args(args, 1)
    return build_configs(args, SimpleNamespace(padded_vocab_size=b.vocab_size, eod=0), 1)


def make_batches(cfg: Any, count: int, seed: int) -> list[dict[str, torch.Tensor]]:
    """`count` micro-batches of random token ids {"text": [mbs, seq+1]}."""
    gen = torch.Generator().manual_seed(seed)
    t = cfg.training
    return [{"text": torch.randint(0, cfg.model.padded_vocab_size, (t.micro_batch_size, t.seq_length + 1),
                                   generator=gen)} for _ in range(count)]


def ours(cfg: Any, spec: Any, initial_state: dict[str, torch.Tensor]) -> Callable[[list], None]:
    """A step function running megatron.training.loop.train_step on the DeepSpeed engine."""
    from megatron.model import GPTModel
    from megatron.training.data_efficiency_hooks import build_data_efficiency
    from megatron.training.engine import setup_model_and_optimizer
    from megatron.training.loop import train_step
    from megatron.training.state import TrainState

    model = GPTModel(cfg.model)
    model.load_state_dict(initial_state)
    engine, scheduler = setup_model_and_optimizer(model, cfg)
    # as pretrain() builds it: no data efficiency here, so batches only pass the family's post-process
    de = build_data_efficiency(cfg, spec.batch_layout, spec.data_post_process, rank=0)
    state = TrainState()

    def step(batches: list) -> None:
        train_step(engine, iter(batches), spec.forward_step, de, state, cfg)
        state.iteration += 1
        state.consumed_train_samples += cfg.training.global_batch_size
        state.consumed_train_tokens += cfg.training.global_batch_size * cfg.training.seq_length
        scheduler.step(increment=cfg.training.global_batch_size, token_num=state.consumed_train_tokens)

    return step


def bare(cfg: Any, spec: Any, initial_state: dict[str, torch.Tensor], device: torch.device
         ) -> Callable[[list], None]:
    """A step function of a plain PyTorch loop: same module, AdamW groups, clipping; no DeepSpeed."""
    from megatron.model import GPTModel
    from megatron.training.engine import build_optimizer, get_param_groups

    model = GPTModel(cfg.model)
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


def time_steps(step: Callable[[list], None], batches: list, n_micro: int, steps: int, device: torch.device
               ) -> list[float]:
    """Seconds per step for `steps` steps (the device synchronised before each clock read)."""
    out = []
    for i in range(steps):
        chunk = [batches[(i * n_micro + j) % len(batches)] for j in range(n_micro)]
        synchronize(device)
        t0 = time.perf_counter()
        step(chunk)
        synchronize(device)
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    """Run the benchmark and print the figures."""
    b = parse()
    if b.threads:
        torch.set_num_threads(b.threads)
    from megatron.model import GPTModel, gpt_flops_per_token, num_parameters
    from megatron.specs.gpt import GPT_SPEC
    from megatron.training.initialize import initialize_distributed, set_launcher_env_defaults, set_random_seed

    set_launcher_env_defaults()
    initialize_distributed(None, 10)
    cfg = build_run_config(b)
    set_random_seed(b.seed, 0)
    initial = {k: v.clone() for k, v in GPTModel(cfg.model).state_dict().items()}
    n_micro = cfg.training.num_micro_batches
    batches = make_batches(cfg, max(4, n_micro * 2), b.seed)
    dtype = torch.bfloat16 if b.bf16 else torch.float32
    matmul = matmul_flops(dtype, b.device)

    sides = {"bare PyTorch": bare(cfg, GPT_SPEC, initial, b.device),
             "ours (DeepSpeed engine)": ours(cfg, GPT_SPEC, initial)}
    for step in sides.values():
        time_steps(step, batches, n_micro, b.warmup_steps, b.device)
    times: dict[str, list[float]] = {name: [] for name in sides}
    for r in range(b.rounds):
        order = list(sides.items()) if r % 2 == 0 else list(sides.items())[::-1]  # alternate who goes first
        for name, step in order:
            times[name] += time_steps(step, batches, n_micro, b.steps, b.device)

    tokens_per_step = cfg.training.global_batch_size * cfg.training.seq_length
    flops_per_token = gpt_flops_per_token(cfg.model, cfg.training.seq_length)
    print(f"config: {b.num_layers} layers, hidden {b.hidden_size}, heads {b.num_attention_heads}, seq {b.seq_length}, "
          f"micro-batch {b.micro_batch_size}, {n_micro} micro-batch(es)/step, vocab {b.vocab_size}, "
          f"{'bf16' if b.bf16 else 'fp32'}, ZeRO {b.zero_stage}, device {describe(b.device)}, "
          f"{num_parameters(GPTModel(cfg.model)) / 1e6:.1f}M params")
    matmul += matmul_flops(dtype, b.device)  # measured before and after training: the machine may be shared
    peak = max(matmul)  # the speed of light: the least disturbed run
    n = 8192 if b.device.type == "cuda" else 2048
    kind = "bf16" if b.bf16 else ("fp32 (TF32)" if b.device.type == "cuda" else "fp32")
    print(f"matmul ({kind}, {n}^2, 20 runs): peak {peak / 1e9:.1f} GFLOP/s, "
          f"median {statistics.median(matmul) / 1e9:.1f} GFLOP/s; MFU below is against the peak")
    rates, best = {}, {}
    for name, ts in times.items():
        med = statistics.median(ts)
        rates[name], best[name] = tokens_per_step / med, tokens_per_step / min(ts)
        mfu = rates[name] * flops_per_token / peak
        print(f"{name:>24}: {med * 1000:8.1f} ms/step (median of {len(ts)}, best {min(ts) * 1000:.1f}) | "
              f"{rates[name]:8.1f} tokens/s | MFU {100 * mfu:5.1f}%")
    ours_name, bare_name = "ours (DeepSpeed engine)", "bare PyTorch"
    print(f"ratio ours / bare: {rates[ours_name] / rates[bare_name]:.3f} on medians, "
          f"{best[ours_name] / best[bare_name]:.3f} on best steps (target >= 0.95)")


if __name__ == "__main__":
    main()
