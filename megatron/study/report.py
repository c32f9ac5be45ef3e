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
from megatron.study.plan import Case, StudyConfig, plan_case
from megatron.study.prepare import atomic_json

NAME = "data_efficiency_study"
PAPER_ORDER = ("baseline_100", "cl_100", "ltd_100", "cl_ltd_100", "baseline_67", "baseline_50", "cl_ltd_50")
COLUMNS = ("case", "data", "tokens", "steps", "wall-clock (s)", "layer-tokens", "held-out loss", "held-out ppl",
           "word ppl", "last-word acc", "choice acc_norm", "vs seed band")


def seed_band(results: dict[str, dict[str, Any]], cases: list[Case]) -> dict[str, Any] | None:
    """Held-out loss of the 100 % baseline over its seeds: mean, sd, min, max (None with fewer than 2 seeds)."""
    names = [c.name for c in cases if c.name.startswith("baseline_100") and c.name in results]
    losses = [results[n]["eval"]["loss"] for n in names]
    if len(losses) < 2:
        return None
    return {"cases": names, "losses": losses, "mean": statistics.mean(losses), "sd": statistics.stdev(losses),
            "min": min(losses), "max": max(losses), "half_range": (max(losses) - min(losses)) / 2}


def versus_band(loss: float, band: dict[str, Any] | None) -> str:
    """'below' / 'within' / 'above' the seed band [min, max] (or 'n/a')."""
    if band is None:
        return "n/a"
    if loss < band["min"]:
        return "below"
    return "above" if loss > band["max"] else "within"


def collect(study: Any, cases: list[Case]) -> dict[str, Any]:
    """Everything the report shows, as one JSON-able dict."""
    config: StudyConfig = study.config
    results = study.finished(cases)
    runs: dict[str, Any] = {}
    for case in cases:
        if case.name not in results:
            continue
        d = results[case.name]
        curves = read_curves(os.path.join(study.run_dir(case), "tensorboard"))
        plan = plan_case(config, case)
        runs[case.name] = {"case": {"name": case.name, "label": case.label, "fraction": case.fraction,
                                    "cl": case.cl, "ltd": case.ltd, "seed": case.seed},
                           "lr": plan.lr, "cl_steps": plan.cl_steps if case.cl else None,
                           "ltd_steps": plan.ltd_steps if case.ltd else None, "train": d["train"],
                           "eval": d["eval"], "zeroshot": d.get("zeroshot"),
                           "validation": curves.validation(config.num_layers),
                           "schedule": {k: sorted(v.items()) for k, v in curves.schedule.items()
                                        if k != "layer_tokens"}}
    band = seed_band(results, cases)
    target = None
    if "baseline_100" in runs and runs["baseline_100"]["validation"]:
        target = runs["baseline_100"]["validation"][-1]["loss"]
    for name, r in runs.items():
        r["vs_band"] = versus_band(r["eval"]["loss"], band)
        pts = r["validation"]
        reach = {axis: (None if target is None else
                        tokens_to_reach([(p[axis], p["loss"]) for p in pts], target))
                 for axis in ("tokens", "seconds", "layer_tokens")}
        r["reach_target"] = reach
    facts = dict(study.prepared.facts) if study.prepared else {}
    params = config.non_embedding_params()
    base = runs.get("baseline_100", {}).get("train")
    return {"config": _config_dict(config), "facts": facts, "runs": runs, "seed_band": band,
            "target_valid_loss": target, "non_embedding_params": params,
            "embedding_params": config.embedding_params(),
            "tokens_per_non_embedding_param": config.budget_tokens / params,
            "baseline_tokens_per_second": None if not base else base["tokens"] / max(base["train_seconds"], 1e-9),
            "study_seconds": sum(r["train"]["process_seconds"] + r["eval"]["seconds"]
                                 + (r["zeroshot"] or {}).get("seconds", 0.0) for r in runs.values()),
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


def table_rows(data: dict[str, Any]) -> list[list[str]]:
    """The main table, in the paper's block order, then the seed rows and the band."""
    runs = data["runs"]
    order = [n for n in PAPER_ORDER if n in runs] + sorted(n for n in runs if n not in PAPER_ORDER)
    rows = []
    for name in order:
        r = runs[name]
        z = r["zeroshot"] or {}
        seed = f" (seed {r['case']['seed']})" if name.startswith("baseline_100_seed") else ""
        rows.append([f"{r['case']['label']}{seed} `{name}`", f"{r['case']['fraction'] * 100:.0f}%",
                     _mtok(r["train"]["tokens"]), str(r["train"]["steps"]), f"{r['train']['train_seconds']:.0f}",
                     _mtok(r["train"]["layer_tokens"]), f"{r['eval']['loss']:.4f}", f"{r['eval']['ppl']:.2f}",
                     _fmt(z.get("word_perplexity"), ".1f"), _fmt(z.get("lastword_acc"), ".3f"),
                     _fmt(z.get("choice_acc_norm"), ".3f"), r["vs_band"]])
    band = data["seed_band"]
    if band:
        rows.append([f"**baseline 100% seed band** ({len(band['losses'])} seeds)", "100%", "", "", "", "",
                     f"{band['mean']:.4f} ± {band['half_range']:.4f}", f"{math.exp(band['mean']):.2f}", "", "", "",
                     f"[{band['min']:.4f}, {band['max']:.4f}]"])
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


def render_markdown(data: dict[str, Any]) -> str:
    """The whole report."""
    from megatron.study.conclusion import setup_lines

    out = ["# Data-efficiency study: baseline vs curriculum learning vs random-LTD (CPU scale)", "",
           f"Written by `bash examples_deepspeed/data_efficiency/study_cpu.sh` on {data['written']} "
           f"({data['machine']}). Every number below was measured by that command; the text is generated from "
           f"the numbers.", "", "## Set-up", ""]
    out += setup_lines(data)
    out += ["", "## Results", "",
            "Held-out loss/perplexity: `tools/eval_gpt.py --full-split` on the whole held-out split. Zero-shot: "
            "lm-eval on the offline tasks over held-out documents (`tasks/eval_harness/offline_tasks.py`). "
            "Wall-clock: summed training-step time (start-up, evaluations and checkpoints excluded). "
            "Tokens: consumed tokens as the paper counts them (compute-equivalent under random-LTD, spec §3.6). "
            "Layer-tokens: tokens processed summed over the layers. `vs seed band`: the held-out loss below, "
            "within or above the range of the 100 % baseline's seeds.", "",
            markdown_table(COLUMNS, table_rows(data)), ""]
    target = data["target_valid_loss"]
    out += ["## Data saving", "",
            f"Consumed tokens (and training seconds, layer-tokens) each run needed to reach the final validation "
            f"loss of the 100 % baseline (seed {data['config']['seed']}): "
            f"{_fmt(target, '.4f')}, linearly interpolated between the evaluations during training "
            f"(every {data['config']['eval_iters']} batches of the held-out split). "
            f"Saving = baseline tokens / tokens needed.", ""]
    rows = []
    base_tokens = data["runs"].get("baseline_100", {}).get("train", {}).get("tokens")
    for name in [n for n in PAPER_ORDER if n in data["runs"]]:
        r = data["runs"][name]
        reach = r["reach_target"]
        t = reach["tokens"]
        saving = "not reached" if t is None else (f"{base_tokens / t:.2f}x" if base_tokens and t else "—")
        rows.append([f"{r['case']['label']} `{name}`", f"{r['case']['fraction'] * 100:.0f}%",
                     "not reached" if t is None else _mtok(t), saving,
                     "not reached" if reach["seconds"] is None else f"{reach['seconds']:.0f}",
                     "not reached" if reach["layer_tokens"] is None else _mtok(reach["layer_tokens"])])
    out += [markdown_table(("case", "data", "tokens to reach", "data saving", "seconds to reach",
                            "layer-tokens to reach"), rows), ""]
    out += ["## Curves", ""]
    for png in data["plots"]:
        out += [f"![{png}]({png})", ""]
    out += ["## Conclusion", ""]
    out += [f"- {line}" for line in data["conclusion"]]
    out += ["", f"Machine-readable results: `{NAME}.json`.", ""]
    return "\n".join(out)
