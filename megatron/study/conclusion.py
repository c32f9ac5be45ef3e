"""The report's set-up description and conclusion, generated from the measured numbers.

The paper's claims (spec §11, GPT-3 1.3B on the Pile, average zero-shot accuracy over 19 tasks) are listed as
claims; each gets a verdict computed here from this study's held-out losses and the baseline seed band.
"""
from __future__ import annotations

import math
from typing import Any

from megatron.study.plan import StudyConfig, all_cases, plan_case

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
        lines.append(f"- **Single epoch**: the run that reads most ({worst.case.name}: ~{_m(worst.est_raw_tokens)} "
                     f"training tokens, more than its budget because curriculum truncation and random-LTD count "
                     f"fewer tokens per sample) reads {worst.est_raw_tokens / f['train_split_tokens'] * 100:.0f}% "
                     f"of the training split (checked before training), so no run needs a second epoch.")
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
                 f"run; cosine decay to {c['min_lr']:g} over the run's own budget.")
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
    tps = data.get("baseline_tokens_per_second")
    if tps:
        lines.append(f"- **How the size was chosen**: the study must fit in 60 minutes on this machine with 100% >= 20 "
                     f"tokens per non-embedding parameter. The 100% baseline trained at {tps:,.0f} tokens/s "
                     f"(measured here); the whole study took {data['study_seconds'] / 60:.1f} minutes of "
                     f"training and evaluation processes (data preparation excluded).")
    return lines


def _verdict(relation: str, loss: float, low: float | None, high: float | None) -> str:
    """A held-out loss against the reference's noise interval [low, high] under the paper's relation."""
    if low is None or high is None:
        return "undecided: there is no seed band to compare the difference with"
    if relation == "better":
        if loss < low:
            return "confirmed (lower loss, beyond the seed noise)"
        return "not confirmed: the difference is within the seed noise" if loss <= high else \
            "contradicted: higher loss, beyond the seed noise"
    if relation == "worse":
        if loss > high:
            return "confirmed (higher loss, beyond the seed noise)"
        return "not confirmed: within the seed noise" if loss >= low else "contradicted: lower loss, beyond the noise"
    if loss <= high:
        return "confirmed (not above the seed band)" if loss >= low else "confirmed, and lower than the seed band"
    return "not confirmed: higher loss, beyond the seed noise"


def conclusion_lines(data: dict[str, Any]) -> list[str]:
    """The conclusion, sentence by sentence, from the numbers."""
    runs = data["runs"]
    band = data["seed_band"]
    lines: list[str] = []
    if band:
        lines.append(f"Seed noise: the 100% baseline's held-out loss over {len(band['losses'])} seeds is "
                     f"{band['mean']:.4f} ± {band['sd']:.4f} (sd), range [{band['min']:.4f}, {band['max']:.4f}] "
                     f"(half-range {band['half_range']:.4f}). Differences inside that range are not evidence; "
                     f"between two other cases, a difference counts as beyond the noise when it exceeds the "
                     f"half-range.")
        noise: float | None = band["half_range"]
    else:
        lines.append("Seed noise: fewer than two seeds of the 100% baseline finished, so no difference below can be "
                     "told apart from noise.")
        noise = None
    ref_loss = band["mean"] if band else runs.get("baseline_100", {}).get("eval", {}).get("loss")
    for name, r in runs.items():
        if name.startswith("baseline_100"):
            continue
        loss = r["eval"]["loss"]
        d = "" if ref_loss is None else f" ({loss - ref_loss:+.4f} vs the 100% baseline{' seed mean' if band else ''})"
        where = {"below": "below the seed band", "within": "within the seed band", "above": "above the seed band",
                 "n/a": "no seed band"}[r["vs_band"]]
        reach = r["reach_target"]["tokens"]
        base_tokens = runs.get("baseline_100", {}).get("train", {}).get("tokens")
        if reach is None:
            saving = "it never reached the 100% baseline's final validation loss"
        else:
            saving = f"it reached the 100% baseline's final validation loss after {_m(reach)} tokens"
            if base_tokens:
                saving += f" ({base_tokens / reach:.2f}x data saving)"
        lines.append(f"{r['case']['label']} {r['case']['fraction'] * 100:.0f}% (`{name}`): held-out loss {loss:.4f}"
                     f"{d}, {where}; {saving}.")
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
            if noise is None:
                low = high = None
            elif ref == "baseline_100":
                low, high = band["min"], band["max"]
            else:  # another case: its loss +- the seed half-range
                low, high = runs[ref]["eval"]["loss"] - noise, runs[ref]["eval"]["loss"] + noise
            verdict = _verdict(relation, runs[case]["eval"]["loss"], low, high)
            lines.append(f"Paper: {claim}. Here (`{case}` vs `{ref}`, held-out loss): {verdict}.")
    lines += _zeroshot_lines(runs)
    tpp = data["tokens_per_non_embedding_param"]
    if tpp < 20:
        lines.append(f"Caveat: the 100% budget is only {tpp:.1f} tokens per non-embedding parameter (< 20): the "
                     f"comparison may be dominated by under-training.")
    return lines


def _zeroshot_lines(runs: dict[str, Any]) -> list[str]:
    """Whether any zero-shot accuracy difference from baseline_100 exceeds two binomial standard errors."""
    base = (runs.get("baseline_100") or {}).get("zeroshot")
    if not base:
        return []
    lines = []
    for key, label in (("lastword_acc", "last-word accuracy"), ("choice_acc_norm", "multiple-choice acc_norm")):
        n = base.get("n_" + key.split("_")[0])  # n_lastword / n_choice
        p = base[key]
        se = math.sqrt(max(p * (1 - p), 0.25 / max(n or 1, 1)) / n) if n else None
        diffs = {name: r["zeroshot"][key] - p for name, r in runs.items()
                 if r.get("zeroshot") and name != "baseline_100"}
        if not diffs or se is None:
            continue
        big = [f"`{k}` ({v:+.3f})" for k, v in diffs.items() if abs(v) > 2 * se]
        lines.append(f"Zero-shot {label}: baseline_100 {p:.3f} on {n} items (binomial standard error ~{se:.3f}); "
                     + ("differences beyond two standard errors: " + ", ".join(big) if big else
                        "no case differs from it by more than two standard errors") + ".")
    return lines
