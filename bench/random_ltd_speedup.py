"""random-LTD speed-up: tokens/s of a full GPT training step with r = S/2 vs no dropping, and the r = S overhead.

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

Headline: attention dropout 0 (the default here), so SDPA takes its flash path. A secondary line repeats
dense vs r=S/2 with attention dropout 0.1 (Megatron's default, ``--secondary-attention-dropout``): on CPU
SDPA then takes its math path, where the [b, heads, s, s] scores, softmax and dropout mask are
memory-bound, so cutting them by 4x (r = S/2) inflates the saving beyond the FLOP-based figure.

The r = S overhead is a small difference of two large, noisy times, so it is measured on PAIRS: every round
times dense and r=S back to back (order alternating), the per-round ratio t(r=S)/t(dense) − 1 cancels the
machine's drift, and extra paired rounds (``--overhead-rounds``, more until the 95 % confidence interval is
below ``--overhead-ci`` or ``--overhead-max-rounds``) shrink the interval. Printed: mean ± 95 % CI and the
per-round spread (standard deviation, min..max) — the noise a single measurement would have.

Figures are printed for the median and the best wall time per step, and for the median process CPU
time. On a shared (noisy) machine run with ``--threads 1``: the CPU time of a single-threaded process
is then the work done, nearly independent of what else runs on the machine.

Usage: python bench/random_ltd_speedup.py [--threads 1 --num-layers 8 --hidden-size 256 --seq-length 512 ...]
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
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

from bench_device import add_device_flag, describe, pick_device, synchronize  # noqa: E402  (bench/ helper)


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
    p.add_argument("--attention-dropout", type=float, default=0.0,
                   help="headline figures (0: SDPA's flash path, no [s, s] score matrix on CPU)")
    p.add_argument("--secondary-attention-dropout", type=float, default=0.1,
                   help="a secondary dense vs r=S/2 line at this attention dropout (Megatron's default; < 0: off)")
    p.add_argument("--secondary-rounds", type=int, default=4, help="timed rounds of the secondary line")
    p.add_argument("--hidden-dropout", type=float, default=0.1)
    p.add_argument("--bf16", action="store_true", help="run the model in bfloat16 autocast")
    p.add_argument("--warmup", type=int, default=2, help="untimed rounds")
    p.add_argument("--rounds", type=int, default=6, help="timed rounds (one step of every variant each)")
    p.add_argument("--overhead-rounds", type=int, default=20,
                   help="extra paired dense / r=S rounds for the overhead (at least)")
    p.add_argument("--overhead-max-rounds", type=int, default=40,
                   help="more paired rounds, up to this many, until the 95%% CI half-width is <= --overhead-ci")
    p.add_argument("--overhead-ci", type=float, default=0.01, help="target 95%% CI half-width of the r=S overhead")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    add_device_flag(p)
    args = p.parse_args(argv)
    args.device = pick_device(args.device, p)
    if args.num_layers < 3:
        p.error("--num-layers must be >= 3 (first and last layers stay dense)")
    if args.rounds < 2 or args.overhead_rounds < 0 or args.overhead_max_rounds < args.overhead_rounds:
        p.error("--rounds must be >= 2, --overhead-rounds >= 0 and --overhead-max-rounds >= --overhead-rounds")
    return args


def t_quantile_975(dof: int) -> float:
    """Student's t 97.5 % quantile (two-sided 95 %) for ``dof`` degrees of freedom (Cornish-Fisher expansion,
    within 0.5 % of the exact value for dof >= 3)."""
    z = 1.959964
    return z + (z**3 + z) / (4 * dof) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * dof**2)


def paired_overhead(dense: list[float], other: list[float]) -> tuple[float, float, float, float, float]:
    """Per-round ratios other/dense − 1: (mean, 95 % CI half-width, standard deviation, min, max)."""
    ratios = [o / d - 1.0 for d, o in zip(dense, other)]
    mean, sd = statistics.fmean(ratios), statistics.stdev(ratios)
    return mean, t_quantile_975(len(ratios) - 1) * sd / len(ratios) ** 0.5, sd, min(ratios), max(ratios)


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

    def __init__(self, name: str, model: GPTModel, bf16: bool, device: torch.device = torch.device("cpu")) -> None:
        self.name = name
        self.device = device
        self.model = model.to(device).train()
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1, foreach=True)
        self.bf16 = bf16
        self.times: list[float] = []
        self.cpu_times: list[float] = []

    def step(self, tokens: torch.Tensor, timed: bool) -> float:
        """One training step on tokens [b, s+1]; returns the loss (clocks read with the device synchronised)."""
        tokens = tokens.to(self.device)
        synchronize(self.device)
        start, cpu_start = time.perf_counter(), time.process_time()
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            loss = self.model(tokens[:, :-1], labels=tokens[:, 1:]).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        synchronize(self.device)
        if timed:
            self.times.append(time.perf_counter() - start)
            self.cpu_times.append(time.process_time() - cpu_start)
        return loss.item()


def measure_overhead(args: argparse.Namespace, dense: Variant, noop: Variant, batches: list[torch.Tensor]) -> None:
    """The r=S wrapper overhead from paired rounds (the headline rounds plus extra dense / r=S pairs)."""
    extra = 0
    bar = tqdm(total=args.overhead_max_rounds, desc="overhead pairs", file=sys.stderr)
    while extra < args.overhead_max_rounds:
        if extra >= args.overhead_rounds:
            _, half_width, _, _, _ = paired_overhead(dense.times, noop.times)
            if half_width <= args.overhead_ci:
                break
        pair = (dense, noop) if extra % 2 == 0 else (noop, dense)
        for variant in pair:
            variant.step(batches[extra % len(batches)], timed=True)
        extra += 1
        bar.update(1)
    bar.close()
    rounds = len(dense.times)
    print(f"-- wrapper overhead at r=S, paired over {rounds} rounds ({args.rounds} above + {extra} dense/r=S pairs)")
    for label, d, o in (("wall", dense.times, noop.times), ("process-CPU", dense.cpu_times, noop.cpu_times)):
        mean, half_width, sd, low, high = paired_overhead(d, o)
        verdict = ("CI below the per-round noise" if half_width < sd
                   else "CI NOT below the per-round noise: raise --overhead-max-rounds")
        target = "met" if half_width <= args.overhead_ci else "not met"
        print(f"{label:>12}: {mean:+.2%} ± {half_width:.2%} (95% CI; {verdict}; CI target ±{args.overhead_ci:.2%} "
              f"{target}; overhead target <= 2%)   per-round spread: sd {sd:.2%}, min..max {low:+.2%}..{high:+.2%}")


def secondary(args: argparse.Namespace, config: TransformerConfig, base: GPTModel, batches: list[torch.Tensor],
              theory: float) -> None:
    """Dense vs r=S/2 at ``--secondary-attention-dropout`` (same weights and batches): the secondary line."""
    s, half = args.seq_length, args.seq_length // 2
    dropped = dataclasses.replace(config, attention_dropout=args.secondary_attention_dropout)
    model = GPTModel(dropped)
    model.load_state_dict(base.state_dict())
    ltd = RandomLTD(parse_random_ltd_config(ltd_block(args.num_layers, half, s)), seed=args.seed)
    pair = [Variant("dense", copy.deepcopy(model), args.bf16, args.device),
            Variant(f"ltd r={half}", ltd.convert(copy.deepcopy(model), TransformerLayer), args.bf16, args.device)]
    rounds = 1 + args.secondary_rounds  # one untimed
    for round_index in tqdm(range(rounds), desc="secondary rounds", file=sys.stderr):
        for variant in (pair if round_index % 2 == 0 else pair[::-1]):
            variant.step(batches[round_index % len(batches)], timed=round_index >= 1)
    dense, ltd_half = (statistics.median(v.times) for v in pair)
    realized = 1.0 - ltd_half / dense
    print(f"== secondary: attention dropout {args.secondary_attention_dropout} (SDPA's math path on CPU: the "
          f"[b, heads, s, s] scores are materialised) — median wall over {args.secondary_rounds} rounds")
    print(f"realized saving r=S/2: {realized:.1%}   theoretical (layer FLOPs): {theory:.1%}   "
          f"realized/theoretical: {realized / theory:.2f}   (dense {dense * 1000:.1f} ms/step, "
          f"r=S/2 {ltd_half * 1000:.1f} ms/step)")


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
    variants = [Variant("dense", copy.deepcopy(base), args.bf16, args.device)]
    for name, reserved in ((f"ltd r={half}", half), (f"ltd r={s} (no-op)", s)):
        ltd = RandomLTD(parse_random_ltd_config(ltd_block(args.num_layers, reserved, s)), seed=args.seed)
        variants.append(Variant(name, ltd.convert(copy.deepcopy(base), TransformerLayer), args.bf16, args.device))
    gen = torch.Generator().manual_seed(args.seed)
    batches = [torch.randint(0, args.vocab_size, (args.micro_batch_size, s + 1), generator=gen)
               for _ in range(args.warmup + args.rounds)]
    print(f"config: layers {args.num_layers}, hidden {args.hidden_size}, heads {args.num_attention_heads}, "
          f"seq {s}, micro-batch {args.micro_batch_size}, vocab {args.vocab_size}, "
          f"{args.position_embedding_type}, dropout {args.attention_dropout}/{args.hidden_dropout}, "
          f"{'bf16 autocast' if args.bf16 else 'fp32'}, "
          f"device {describe(args.device)}", flush=True)
    for round_index in tqdm(range(args.warmup + args.rounds), desc="rounds", file=sys.stderr):
        order = variants if round_index % 2 == 0 else variants[::-1]
        for variant in order:
            variant.step(batches[round_index], timed=round_index >= args.warmup)
    tokens_per_step = args.micro_batch_size * s
    theory = theoretical_saving(config, s, half)
    print(f"== headline: attention dropout {args.attention_dropout}")
    for statistic, pick, cpu in (("median wall", statistics.median, False), ("best wall", min, False),
                                 ("median process-CPU", statistics.median, True)):
        t = {v.name: pick(v.cpu_times if cpu else v.times) for v in variants}
        print(f"-- {statistic} step time over {args.rounds} rounds")
        for v in variants:
            print(f"{v.name:>22}: {t[v.name] * 1000:8.1f} ms/step  {tokens_per_step / t[v.name]:9.0f} tokens/s")
        dense, ltd_half, _ = (t[v.name] for v in variants)
        realized = 1.0 - ltd_half / dense
        print(f"realized saving r=S/2: {realized:.1%}   theoretical (layer FLOPs): {theory:.1%}   "
              f"realized/theoretical: {realized / theory:.2f} (target >= 0.90)")
    causal = theoretical_saving(config, s, half, attention=2.0)
    print(f"(for reference: counting causal attention at half its FLOPs, as a causal flash kernel computes it, "
          f"the theoretical saving is {causal:.1%})")
    measure_overhead(args, variants[0], variants[2], batches)
    if args.secondary_attention_dropout >= 0 and args.secondary_attention_dropout != args.attention_dropout:
        secondary(args, config, base, batches, theory)
    return 0


if __name__ == "__main__":
    sys.exit(main())
