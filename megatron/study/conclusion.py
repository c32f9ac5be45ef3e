"""The report's set-up description and conclusion, generated from the measured numbers.

The paper's claims (spec §11, GPT-3 1.3B on the Pile, average zero-shot accuracy over 19 tasks) are listed as
claims; each gets a verdict computed here from this study's held-out losses and the sample standard deviation
sd of the 100 % baseline's seeds: a case differs from the seed mean when |delta| > 2 sd sqrt(1 + 1/n), two single
cases differ when |delta| > 2 sqrt(2) sd.
"""
from __future__ import annotations

import math
from typing import Any

from megatron.study.plan import StudyConfig, all_cases, cl_reuse_ratio, plan_case

# (case, reference case, what the paper reported, relation the paper found: "better" | "matches" | "worse")
PAPER_CLAIMS = (
    ("cl_100", "baseline_100", "CL (truncation + voc) 300B: 43.6 vs baseline 300B 42.5 zero-shot", "better"),
    ("ltd_100", "baseline_100", "random-LTD 300B: 43.7 vs baseline 300B 42.5", "better"),
    ("cl_ltd_100", "baseline_100", "CL + random-LTD 300B: 43.8 vs baseline 300B 42.5", "better"),
    ("cl_ltd_50", "baseline_100", "CL + random-LTD 150B: 42.8 vs baseline 300B 42.5 (2x data saving)", "matches"),
    ("baseline_50", "baseline_100", "baseline 150B: 42.0 vs baseline 300B 42.5", "worse"),
    ("baseline_67", "baseline_100", "baseline 200B: 41.9 vs baseline 300B 42.5", "worse"),
    ("cl_ltd_50", "baseline_50", "CL + random-LTD 150B: 42.8 vs baseline 150B 42.0", "better"),
)


def _m(x: float) -> str:
    """A token count: 1.23M, 45.6k or 789."""
    if abs(x) >= 1e6:
        return f"{x / 1e6:.2f}M"
    return f"{x / 1e3:.1f}k" if abs(x) >= 1e3 else f"{x:.0f}"


def setup_lines(data: dict[str, Any]) -> list[str]:
    """Corpus, tokenizer, model, budget, schedules and how the size was chosen."""
    c = data["config"]
    f = data["facts"]
    corpus = f.get("corpus", {})
    lines = []
    srcs = []
    for s in corpus.get("sources", []):
        if s["kind"] == "deb":
            srcs.append(f"Debian package `{s['package']}` {s['version']} ({s['licence']}; {s['files']} reST files, "
                        f"{s['documents']} documents, {s['bytes'] / 1e6:.1f} MB, {s['duplicates']} duplicate "
                        f"sections dropped)")
        else:
            srcs.append(f"`{s['path']}` ({s['documents']} documents, {s['bytes'] / 1e6:.1f} MB)")
    if srcs:
        how = (" (`apt-get download` + `dpkg-deb -x`, no root; translations excluded)"
               if any(s["kind"] == "deb" for s in corpus["sources"]) else "")
        lines.append("- **Corpus**: English reST prose, one document per section: " + "; ".join(srcs) + ". "
                     f"Built by `tools/make_corpus.py`{how}.")
    if "train_tokens" in f:
        lines.append(f"- **Split**: {corpus.get('train_documents')} training documents ({_m(f['train_tokens'])} "
                     f"tokens), {corpus.get('heldout_documents')} held-out documents ({f['heldout_tokens']:,} tokens; "
                     f"chosen by content hash, {c['heldout_fraction'] * 100:.1f}% of the documents). The training "
                     f"split is {f['train_samples']:,} samples of {c['seq_length']} tokens "
                     f"({_m(f['train_split_tokens'])} tokens) in one exact epoch.")
    config = StudyConfig(**{**c, "extra_seeds": tuple(c["extra_seeds"])})
    plans = [plan_case(config, case) for case in all_cases(config)]
    worst = max(plans, key=lambda p: p.est_raw_tokens)
    if "train_split_tokens" in f:
        reuse = {p.case.name: cl_reuse_ratio(config, p, f["train_samples"]) for p in plans if p.case.cl}
        most = max(reuse, key=reuse.get) if reuse else None
        cl_text = ("" if most is None else
                   f" The curriculum draws each step's samples from the vocab-rarity clusters existing then, in "
                   f"proportion to their sizes, and reuses an exhausted cluster; simulated expected draws / cluster "
                   f"size peak at {reuse[most]:.2f} ({most}; checked <= 1 before training), so no curriculum "
                   f"sample is expected to be seen twice.")
        lines.append(f"- **Single epoch**: the run that reads most ({worst.case.name}: ~{_m(worst.est_raw_tokens)} "
                     f"training tokens, more than its budget because curriculum truncation and random-LTD count "
                     f"fewer tokens per sample) reads {worst.est_raw_tokens / f['train_split_tokens'] * 100:.0f}% "
                     f"of the training split (checked before training), so no run needs a second epoch.{cl_text}")
    lines.append(f"- **Tokenizer**: byte-level BPE (GPT-2 format), vocabulary {c['vocab_size']}, trained on the "
                 f"training documents with `tools/train_tokenizer.py`.")
    lines.append(f"- **Model**: GPT, {c['num_layers']} layers, hidden {c['hidden_size']}, {c['num_attention_heads']} "
                 f"heads, sequence {c['seq_length']}, {data['non_embedding_params']:,} non-embedding parameters "
                 f"(+{data['embedding_params']:,} in the tied word and position embeddings), "
                 f"{'bf16' if c['bf16'] else 'fp32'}.")
    tpp = data["tokens_per_non_embedding_param"]
    lines.append(f"- **Budget**: 100% = {_m(c['budget_tokens'])} tokens = {tpp:.1f} tokens per non-embedding "
                 f"parameter ({'meets' if tpp >= 20 else 'BELOW'} the >= 20 required against under-training); "
                 f"global batch {c['global_batch_size']} x {c['seq_length']} tokens, "
                 f"{config.baseline_steps} steps for the 100% baseline.")
    lines.append(f"- **Optimiser**: Adam (0.9, 0.95), weight decay 0.1, clip 1.0; peak LR {c['base_lr']:g} at 100%, "
                 f"scaled by the inverse data fraction ({c['base_lr'] / (2 / 3):g} at 67%, {c['base_lr'] * 2:g} at "
                 f"50%) as the recipes; warm-up {int(c['warmup_fraction'] * c['budget_tokens']):,} tokens for every "
                 f"run ({c['warmup_fraction'] * 100:g}% of the 100% budget; the recipe warms up over 1%, 3e9 of "
                 f"300e9 tokens: the longer warm-up here is for the stability of a tiny model); cosine decay to "
                 f"{c['min_lr']:g} over the run's own budget.")
    base = next(p for p in plans if p.case.name == "baseline_100")
    lines.append(f"- **Curriculum** (CL cases): vocab-rarity percentile 1->100 (fixed_root, degree {c['cl_voc_root']}) "
                 f"and seqlen_truncate {c['cl_min_seqlen']}->{c['seq_length']} (step {c['cl_seqlen_step']}) over "
                 f"{c['cl_fraction'] * 100:.0f}% of the same-budget baseline's steps ({base.cl_steps} steps at 100%). "
                 f"**random-LTD** (LTD cases): layers {config.ltd_layer_ids} of {c['num_layers']}, reserved length "
                 f"{c['ltd_min_value']}->{c['seq_length']} (step {c['ltd_seq_per_step']}) over "
                 f"{c['ltd_fraction'] * 100:.0f}% ({base.ltd_steps} steps at 100%).")
    lines.append(f"- **Seeds**: every case uses seed {c['seed']} and the analyzer's pinned data order; the 100% "
                 f"baseline also runs with seeds {', '.join(map(str, c['extra_seeds']))} (other initialisation and "
                 f"data order) to measure the noise.")
    lines.append(_size_line(data, config, plans))
    return lines


def _size_line(data: dict[str, Any], config: StudyConfig, plans: list) -> str:
    """How the model size and precision were chosen: the measured figures, the arithmetic, what this run took."""
    choice = data.get("size_choice") or {}
    planned = sum(p.train_tokens for p in plans)
    default = StudyConfig()
    same = all(getattr(config, k) == getattr(default, k) for k in ("num_layers", "hidden_size", "vocab_size"))
    cands = []
    for cand in choice.get("candidates", []):
        tps = cand["tokens_per_second"]
        cands.append(f"{cand['model']}: {tps / 1e3:.1f}k tokens/s"
                     + (f", so the {_m(planned)} tokens of the {len(plans)} runs need ~{planned / tps / 60:.1f} "
                        f"minutes of training steps" if same else "")
                     + (" (chosen)" if cand.get("chosen") and same else ""))
    need = 20 * data["non_embedding_params"]
    text = (f"- **How the size was chosen**: the study must fit in 60 minutes on this machine with 100% >= 20 "
            f"tokens per non-embedding parameter ({data['non_embedding_params']:,} parameters x 20 = {_m(need)} "
            f"tokens {'<=' if need <= config.budget_tokens else '>'} the {_m(config.budget_tokens)} budget). "
            f"Throughput of the candidate configurations, measured {choice.get('measured', 'earlier')}: "
            + "; ".join(cands) + ("." if same else " (this study uses another model: --set or --tiny)."))
    tps = data.get("baseline_tokens_per_second")
    if tps:
        text += f" In this study the 100% baseline trained at {tps:,.0f} tokens/s."
    if data.get("study_seconds_measured"):
        text += (f" The whole command (data preparation and downloads included, every resumed invocation summed) "
                 f"took {data['study_seconds'] / 60:.1f} minutes; the runs' training, evaluation and zero-shot "
                 f"processes {data['run_process_seconds'] / 60:.1f} minutes of that.")
    else:
        text += (f" The runs' training, evaluation and zero-shot processes took {data['study_seconds'] / 60:.1f} "
                 f"minutes (the command's own wall-clock was not recorded).")
    return text


def _verdict(relation: str, delta: float, noise: float | None) -> str:
    """A held-out loss difference (case - reference) against the noise threshold under the paper's relation."""
    if noise is None:
        return "undecided: there is no seed band to compare the difference with"
    beyond = abs(delta) > noise
    if relation == "better":
        if not beyond:
            return "not confirmed: the difference is within the seed noise"
        return "confirmed (lower loss, beyond the seed noise)" if delta < 0 else \
            "contradicted: higher loss, beyond the seed noise"
    if relation == "worse":
        if not beyond:
            return "not confirmed: the difference is within the seed noise"
        return "confirmed (higher loss, beyond the seed noise)" if delta > 0 else \
            "contradicted: lower loss, beyond the seed noise"
    if not beyond:
        return "confirmed (no difference beyond the seed noise)"
    return "confirmed, and lower loss beyond the seed noise" if delta < 0 else \
        "not confirmed: higher loss, beyond the seed noise"


def conclusion_lines(data: dict[str, Any]) -> list[str]:
    """The conclusion, sentence by sentence, from the numbers."""
    runs = data["runs"]
    band = data["seed_band"]
    lines: list[str] = []
    if band:
        lines.append(f"Seed noise: the 100% baseline's held-out loss over {band['n']} seeds is {band['mean']:.4f} ± "
                     f"{band['sd']:.4f} (sample sd), range [{band['min']:.4f}, {band['max']:.4f}]. A case differs "
                     f"from that mean when |Δ| > 2·sd·sqrt(1+1/n) = {band['vs_mean']:.4f}; two single cases differ "
                     f"when |Δ| > 2·sqrt(2)·sd = {band['pair']:.4f}. With only {band['n']} seeds the sd itself is a "
                     f"rough estimate, so differences near these thresholds are weak evidence either way.")
    else:
        lines.append("Seed noise: fewer than two seeds of the 100% baseline finished, so no difference below can be "
                     "told apart from noise.")
    ref_loss = band["mean"] if band else runs.get("baseline_100", {}).get("eval", {}).get("loss")
    base_tokens = runs.get("baseline_100", {}).get("train", {}).get("tokens")
    for name, r in runs.items():
        if name.startswith("baseline_100"):
            continue
        loss = r["eval"]["loss"]
        d = "" if ref_loss is None else f" ({loss - ref_loss:+.4f} vs the 100% baseline{' seed mean' if band else ''})"
        where = {"lower": "lower beyond the seed noise", "within noise": "within the seed noise",
                 "higher": "higher beyond the seed noise", "n/a": "no seed band"}[r["vs_band"]]
        reach = r["reach_target"]["tokens"]
        if reach is None:
            saving = "it never reached the target validation loss (the 100% baseline seeds' mean final one)"
        else:
            saving = f"it reached the target validation loss after {_m(reach)} tokens"
            if base_tokens:
                saving += f" ({base_tokens / reach:.2f}x data saving)"
        lines.append(f"{r['case']['label']} {r['case']['fraction'] * 100:.0f}% (`{name}`): held-out loss {loss:.4f}"
                     f"{d}, {where}; {saving}.")

    sb = saving_band(data) if "train" in runs.get("baseline_100", {}) else None
    if sb:
        span = ("none of them reached the target" if sb["min"] is None else
                f"{sb['reached']} of {sb['n']} reached it, at savings {sb['min']:.2f}x–{sb['max']:.2f}x")
        lines.append(f"Data-saving noise: the 100% baseline's own seed runs against the same target: {span}; a "
                     f"case's saving inside that range is not evidence of a real saving.")
    base = runs.get("baseline_100")
    if base:
        for name in ("cl_100", "ltd_100", "cl_ltd_100", "cl_ltd_50"):
            if name in runs:
                r, b = runs[name]["train"], base["train"]
                lines.append(f"Cost of `{name}` relative to `baseline_100`: "
                             f"{r['train_seconds'] / max(b['train_seconds'], 1e-9):.2f}x the training wall-clock, "
                             f"{r['layer_tokens'] / b['layer_tokens']:.2f}x the layer-tokens, "
                             f"{r['steps'] / b['steps']:.2f}x the steps.")
    for case, ref, claim, relation in PAPER_CLAIMS:
        if case in runs and ref in runs:
            loss = runs[case]["eval"]["loss"]
            if band is None:
                delta, noise = loss - runs[ref]["eval"]["loss"], None
            elif ref == "baseline_100":  # a single case against the seed mean
                delta, noise = loss - band["mean"], band["vs_mean"]
            else:  # two single cases
                delta, noise = loss - runs[ref]["eval"]["loss"], band["pair"]
            verdict = _verdict(relation, delta, noise)
            lines.append(f"Paper: {claim}. Here (`{case}` vs `{ref}`, held-out loss, Δ {delta:+.4f}): {verdict}.")
    lines += _zeroshot_lines(runs)
    lines += _sweep_lines(data)
    tpp = data["tokens_per_non_embedding_param"]
    if tpp < 20:
        lines.append(f"Caveat: the 100% budget is only {tpp:.1f} tokens per non-embedding parameter (< 20): the "
                     f"comparison may be dominated by under-training.")
    return lines


def _sweep_lines(data: dict[str, Any]) -> list[str]:
    """Whether the study's base_lr is the LR sweep's best."""
    sweep = data.get("lr_sweep")
    if not sweep or sweep.get("best_lr") is None:
        return []
    base_lr, best = data["config"]["base_lr"], sweep["best_lr"]
    lrs = ", ".join(f"{s['lr']:g}" for s in sweep["runs"])
    losses = {s["lr"]: s["loss"] for s in sweep["runs"]}
    if math.isclose(best, base_lr, rel_tol=1e-9):
        verdict = f"base_lr = {base_lr:g} equals the sweep's best"
    elif any(math.isclose(lr, base_lr, rel_tol=1e-9) for lr in losses):
        own = next(v for k, v in losses.items() if math.isclose(k, base_lr, rel_tol=1e-9))
        verdict = (f"base_lr = {base_lr:g} is NOT the sweep's best ({best:g}, held-out loss {losses[best]:.4f} vs "
                   f"{own:.4f} at base_lr)")
    else:
        verdict = f"base_lr = {base_lr:g} was not among the swept values; the sweep's best is {best:g}"
    return [f"Peak LR: the sweep ({lrs}; 100% baseline at {sweep['budget_fraction'] * 100:.0f}% of the budget) "
            f"found {best:g} best; {verdict}."]


def _chance(key: str) -> float:
    """Chance level of an offline task's accuracy: 1 / choices for corpus_choice; ~0 for last-word greedy match."""
    if key == "choice_acc_norm":
        from tasks.eval_harness.offline_tasks import NUM_DISTRACTORS

        return 1.0 / (NUM_DISTRACTORS + 1)
    return 0.0


def _zeroshot_lines(runs: dict[str, Any]) -> list[str]:
    """Zero-shot accuracy differences from baseline_100 against two standard errors of a difference of two
    proportions, 2 sqrt(p1(1-p1)/n1 + p2(1-p2)/n2) (p floored at 1/n); and whether the baseline is at chance."""
    base = (runs.get("baseline_100") or {}).get("zeroshot")
    if not base:
        return []
    lines = []
    at_chance = []
    for key, label in (("lastword_acc", "last-word accuracy"), ("choice_acc_norm", "multiple-choice acc_norm")):
        nkey = "n_" + key.split("_")[0]  # n_lastword / n_choice
        n1, p1 = base.get(nkey), base[key]
        if not n1:
            continue

        def var(p: float, n: int) -> float:
            q = min(max(p, 1.0 / n), 1.0 - 1.0 / n) if n > 1 else 0.5
            return q * (1 - q) / n

        big, small = [], 0
        for name, r in runs.items():
            z = r.get("zeroshot")
            if not z or name == "baseline_100" or not z.get(nkey):
                continue
            delta = z[key] - p1
            threshold = 2 * math.sqrt(var(p1, n1) + var(z[key], z[nkey]))
            if abs(delta) > threshold:
                big.append(f"`{name}` ({delta:+.3f}, threshold {threshold:.3f})")
            else:
                small += 1
        chance = _chance(key)
        se1 = math.sqrt(var(p1, n1))
        if abs(p1 - chance) <= 2 * se1:
            at_chance.append(f"{label} {p1:.3f} vs chance {chance:.3f}")
        lines.append(f"Zero-shot {label}: baseline_100 {p1:.3f} on {n1} items (standard error ~{se1:.3f}); "
                     + ("differences beyond two standard errors of the difference: " + ", ".join(big)
                        if big else "no case differs from it by more than two standard errors of the difference")
                     + ".")
    if at_chance:
        lines.append("The baseline's task scores are within two standard errors of chance ("
                     + "; ".join(at_chance) + "): at this scale these tasks are at chance and cannot show the "
                     "paper's zero-shot gains; the held-out loss is the measure here.")
    return lines


def saving_band(data: dict[str, Any]) -> dict[str, Any] | None:
    """Data savings of the 100 % baseline's own seed runs against the target: the noise of a saving."""
    runs = data["runs"]
    base_tokens = runs.get("baseline_100", {}).get("train", {}).get("tokens")
    seeds = [r for n, r in runs.items() if n.startswith("baseline_100")]
    if len(seeds) < 2 or not base_tokens:
        return None
    reached = [base_tokens / r["reach_target"]["tokens"] for r in seeds if r["reach_target"]["tokens"]]
    return {"n": len(seeds), "reached": len(reached), "min": min(reached, default=None),
            "max": max(reached, default=None)}
