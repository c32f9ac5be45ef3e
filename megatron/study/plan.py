"""What the study runs: its configuration, the cases, each run's DeepSpeed JSON and pretrain_gpt.py flags.

The cases scale the GPT-3 1.3B recipe blocks (spec §7.2) down to a model that trains on two CPU cores:
baseline at 100 / 67 / 50 % of the token budget, curriculum (vocab rarity + seqlen_truncate) 100 %, random-LTD
100 %, CL + random-LTD 100 % and 50 %, and the 100 % baseline with two more seeds (the noise band).  As the
recipes do, the peak LR is scaled by the inverse data fraction, the LR decays over the run's own budget, the
warm-up is the same number of tokens for every run, and the curriculum / random-LTD schedules last a fixed
fraction (38 % / 70 %) of the step count of a baseline with the same budget.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from megatron.data_efficiency.accounting import actual_seq_length
from megatron.data_efficiency.config import ScheduleConfig
from megatron.data_efficiency.random_ltd_config import RandomLTDScheduleConfig
from megatron.data_efficiency.random_ltd_schedule import layer_tokens_per_row, reserved_length_at
from megatron.data_efficiency.scheduler import fixed_root_difficulty


class StudyError(ValueError):
    """Bad study input (flag, corpus too small, unknown case); the message names it."""


@dataclass(frozen=True)
class StudyConfig:
    """Model, budget and schedules shared by every case."""

    num_layers: int = 4
    """Transformer layers (random-LTD drops tokens in all but the first and the last, as the recipe).

    Size choice (see ``SIZE_CHOICE``): measured when the defaults were chosen, 4 layers / hidden 48 / vocab 8192
    trained at ~15.2k tokens/s in fp32 on the 2 idle cores (bf16: ~8.9k tokens/s)."""
    hidden_size: int = 48
    """Hidden size (48: 113k non-embedding parameters, so 2.3M tokens are 20 per parameter)."""
    num_attention_heads: int = 4
    """Attention heads."""
    seq_length: int = 128
    """Training sequence length."""
    global_batch_size: int = 64
    """Sequences per optimizer step."""
    micro_batch_size: int = 64
    """Sequences per forward/backward."""
    vocab_size: int = 8192
    """BPE vocabulary trained on the training split (tools/train_tokenizer.py)."""
    budget_tokens: int = 2_300_000
    """The 100 % token budget (--train-tokens of the 100 % runs; compute-equivalent, spec §3.6)."""
    base_lr: float = 3e-3
    """Peak LR of the 100 % runs; a run with data fraction f uses base_lr / f (the recipes' scaling). 3e-3 was the
    best of 1.5e-3 / 3e-3 / 6e-3 / 1.2e-2 in a half-budget sweep (held-out loss 6.87 / 6.67 / 6.78 / 6.80); the
    study command repeats the sweep (``--lr-sweep``) and its report says whether this is still the best."""
    min_lr: float = 1e-5
    """LR at the end of the cosine decay (every run)."""
    warmup_fraction: float = 0.03
    """LR warm-up, as a fraction of the 100 % budget, in tokens (the same for every run, as the recipes).

    The recipe warms up over 1 % (3e9 of 300e9 tokens); 3 % here, for the stability of a tiny model."""
    bf16: bool = False
    """bf16 instead of fp32 (fp32 measured faster for this model on the 2-core CPU: ~15.2k vs ~8.9k tokens/s)."""
    seed: int = 1234
    """Seed of every case (model initialisation and data order)."""
    extra_seeds: tuple[int, ...] = (1235, 1236)
    """More seeds of the 100 % baseline: the noise band (they change the initialisation and the data order)."""
    cl_fraction: float = 0.38
    """Curriculum length as a fraction of the same-budget baseline's steps (recipe: 110k of ~286k)."""
    ltd_fraction: float = 0.70
    """random-LTD schedule length as a fraction of the same-budget baseline's steps (recipe: 200k of ~286k)."""
    cl_min_seqlen: int = 16
    """seqlen_truncate starts here (recipe: 80 of 2048; a multiple of cl_seqlen_step)."""
    cl_seqlen_step: int = 8
    """seqlen_truncate difficulty_step (recipe: 8)."""
    cl_voc_root: int = 2
    """fixed_root degree of the vocab-rarity schedule (recipe: 2); percentile 1 -> 100, step 1."""
    ltd_min_value: int = 32
    """random-LTD reserved length at step 0 (recipe: 128 of 2048)."""
    ltd_seq_per_step: int = 8
    """random-LTD reserved length granularity (recipe: 16 of 2048)."""
    eval_points: int = 20
    """Validations during the 100 % baseline run (the interval, in iterations, is the same for every run)."""
    eval_iters: int = 4
    """Global batches per validation during training (a fixed subset of the held-out split)."""
    checkpoints: int = 4
    """Checkpoints per 100 % baseline run (resume points)."""
    zeroshot_docs: int = 40
    """lm-eval documents per offline task (0: no zero-shot evaluation)."""
    heldout_fraction: float = 0.015
    """Corpus documents held out (by content hash) for validation and the offline tasks."""
    sweep_budget_fraction: float = 0.5
    """Share of the 100 % budget of each LR-sweep run (``--lr-sweep``)."""

    @property
    def tokens_per_step(self) -> int:
        """Tokens of a full-length optimizer step."""
        return self.global_batch_size * self.seq_length

    @property
    def baseline_steps(self) -> int:
        """Optimizer steps of the 100 % baseline."""
        return math.ceil(self.budget_tokens / self.tokens_per_step)

    @property
    def eval_interval(self) -> int:
        """Iterations between validations (every run)."""
        return max(1, self.baseline_steps // self.eval_points)

    @property
    def save_interval(self) -> int:
        """Iterations between checkpoints (every run)."""
        return max(1, self.baseline_steps // self.checkpoints)

    @property
    def ltd_layer_ids(self) -> list[int]:
        """random-LTD layers: all but the first and the last (the recipe's 1..22 of 24)."""
        return list(range(1, self.num_layers - 1))

    def non_embedding_params(self) -> int:
        """Parameters outside the word/position embeddings (the output layer shares the word embedding)."""
        h = self.hidden_size
        per_layer = 12 * h * h + 13 * h  # qkv + proj + 4h MLP (weights + biases) + 2 layer norms
        return self.num_layers * per_layer + 2 * h  # + final layer norm

    def embedding_params(self, padded_vocab: int | None = None) -> int:
        """Word + position embedding parameters."""
        return ((padded_vocab or self.vocab_size) + self.seq_length) * self.hidden_size

    def check(self) -> None:
        """Shape rules the cases rely on; StudyError names the setting."""
        if self.num_layers < 3:
            raise StudyError(f"num_layers {self.num_layers}: random-LTD needs >= 3 layers (first and last stay full)")
        if self.hidden_size % self.num_attention_heads:
            raise StudyError(f"hidden_size {self.hidden_size} is not a multiple of heads {self.num_attention_heads}")
        if self.global_batch_size % self.micro_batch_size:
            raise StudyError(f"global_batch_size {self.global_batch_size} is not a multiple of micro_batch_size "
                             f"{self.micro_batch_size}")
        if self.cl_min_seqlen % self.cl_seqlen_step or not 0 < self.cl_min_seqlen < self.seq_length:
            raise StudyError(f"cl_min_seqlen {self.cl_min_seqlen}: expected a multiple of {self.cl_seqlen_step} "
                             f"below seq_length {self.seq_length}")
        if not 0 < self.ltd_min_value < self.seq_length:
            raise StudyError(f"ltd_min_value {self.ltd_min_value}: expected 0 < value < seq_length {self.seq_length}")
        if not 0 < self.sweep_budget_fraction <= 1:
            raise StudyError(f"sweep_budget_fraction {self.sweep_budget_fraction}: expected 0 < value <= 1")
        if self.budget_tokens < 2 * self.tokens_per_step:
            raise StudyError(f"budget_tokens {self.budget_tokens}: expected at least two steps "
                             f"({2 * self.tokens_per_step} tokens)")


TINY = StudyConfig(num_layers=3, hidden_size=32, num_attention_heads=2, seq_length=32, global_batch_size=8,
                   micro_batch_size=8, vocab_size=512, budget_tokens=24 * 8 * 32, base_lr=2e-3, cl_min_seqlen=8,
                   ltd_min_value=8, ltd_seq_per_step=4, eval_points=4, eval_iters=1, checkpoints=2,
                   zeroshot_docs=4, heldout_fraction=0.05)
"""A seconds-long configuration for tests (--tiny): 24 steps of 8 x 32 tokens on a 3-layer, 32-wide model."""

SIZE_CHOICE = {
    "measured": "when the defaults were chosen (previous session, 2 idle cores of this machine, not re-measured "
                "by this command)",
    "candidates": [
        {"model": "4 layers, hidden 48, vocab 8192, fp32", "tokens_per_second": 15_200, "chosen": True},
        {"model": "4 layers, hidden 48, vocab 8192, bf16", "tokens_per_second": 8_900, "chosen": False},
    ],
}
"""Throughput figures the default size and precision were chosen from (the report quotes them as such)."""


@dataclass(frozen=True)
class Case:
    """One training run of the study."""

    name: str
    """Directory name and key (e.g. ``cl_ltd_50``)."""
    label: str
    """Name in the report's table (e.g. ``CL+random-LTD``)."""
    fraction: float
    """Share of the 100 % token budget."""
    cl: bool = False
    """Curriculum learning: vocab rarity + seqlen_truncate."""
    ltd: bool = False
    """random-LTD on the middle layers."""
    seed: int | None = None
    """Seed (None: the study's)."""
    lr: float | None = None
    """Peak LR (None: base_lr / fraction, the recipes' scaling); set for the LR-sweep runs."""

    @property
    def is_sweep(self) -> bool:
        """An LR-sweep run (reported in its own section, not in the main table, plots or data saving)."""
        return self.lr is not None


CASES: tuple[Case, ...] = (
    Case("baseline_100", "baseline", 1.0),
    Case("baseline_67", "baseline", 2 / 3),
    Case("baseline_50", "baseline", 0.5),
    Case("cl_100", "CL (voc + seqlen_truncate)", 1.0, cl=True),
    Case("ltd_100", "random-LTD", 1.0, ltd=True),
    Case("cl_ltd_100", "CL + random-LTD", 1.0, cl=True, ltd=True),
    Case("cl_ltd_50", "CL + random-LTD", 0.5, cl=True, ltd=True),
)


def all_cases(config: StudyConfig) -> list[Case]:
    """The seven recipe cases, then the 100 % baseline with each extra seed."""
    extra = [Case(f"baseline_100_seed{s}", "baseline", 1.0, seed=s) for s in config.extra_seeds]
    return [replace(c, seed=config.seed) for c in CASES] + extra


def sweep_case(config: StudyConfig, lr: float) -> Case:
    """``lrsweep_<lr>``: the 100 % baseline at ``sweep_budget_fraction`` of the budget with peak LR ``lr``."""
    return Case(f"lrsweep_{lr:g}", f"LR sweep, peak LR {lr:g}", config.sweep_budget_fraction, seed=config.seed, lr=lr)


def parse_lr_sweep(text: str | None) -> list[float]:
    """``LR[,LR...]`` -> sorted distinct positive LRs; StudyError names a bad value."""
    if not text:
        return []
    out = []
    for item in text.split(","):
        try:
            lr = float(item)
        except ValueError:
            lr = float("nan")
        if not (lr > 0 and math.isfinite(lr)):
            raise StudyError(f"--lr-sweep {text!r}: expected comma-separated positive learning rates, got {item!r}")
        out.append(float(f"{lr:g}"))
    return sorted(set(out))


def select_cases(config: StudyConfig, names: list[str] | None) -> list[Case]:
    """The cases named (all when None), in the study's order; StudyError for an unknown name."""
    cases = all_cases(config)
    if not names:
        return cases
    known = {c.name for c in cases}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise StudyError(f"--cases: unknown case(s) {', '.join(unknown)}; expected some of {', '.join(sorted(known))}")
    return [c for c in cases if c.name in names]


@dataclass
class RunPlan:
    """What one case will do, computed before it runs."""

    case: Case
    train_tokens: int
    lr: float
    baseline_steps: int
    """Steps of a baseline with this budget (the schedules' reference)."""
    cl_steps: int
    ltd_steps: int
    est_steps: int = 0
    """Steps the run will take (simulated with the library's schedules)."""
    est_raw_tokens: int = 0
    """Training-split tokens the run reads (samples x seq_length): larger than train_tokens under CL / LTD."""
    est_layer_tokens: int = 0
    """Tokens processed summed over layers."""
    schedule: list[dict[str, int]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """JSON-able summary (without the per-step schedule)."""
        d = asdict(self)
        d.pop("schedule")
        d["case"] = asdict(self.case)
        return d


def cl_schedules(config: StudyConfig, steps: int) -> tuple[ScheduleConfig, ScheduleConfig]:
    """(vocab rarity percentile schedule, seqlen_truncate schedule) over ``steps`` curriculum steps."""
    voc = ScheduleConfig("fixed_root", 1, 100, total_curriculum_step=steps, difficulty_step=1,
                         root_degree=config.cl_voc_root)
    seqlen = ScheduleConfig("fixed_linear", config.cl_min_seqlen, config.seq_length, total_curriculum_step=steps,
                            difficulty_step=config.cl_seqlen_step)
    return voc, seqlen


def ltd_schedule(config: StudyConfig, steps: int) -> RandomLTDScheduleConfig:
    """The reserved-length schedule over ``steps`` optimizer steps."""
    return RandomLTDScheduleConfig(config.ltd_min_value, config.seq_length, steps, config.ltd_seq_per_step)


def plan_case(config: StudyConfig, case: Case) -> RunPlan:
    """Budget, LR, schedule lengths and a step-by-step simulation of the run's token accounting (spec §3.6)."""
    train_tokens = int(round(config.budget_tokens * case.fraction))
    base_steps = math.ceil(train_tokens / config.tokens_per_step)
    lr = case.lr if case.lr is not None else config.base_lr / case.fraction
    plan = RunPlan(case, train_tokens, lr, base_steps,
                   cl_steps=max(1, round(config.cl_fraction * base_steps)),
                   ltd_steps=max(1, round(config.ltd_fraction * base_steps)))
    voc, seqlen = cl_schedules(config, plan.cl_steps)
    ltd = ltd_schedule(config, plan.ltd_steps)
    n_ltd = len(config.ltd_layer_ids) if case.ltd else 0
    consumed = step = 0
    while consumed < train_tokens:
        step += 1
        # the curriculum difficulty of step s is computed from s (1-based); random-LTD's r from completed steps
        cs = fixed_root_difficulty(step, seqlen) if case.cl else config.seq_length
        r = reserved_length_at(step - 1, ltd) if case.ltd else config.seq_length
        actual = actual_seq_length(config.seq_length, cs if case.cl else None, r if case.ltd else None,
                                   config.num_layers, n_ltd)
        consumed += config.global_batch_size * actual
        plan.est_raw_tokens += config.global_batch_size * config.seq_length
        plan.est_layer_tokens += config.global_batch_size * layer_tokens_per_row(cs, r, config.num_layers, n_ltd)
        entry = {"step": step}
        if case.cl:
            entry.update(seqlen=cs, voc=fixed_root_difficulty(step, voc))
        if case.ltd:
            entry["reserved"] = r
        plan.schedule.append(entry)
    plan.est_steps = step
    return plan


def cl_reuse_ratio(config: StudyConfig, plan: RunPlan, train_samples: int) -> float:
    """Expected draws / size of the most re-drawn curriculum cluster of a CL run (0.0 for other runs).

    Mirrors the curriculum sampler: each change of the vocab-rarity percentile adds a cluster of
    ``train_samples // 100`` x (percentile change) samples; every step draws ``global_batch_size`` samples from
    the clusters existing then, in proportion to their sizes, and an exhausted cluster is reshuffled and reused.
    A ratio above 1 means the run sees some samples twice (a second epoch of that cluster).
    """
    if not plan.case.cl:
        return 0.0
    unit = train_samples // 100
    if unit <= 0:
        return math.inf
    sizes: list[float] = []
    draws: list[float] = []
    previous = 0
    for entry in plan.schedule:
        voc = entry["voc"]
        if voc > previous:
            sizes.append(float(unit * (voc - previous)))
            draws.append(0.0)
            previous = voc
        total = sum(sizes)
        if total <= 0:
            continue
        for i, size in enumerate(sizes):
            draws[i] += config.global_batch_size * size / total
    return max((d / s for d, s in zip(draws, sizes)), default=0.0)


def check_single_epoch(config: StudyConfig, plans: list[RunPlan], train_samples: int, margin: float = 1.02) -> None:
    """StudyError unless every run reads at most the training split once (with a small safety margin) and no
    curriculum cluster is expected to be drawn more often than it has samples (``cl_reuse_ratio`` <= 1)."""
    train_tokens = train_samples * config.seq_length
    worst = max(plans, key=lambda p: p.est_raw_tokens)
    if worst.est_raw_tokens * margin > train_tokens:
        raise StudyError(
            f"corpus too small for the single-epoch regime: case {worst.case.name} reads ~{worst.est_raw_tokens:,} "
            f"training tokens (+{(margin - 1) * 100:.0f}% margin) but the training split holds {train_tokens:,}; "
            f"add sources (--deb PKG) or lower --budget-tokens")
    ratios = {p.case.name: cl_reuse_ratio(config, p, train_samples) for p in plans}
    name = max(ratios, key=ratios.get) if ratios else None
    if name is not None and ratios[name] > 1.0:
        raise StudyError(
            f"corpus too small for the single-epoch regime: case {name}'s curriculum draws its most used cluster "
            f"{ratios[name]:.2f} times its size (expected draws / samples must be <= 1; the sampler reuses an "
            f"exhausted cluster); add sources (--deb PKG), lower budget_tokens or raise cl_voc_root")


def ds_config(config: StudyConfig, plan: RunPlan, analysis_dir: str, cluster_dir: str) -> dict[str, Any]:
    """The run's DeepSpeed JSON, with the keys the GPT recipe templates and the CPU quickstart use."""
    ds: dict[str, Any] = {
        "train_batch_size": config.global_batch_size,
        "train_micro_batch_size_per_gpu": config.micro_batch_size,
        "steps_per_print": 1_000_000,
        "gradient_clipping": 1.0,
        "bf16": {"enabled": config.bf16},
    }
    case = plan.case
    if not (case.cl or case.ltd):
        return ds
    de: dict[str, Any] = {"enabled": True, "seed": case.seed or config.seed}
    if case.cl:
        voc, seqlen = cl_schedules(config, plan.cl_steps)
        rarity = f"{analysis_dir}/vocab_rarity/vocab_rarity"
        de["data_sampling"] = {"enabled": True, "num_workers": 0, "curriculum_learning": {
            "enabled": True, "data_cluster_path": cluster_dir, "curriculum_metrics": {
                "voc": {
                    "index_to_sample_path": f"{rarity}_index_to_sample_percentile_merged",
                    "index_to_metric_path": f"{rarity}_index_to_metric",
                    "difficulty_type": "percentile", "clustering_type": "schedule_based",
                    "min_difficulty": voc.min_difficulty, "max_difficulty": voc.max_difficulty,
                    "schedule_type": "fixed_root",
                    "schedule_config": {"total_curriculum_step": plan.cl_steps, "difficulty_step": 1,
                                        "root_degree": config.cl_voc_root}},
                "seqlen_truncate": {
                    "index_to_sample_path": "dummy", "index_to_metric_path": "dummy",
                    "difficulty_type": "value", "clustering_type": "single_cluster",
                    "min_difficulty": seqlen.min_difficulty, "max_difficulty": seqlen.max_difficulty,
                    "schedule_type": "fixed_linear",
                    "schedule_config": {"total_curriculum_step": plan.cl_steps,
                                        "difficulty_step": config.cl_seqlen_step}}}}}
    if case.ltd:
        ids = config.ltd_layer_ids
        de["data_routing"] = {"enabled": True, "random_ltd": {
            "enabled": True, "total_layer_num": config.num_layers, "random_ltd_layer_num": len(ids),
            "random_ltd_layer_id": ids, "model_mask_name": "attention_mask", "model_type": "decoder",
            "hidden_state_order": "batch_seq_dim",
            "random_ltd_schedule": {"min_value": config.ltd_min_value, "max_value": config.seq_length,
                                    "schedule_type": "fixed_linear",
                                    "schedule_config": {"require_steps": plan.ltd_steps,
                                                        "seq_per_step": config.ltd_seq_per_step}}}}
    ds["data_efficiency"] = de
    return ds


def pretrain_flags(config: StudyConfig, plan: RunPlan, *, data_prefix: str, split: str, tokenizer_flags: list[str],
                   ds_config_path: str, run_dir: str, pinned_maps: str | None) -> list[str]:
    """pretrain_gpt.py flags of the run (``pinned_maps``: the analyzer's index-map prefix, for the study seed)."""
    case = plan.case
    c = config
    flags = [
        "--num-layers", c.num_layers, "--hidden-size", c.hidden_size, "--num-attention-heads", c.num_attention_heads,
        "--seq-length", c.seq_length, "--max-position-embeddings", c.seq_length,
        "--micro-batch-size", c.micro_batch_size, "--global-batch-size", c.global_batch_size,
        "--train-tokens", plan.train_tokens, "--lr", f"{plan.lr:.6g}", "--min-lr", c.min_lr,
        "--lr-decay-style", "cosine", "--lr-warmup-tokens", int(c.warmup_fraction * c.budget_tokens),
        "--lr-decay-tokens", plan.train_tokens,
        "--weight-decay", 0.1, "--adam-beta1", 0.9, "--adam-beta2", 0.95, "--clip-grad", 1.0,
        "--attention-dropout", 0.0, "--hidden-dropout", 0.0, "--init-method-std", 0.02,
        "--data-path", data_prefix, "--data-impl", "mmap", "--split", split, "--seed", case.seed or c.seed,
        *tokenizer_flags, "--train-data-exact-num-epochs", 1, "--num-workers", 0,
        "--log-interval", c.eval_interval, "--eval-interval", c.eval_interval, "--eval-iters", c.eval_iters,
        "--save", f"{run_dir}/checkpoint", "--load", f"{run_dir}/checkpoint", "--save-interval", c.save_interval,
        "--tensorboard-dir", f"{run_dir}/tensorboard", "--tensorboard-log-interval", 1,
        "--log-timers-to-tensorboard", "--log-validation-ppl-to-tensorboard",
        "--deepspeed", "--deepspeed_config", ds_config_path, "--no-pipeline-parallel",
    ]
    if c.bf16:
        flags.append("--bf16")
    if pinned_maps is not None:
        flags += ["--train-doc-idx-path", f"{pinned_maps}_doc_idx.npy",
                  "--train-sample-idx-path", f"{pinned_maps}_sample_idx.npy",
                  "--train-shuffle-idx-path", f"{pinned_maps}_shuffle_idx.npy"]
    if case.cl:
        flags.append("--data-efficiency-curriculum-learning")
    if case.ltd:
        flags.append("--random-ltd")
    return [str(f) for f in flags]
