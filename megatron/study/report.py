"""The study's report: numbers from the finished runs -> JSON, markdown table, plots, conclusion.

Every sentence of the conclusion is computed from the measured numbers (``conclusion.py``); nothing is
pre-written about the outcome.
"""
from __future__ import annotations

import math
import os
import platform
import statistics
import time
from typing import Any

from megatron.study.curves import read_curves, tokens_to_reach
from megatron.study.plan import SIZE_CHOICE, Case, StudyConfig, plan_case
from megatron.study.prepare import atomic_json

NAME = "data_efficiency_study"
PAPER_ORDER = ("baseline_100", "cl_100", "ltd_100", "cl_ltd_100", "baseline_67", "baseline_50", "cl_ltd_50")
COLUMNS = ("case", "data", "tokens", "samples read", "steps", "wall-clock (s)", "layer-tokens", "held-out loss",
           "held-out ppl", "word ppl", "last-word acc", "choice acc_norm", "vs seed noise")


def seed_band(results: dict[str, dict[str, Any]], cases: list[Case]) -> dict[str, Any] | None:
    """Held-out loss of the 100 % baseline over its seeds (None with fewer than 2 seeds).

    ``sd`` is the sample standard deviation; a single case differs from the seed mean when
    |delta| > 2 sd sqrt(1 + 1/n) (``vs_mean``), two single cases differ when |delta| > 2 sqrt(2) sd (``pair``).
    """
    names = [c.name for c in cases if c.name.startswith("baseline_100") and c.name in results]
    losses = [results[n]["eval"]["loss"] for n in names]
    if len(losses) < 2:
        return None
    n = len(losses)
    sd = statistics.stdev(losses)
    return {"cases": names, "losses": losses, "n": n, "mean": statistics.mean(losses), "sd": sd,
            "min": min(losses), "max": max(losses), "vs_mean": 2 * sd * math.sqrt(1 + 1 / n),
            "pair": 2 * math.sqrt(2) * sd}


def versus_band(loss: float, band: dict[str, Any] | None) -> str:
    """'lower' / 'within noise' / 'higher' than the seed mean by the 2 sd rule (or 'n/a')."""
    if band is None:
        return "n/a"
    delta = loss - band["mean"]
    if abs(delta) <= band["vs_mean"]:
        return "within noise"
    return "lower" if delta < 0 else "higher"


def _tokens_read(train: dict[str, Any], schedule: dict[str, list], config: StudyConfig) -> int:
    """Tokens fed to the model: sequences x (curriculum seqlen, else seq_length) summed over the steps."""
    steps, g = train["steps"], config.global_batch_size
    series = dict(schedule.get("seqlen") or [])
    if not series:
        return steps * g * config.seq_length
    total, current = 0, config.seq_length
    for step in range(1, steps + 1):
        current = int(series.get(step, current))
        total += g * current
    return total


def collect(study: Any, cases: list[Case]) -> dict[str, Any]:
    """Everything the report shows, as one JSON-able dict (LR-sweep runs only under ``lr_sweep``)."""
    config: StudyConfig = study.config
    results = study.finished(cases)
    runs: dict[str, Any] = {}
    sweep: list[dict[str, Any]] = []
    for case in cases:
        if case.name not in results:
            continue
        d = results[case.name]
        curves = read_curves(os.path.join(study.run_dir(case), "tensorboard"))
        plan = plan_case(config, case)
        validation = curves.validation(config.num_layers)
        if case.is_sweep:
            sweep.append({"name": case.name, "lr": case.lr, "tokens": d["train"]["tokens"],
                          "steps": d["train"]["steps"], "loss": d["eval"]["loss"], "ppl": d["eval"]["ppl"],
                          "final_valid_loss": validation[-1]["loss"] if validation else None})
            continue
        schedule = {k: sorted(v.items()) for k, v in curves.schedule.items() if k != "layer_tokens"}
        runs[case.name] = {"case": {"name": case.name, "label": case.label, "fraction": case.fraction,
                                    "cl": case.cl, "ltd": case.ltd, "seed": case.seed},
                           "lr": plan.lr, "cl_steps": plan.cl_steps if case.cl else None,
                           "ltd_steps": plan.ltd_steps if case.ltd else None, "train": d["train"],
                           "eval": d["eval"], "zeroshot": d.get("zeroshot"), "validation": validation,
                           "schedule": schedule,
                           "sequences_read": d["train"]["steps"] * config.global_batch_size,
                           "tokens_read": _tokens_read(d["train"], schedule, config)}
    band = seed_band(results, [c for c in cases if not c.is_sweep])
    finals = [r["validation"][-1]["loss"] for n, r in runs.items()
              if n.startswith("baseline_100") and r["validation"]]
    target = statistics.mean(finals) if finals else None
    for r in runs.values():
        r["vs_band"] = versus_band(r["eval"]["loss"], band)
        pts = r["validation"]
        r["reach_target"] = {axis: (None if target is None else
                                    tokens_to_reach([(p[axis], p["loss"]) for p in pts], target))
                             for axis in ("tokens", "seconds", "layer_tokens")}
    facts = dict(study.prepared.facts) if study.prepared else {}
    params = config.non_embedding_params()
    base = runs.get("baseline_100", {}).get("train")
    measured = study.study_seconds() if hasattr(study, "study_seconds") else None
    summed = sum(r["train"]["process_seconds"] + r["eval"]["seconds"] + (r["zeroshot"] or {}).get("seconds", 0.0)
                 for r in runs.values())
    best = min(sweep, key=lambda s: s["loss"]) if sweep else None
    return {"config": _config_dict(config), "facts": facts, "runs": runs, "seed_band": band,
            "target_valid_loss": target, "target_from": len(finals), "non_embedding_params": params,
            "embedding_params": config.embedding_params(),
            "tokens_per_non_embedding_param": config.budget_tokens / params,
            "eval_interval": config.eval_interval,
            "eval_interval_tokens": config.eval_interval * config.tokens_per_step,
            "baseline_tokens_per_second": None if not base else base["tokens"] / max(base["train_seconds"], 1e-9),
            "study_seconds": measured if measured is not None else summed,
            "study_seconds_measured": measured is not None, "run_process_seconds": summed,
            "lr_sweep": {"runs": sorted(sweep, key=lambda s: s["lr"]), "best_lr": best["lr"] if best else None,
                         "budget_fraction": config.sweep_budget_fraction} if sweep else None,
            "size_choice": SIZE_CHOICE,
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "written": time.strftime("%Y-%m-%d %H:%M")}


def _config_dict(config: StudyConfig) -> dict[str, Any]:
    from dataclasses import asdict

    d = asdict(config)
    d["extra_seeds"] = list(d["extra_seeds"])
    return d


def _fmt(x: float | None, spec: str) -> str:
    return "—" if x is None else format(x, spec)


def _mtok(x: float | None) -> str:
    from megatron.study.conclusion import _m

    return "—" if x is None else _m(x)


def _read(r: dict[str, Any]) -> str:
    return f"{r['sequences_read']:,} seq / {_mtok(r['tokens_read'])} tok"


def table_rows(data: dict[str, Any]) -> list[list[str]]:
    """The main table, in the paper's block order, then the seed rows and the band (no LR-sweep runs)."""
    runs = data["runs"]
    order = [n for n in PAPER_ORDER if n in runs] + sorted(n for n in runs if n not in PAPER_ORDER)
    rows = []
    for name in order:
        r = runs[name]
        z = r["zeroshot"] or {}
        seed = f" (seed {r['case']['seed']})" if name.startswith("baseline_100_seed") else ""
        rows.append([f"{r['case']['label']}{seed} `{name}`", f"{r['case']['fraction'] * 100:.0f}%",
                     _mtok(r["train"]["tokens"]), _read(r), str(r["train"]["steps"]),
                     f"{r['train']['train_seconds']:.0f}", _mtok(r["train"]["layer_tokens"]),
                     f"{r['eval']['loss']:.4f}", f"{r['eval']['ppl']:.2f}",
                     _fmt(z.get("word_perplexity"), ".1f"), _fmt(z.get("lastword_acc"), ".3f"),
                     _fmt(z.get("choice_acc_norm"), ".3f"),
                     "(a seed of the band)" if name.startswith("baseline_100") else r["vs_band"]])
    band = data["seed_band"]
    if band:
        rows.append([f"**baseline 100% seed band** ({band['n']} seeds)", "100%", "", "", "", "", "",
                     f"{band['mean']:.4f} ± {band['sd']:.4f} (sd); [{band['min']:.4f}, {band['max']:.4f}]",
                     f"{math.exp(band['mean']):.2f}", "", "", "",
                     f"noise: ±{band['vs_mean']:.4f} vs mean, ±{band['pair']:.4f} between cases"])
    return rows


def markdown_table(header: tuple[str, ...] | list[str], rows: list[list[str]]) -> str:
    """A GitHub markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def write_report(study: Any, cases: list[Case], report_dir: str) -> list[str]:
    """Write ``{report_dir}/data_efficiency_study.{md,json}`` and the PNGs; returns their paths."""
    from megatron.study.conclusion import conclusion_lines
    from megatron.study.plots import write_plots

    os.makedirs(report_dir, exist_ok=True)
    data = collect(study, cases)
    pngs = write_plots(data, report_dir, NAME)
    data["plots"] = [os.path.basename(p) for p in pngs]
    data["conclusion"] = conclusion_lines(data)
    json_path = os.path.join(report_dir, f"{NAME}.json")
    atomic_json(json_path, data)
    md_path = os.path.join(report_dir, f"{NAME}.md")
    tmp = md_path + ".tmp"
    with open(tmp, "w") as fh:
        fh.write(render_markdown(data))
    os.replace(tmp, md_path)
    return [md_path, json_path, *pngs]


def _saving_rows(data: dict[str, Any]) -> list[list[str]]:
    runs = data["runs"]
    base_tokens = runs.get("baseline_100", {}).get("train", {}).get("tokens")
    order = [n for n in PAPER_ORDER if n in runs] + sorted(n for n in runs if n.startswith("baseline_100_seed"))
    rows = []
    for name in order:
        r = runs[name]
        reach = r["reach_target"]
        t = reach["tokens"]
        saving = "not reached" if t is None else (f"{base_tokens / t:.2f}x" if base_tokens and t else "—")
        seed = f" (seed {r['case']['seed']})" if name.startswith("baseline_100") else ""
        rows.append([f"{r['case']['label']}{seed} `{name}`", f"{r['case']['fraction'] * 100:.0f}%",
                     "not reached" if t is None else _mtok(t), saving,
                     "not reached" if reach["seconds"] is None else f"{reach['seconds']:.0f}",
                     "not reached" if reach["layer_tokens"] is None else _mtok(reach["layer_tokens"])])
    return rows


def _sweep_lines(data: dict[str, Any]) -> list[str]:
    sweep = data.get("lr_sweep")
    if not sweep:
        return []
    c = data["config"]
    rows = [[f"{s['lr']:g}" + (" (best)" if s["lr"] == sweep["best_lr"] else "")
             + (" (= base_lr)" if math.isclose(s["lr"], c["base_lr"], rel_tol=1e-9) else ""), f"`{s['name']}`",
             _mtok(s["tokens"]), str(s["steps"]), _fmt(s["final_valid_loss"], ".4f"), f"{s['loss']:.4f}",
             f"{s['ppl']:.2f}"] for s in sweep["runs"]]
    return ["## Choice of the peak LR", "",
            f"Before the cases, the 100% baseline ran at {sweep['budget_fraction'] * 100:.0f}% of the budget with "
            f"each peak LR below (same data, seed, warm-up and evaluation; cosine decay over the shorter run). These "
            f"runs appear nowhere else in this report. The study's peak LR for 100% is base_lr = {c['base_lr']:g}.",
            "", markdown_table(("peak LR", "run", "tokens", "steps", "final validation loss", "held-out loss",
                                "held-out ppl"), rows), "",
            f"Best (lowest held-out loss): peak LR {sweep['best_lr']:g}.", ""]


def render_markdown(data: dict[str, Any]) -> str:
    """The whole report."""
    from megatron.study.conclusion import setup_lines

    c = data["config"]
    eval_seqs = c["eval_iters"] * c["global_batch_size"]
    out = ["# Data-efficiency study: baseline vs curriculum learning vs random-LTD (CPU scale)", "",
           f"Written by `bash examples_deepspeed/data_efficiency/study_cpu.sh` on {data['written']} "
           f"({data['machine']}). Every number below was measured by that command; the text is generated from "
           f"the numbers.", "", "## Set-up", ""]
    out += setup_lines(data)
    out += [""] + _sweep_lines(data)
    band = data["seed_band"]
    noise = ("`vs seed noise`: the held-out loss minus the seed mean of the 100% baseline, judged with the sample "
             "standard deviation sd of its seeds: lower/higher when |Δ| > 2·sd·sqrt(1+1/n)"
             + (f" = {band['vs_mean']:.4f}" if band else "") + ", else within noise (with "
             + (f"{band['n']} seeds" if band else "so few seeds") + ", sd is only a rough estimate).")
    out += ["## Results", "",
            "Held-out loss/perplexity: `tools/eval_gpt.py --full-split` on the whole held-out split. Zero-shot: "
            "lm-eval on the offline tasks over held-out documents (`tasks/eval_harness/offline_tasks.py`). "
            "Wall-clock: summed training-step time (start-up, evaluations and checkpoints excluded). "
            "Tokens: consumed tokens as the paper counts them; under random-LTD they are compute-equivalent "
            "(spec §3.6: a dropped token is not counted), so an LTD run reads more data than its tokens say. "
            "Samples read: sequences drawn (steps x global batch) and the tokens fed to the model "
            "(after curriculum truncation; random-LTD's dropped tokens included). "
            "Layer-tokens: tokens processed summed over the layers. " + noise, "",
            markdown_table(COLUMNS, table_rows(data)), ""]
    target = data["target_valid_loss"]
    res = data["eval_interval_tokens"]
    from megatron.study.conclusion import saving_band

    sb = saving_band(data)
    out += ["## Data saving", "",
            f"Consumed tokens (and training seconds, layer-tokens) each run needed to reach the target validation "
            f"loss {_fmt(target, '.4f')}: the mean final validation loss of the 100% baseline over its "
            f"{data.get('target_from', 1)} seed(s), linearly interpolated between the evaluations during "
            f"training. Every evaluation scores the same first {c['eval_iters']} global batches of the held-out "
            f"split ({eval_seqs} sequences, ≈ {_mtok(eval_seqs * c['seq_length'])} tokens) every "
            f"{data['eval_interval']} steps; the resolution is one evaluation interval, "
            f"{_mtok(res)} tokens ({res / c['budget_tokens'] * 100:.1f}% of the 100% budget). "
            f"Saving = tokens of `baseline_100` / tokens needed. The 100% baseline's seed runs are listed too: "
            f"their own savings are the band of a saving that is noise.", ""]
    out += [markdown_table(("case", "data", "tokens to reach", "data saving", "seconds to reach",
                            "layer-tokens to reach"), _saving_rows(data)), ""]
    if sb:
        span = ("none reached the target" if sb["min"] is None else
                f"{sb['reached']} of {sb['n']} reached it, savings {sb['min']:.2f}x–{sb['max']:.2f}x")
        out += [f"Seed band of the saving: of the {sb['n']} baseline-100% seed runs, {span} (a seed that ends "
                f"above the mean never reaches it within its budget).", ""]
    out += ["## Curves", ""]
    for png in data["plots"]:
        out += [f"![{png}]({png})", ""]
    out += ["## Conclusion", ""]
    out += [f"- {line}" for line in data["conclusion"]]
    out += ["", f"Machine-readable results: `{NAME}.json`.", ""]
    return "\n".join(out)
