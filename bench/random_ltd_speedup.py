"""random-LTD speed-up: tokens/s of a full GPT training step with r = S/2 vs no dropping.

Runs three variants of the same GPTModel (same weights, same batches, forward + backward + torch AdamW),
timed in interleaved rounds so machine noise hits all of them alike:

* ``dense``     — the plain model;
* ``ltd r=S/2`` — random-LTD on every middle layer (1..L-2) with reserved length S/2;
* ``ltd r=S``   — the same wrappers with r = S: the exact no-op path, to measure the wrapper overhead.

The theoretical saving comes from the layer FLOPs (Megatron's count, incl. attention's quadratic term
4·s·h per token, forward + backward = 3× forward); the embedding and the output layer are unaffected::

    layer(s)  = s · (8h² + 4h·ffn + 4·s·h)         (forward FLOPs of one layer on s tokens)
    saving    = 1 − [2·layer(S) + (L−2)·layer(S/2) + head] / [L·layer(S) + head],   head = 2·S·h·V

(the target figure uses Megatron's count, full s² attention; a second line shows the saving with causal
attention counted at half, which is what SDPA's causal flash kernel actually computes).

On CPU with attention dropout (Megatron's default 0.1) SDPA takes its math path: the [b, heads, s, s]
scores, softmax and dropout mask are memory-bound, so attention's share of the time is larger than its
share of the FLOPs, and cutting it by 4x (r = S/2) can make the realized saving exceed the FLOP-based
figure. ``--attention-dropout 0`` measures the flash path instead.

Figures are printed for the median and the best wall time per step, and for the median process CPU
time. On a shared (noisy) machine run with ``--threads 1``: the CPU time of a single-threaded process
is then the work done, nearly independent of what else runs on the machine.

Printed: tokens/s of each variant, realized saving (1 − t_ltd / t_dense), theoretical saving, their
ratio (target >= 0.9) and the wrapper overhead t(r=S) / t_dense − 1 (target <= 2 %).

Usage: python bench/random_ltd_speedup.py [--num-layers 8 --hidden-size 256 --seq-length 512 ...]
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from megatron.config import TransformerConfig
from megatron.data_efficiency.random_ltd import RandomLTD
from megatron.data_efficiency.random_ltd_config import parse_random_ltd_config
from megatron.model import GPTModel, TransformerLayer


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Benchmark flags (Megatron names where they exist)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--num-layers", type=int, default=8)
    p.add_argument("--hidden-size", type=int, default=256)
    p.add_argument("--num-attention-heads", type=int, default=8)
    p.add_argument("--seq-length", type=int, default=512)
    p.add_argument("--micro-batch-size", type=int, default=4)
    p.add_argument("--vocab-size", type=int, default=8192)
    p.add_argument("--position-embedding-type", default="rope", choices=["learned_absolute", "rope"])
    p.add_argument("--attention-dropout", type=float, default=0.1, help="0 lets SDPA take its flash path")
    p.add_argument("--hidden-dropout", type=float, default=0.1)
    p.add_argument("--bf16", action="store_true", help="run the model in bfloat16 autocast")
    p.add_argument("--warmup", type=int, default=2, help="untimed rounds")
    p.add_argument("--rounds", type=int, default=6, help="timed rounds (one step of every variant each)")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    args = p.parse_args(argv)
    if args.num_layers < 3:
        p.error("--num-layers must be >= 3 (first and last layers stay dense)")
    return args


def layer_forward_flops(tokens: int, h: int, ffn: int, attention: float = 4.0) -> float:
    """Forward FLOPs of one transformer layer on ``tokens`` tokens (attention term ``attention·s·h`` per token)."""
    return float(tokens * (8 * h * h + 4 * h * ffn + attention * tokens * h))


def theoretical_saving(config: TransformerConfig, seq_length: int, reserved: int, attention: float = 4.0) -> float:
    """1 − FLOPs(LTD on layers 1..L-2 with r) / FLOPs(dense), per sequence of ``seq_length`` tokens (backward = 2×
    forward cancels)."""
    s, h, ffn, n = seq_length, config.hidden_size, config.ffn_size, config.num_layers
    head = 2.0 * s * h * config.padded_vocab_size
    dense = n * layer_forward_flops(s, h, ffn, attention) + head
    ltd = 2 * layer_forward_flops(s, h, ffn, attention) + (n - 2) * layer_forward_flops(reserved, h, ffn, attention)
    return 1.0 - (ltd + head) / dense


def ltd_block(num_layers: int, reserved: int, seq_length: int) -> dict:
    """random_ltd JSON block with a constant reserved length."""
    return {
        "enabled": True, "total_layer_num": num_layers, "random_ltd_layer_num": num_layers - 2,
        "random_ltd_layer_id": list(range(1, num_layers - 1)), "model_mask_name": "attention_mask",
        "model_type": "decoder", "hidden_state_order": "batch_seq_dim",
        "random_ltd_schedule": {"min_value": reserved, "max_value": seq_length, "schedule_type": "fixed_linear",
                                "schedule_config": {"require_steps": 10**12, "seq_per_step": 1}},
    }


class Variant:
    """One model + AdamW + its step timings."""

    def __init__(self, name: str, model: GPTModel, bf16: bool) -> None:
        self.name = name
        self.model = model.train()
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1, foreach=True)
        self.bf16 = bf16
        self.times: list[float] = []
        self.cpu_times: list[float] = []

    def step(self, tokens: torch.Tensor, timed: bool) -> float:
        """One training step on tokens [b, s+1]; returns the loss."""
        start, cpu_start = time.perf_counter(), time.process_time()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            loss = self.model(tokens[:, :-1], labels=tokens[:, 1:]).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        if timed:
            self.times.append(time.perf_counter() - start)
            self.cpu_times.append(time.process_time() - cpu_start)
        return loss.item()


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the figures."""
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    config = TransformerConfig(
        num_layers=args.num_layers, hidden_size=args.hidden_size, num_attention_heads=args.num_attention_heads,
        padded_vocab_size=args.vocab_size, max_position_embeddings=args.seq_length,
        position_embedding_type=args.position_embedding_type, attention_dropout=args.attention_dropout,
        hidden_dropout=args.hidden_dropout,
    )
    base = GPTModel(config)
    s, half = args.seq_length, args.seq_length // 2
    variants = [Variant("dense", copy.deepcopy(base), args.bf16)]
    for name, reserved in ((f"ltd r={half}", half), (f"ltd r={s} (no-op)", s)):
        ltd = RandomLTD(parse_random_ltd_config(ltd_block(args.num_layers, reserved, s)), seed=args.seed)
        variants.append(Variant(name, ltd.convert(copy.deepcopy(base), TransformerLayer), args.bf16))
    gen = torch.Generator().manual_seed(args.seed)
    batches = [torch.randint(0, args.vocab_size, (args.micro_batch_size, s + 1), generator=gen)
               for _ in range(args.warmup + args.rounds)]
    print(f"config: layers {args.num_layers}, hidden {args.hidden_size}, heads {args.num_attention_heads}, "
          f"seq {s}, micro-batch {args.micro_batch_size}, vocab {args.vocab_size}, "
          f"{args.position_embedding_type}, dropout {args.attention_dropout}/{args.hidden_dropout}, "
          f"{'bf16 autocast' if args.bf16 else 'fp32'}, "
          f"threads {torch.get_num_threads()}", flush=True)
    for round_index in tqdm(range(args.warmup + args.rounds), desc="rounds", file=sys.stderr):
        order = variants if round_index % 2 == 0 else variants[::-1]
        for variant in order:
            variant.step(batches[round_index], timed=round_index >= args.warmup)
    tokens_per_step = args.micro_batch_size * s
    theory = theoretical_saving(config, s, half)
    for statistic, pick, cpu in (("median wall", statistics.median, False), ("best wall", min, False),
                                 ("median process-CPU", statistics.median, True)):
        t = {v.name: pick(v.cpu_times if cpu else v.times) for v in variants}
        print(f"-- {statistic} step time over {args.rounds} rounds")
        for v in variants:
            print(f"{v.name:>22}: {t[v.name] * 1000:8.1f} ms/step  {tokens_per_step / t[v.name]:9.0f} tokens/s")
        dense, ltd_half, ltd_full = (t[v.name] for v in variants)
        realized = 1.0 - ltd_half / dense
        print(f"realized saving r=S/2: {realized:.1%}   theoretical (layer FLOPs): {theory:.1%}   "
              f"realized/theoretical: {realized / theory:.2f} (target >= 0.90)")
        print(f"wrapper overhead at r=S: {ltd_full / dense - 1.0:+.2%} (target <= 2%)")
    causal = theoretical_saving(config, s, half, attention=2.0)
    print(f"(for reference: counting causal attention at half its FLOPs, as a causal flash kernel computes it, "
          f"the theoretical saving is {causal:.1%})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
