#!/usr/bin/env python
"""Gather a GLUE finetuning sweep into one table and the 9-number GLUE score.

Reads every ``{DIR}/{task}/seed{S}_lr{LR}/results.json`` that ds_finetune_bert_glue.sh (tasks/main.py
--results-path) wrote. Per run it takes the best epoch (the file's ``best`` / ``best_epoch``: highest overall
headline metric). Per reported score and learning rate it takes ``statistics.median_high`` and
``statistics.stdev`` over the seeds (stdev 0 with one seed), then keeps the learning rate with the best median
(the smallest such lr on ties). Scores are x100:

    MNLI-m / MNLI-mm   accuracy on dev_matched.tsv / dev_mismatched.tsv at the run's best overall epoch
    QQP QNLI SST-2 MRPC RTE   accuracy       CoLA   Matthews corrcoef (mcc)       STS-B   (Pearson + Spearman) / 2

MNLI-m and MNLI-mm are two rows of the table and pick their learning rate independently, like the other rows.
The GLUE score is the mean of these 9 numbers; missing ones print as "-" and the mean is then over the present
ones (a note says which are missing). Tasks that are not GLUE tasks (RACE) get a row with their file's headline
metric, plus one row per dev set when there are several (RACE-middle, RACE-high), and are not part of the score.

    python ds_finetune_gather_result.py OUTPUT_DIR [--output table.md] [--json [summary.json]] [--all-lrs]

Unreadable or malformed results files are skipped with a warning naming them; no usable results at all is one
error line (exit 1).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import statistics
import sys
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

GLUE_TASKS = ("MNLI", "QQP", "QNLI", "SST-2", "CoLA", "STS-B", "MRPC", "RTE")
MNLI_DEV = {"MNLI-m": "dev_matched.tsv", "MNLI-mm": "dev_mismatched.tsv"}
# The 9 numbers of the GLUE score, in the order they are reported: (row name, task, metric key).
GLUE_SCORE_ROWS = (("MNLI-m", "MNLI", "accuracy"), ("MNLI-mm", "MNLI", "accuracy"), ("QQP", "QQP", "accuracy"),
                   ("QNLI", "QNLI", "accuracy"), ("SST-2", "SST-2", "accuracy"), ("CoLA", "CoLA", "mcc"),
                   ("STS-B", "STS-B", "corr"), ("MRPC", "MRPC", "accuracy"), ("RTE", "RTE", "accuracy"))
GLUE_SCORE_NAMES = tuple(name for name, _, _ in GLUE_SCORE_ROWS)
_RUN_DIR = re.compile(r"^seed(?P<seed>-?\d+)_lr(?P<lr>[^/]+)$")


class GatherError(Exception):
    """No usable results: the one error line the CLI prints."""


class _Malformed(Exception):
    """A results file that cannot be used (the message says why)."""


@dataclass
class Run:
    """One finetuning run's scores (x100) at its best epoch, keyed by row name."""

    path: str
    task: str
    seed: int
    lr: float
    scores: dict[str, float]
    metric: dict[str, str]  # row name -> metric key


@dataclass
class LrStats:
    """One row's statistics at one learning rate."""

    lr: float
    values: dict[int, float]  # seed -> score (x100)
    median: float = field(init=False)
    stdev: float = field(init=False)

    def __post_init__(self) -> None:
        ordered = [self.values[s] for s in sorted(self.values)]
        self.median = statistics.median_high(ordered)
        self.stdev = statistics.stdev(ordered) if len(ordered) > 1 else 0.0


@dataclass
class Row:
    """One line of the table: a reported score, its best learning rate and the per-lr statistics."""

    name: str
    task: str
    metric: str
    by_lr: list[LrStats]  # ascending lr

    @property
    def best(self) -> LrStats:
        """The learning rate with the highest median (the smallest lr among equal medians)."""
        return max(self.by_lr, key=lambda s: (s.median, -s.lr))


@dataclass
class Summary:
    """Everything the gather found."""

    root: str
    rows: dict[str, Row]
    skipped: list[tuple[str, str]]  # (path, reason)
    glue_score: bool

    def glue_numbers(self) -> dict[str, float | None]:
        """The 9 numbers of the GLUE score (None where missing)."""
        return {name: (self.rows[name].best.median if name in self.rows else None) for name in GLUE_SCORE_NAMES}

    def glue_mean(self) -> float | None:
        """Mean of the present numbers of the GLUE score (None when none is present)."""
        present = [v for v in self.glue_numbers().values() if v is not None]
        return sum(present) / len(present) if present else None


# ------------------------------------------------------------------------------------------------------------
# Reading
# ------------------------------------------------------------------------------------------------------------
def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _Malformed(f"{what} is not a finite number ({value!r})")
    return float(value)


def _headline_metric(task: str, data: dict[str, Any]) -> str:
    for name, row_task, metric in GLUE_SCORE_ROWS:
        if row_task == task:
            return metric
    metric = data.get("metric", "accuracy")
    if not isinstance(metric, str):
        raise _Malformed(f'"metric" is not a string ({metric!r})')
    return metric


def read_run(path: str, dir_task: str, dir_seed: int, dir_lr: str) -> Run:
    """One results.json -> Run; _Malformed (with the reason) when it cannot be used."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise _Malformed(f"invalid JSON (line {e.lineno} column {e.colno}: {e.msg})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise _Malformed(f"cannot read ({getattr(e, 'strerror', None) or e})") from None
    if not isinstance(data, dict):
        raise _Malformed("expected a JSON object")
    task = data.get("task", dir_task)
    if task != dir_task:
        raise _Malformed(f'"task" is {task!r} but the file is under {dir_task}/')
    seed = data.get("seed", dir_seed)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise _Malformed(f'"seed" is not an integer ({seed!r})')
    if "lr" in data:
        lr = _number(data["lr"], '"lr"')
    else:
        try:
            lr = float(dir_lr)
        except ValueError:
            raise _Malformed(f'no "lr" and the directory name has none ({dir_lr!r})') from None
    best = data.get("best")
    if not isinstance(best, dict):
        raise _Malformed('no "best" evaluation (no epoch evaluated yet?)')
    metric = _headline_metric(task, data)
    if metric not in best:
        raise _Malformed(f'"best" has no {metric!r}')
    scores: dict[str, float] = {}
    metrics: dict[str, str] = {}
    if task == "MNLI":
        evaluation = _best_evaluation(data)
        for name, dev_name in MNLI_DEV.items():
            dev = evaluation.get("dev", {}).get(dev_name) if isinstance(evaluation.get("dev"), dict) else None
            if not isinstance(dev, dict) or metric not in dev:
                raise _Malformed(f"the best epoch has no {dev_name} {metric}")
            scores[name] = 100.0 * _number(dev[metric], f"{dev_name} {metric}")
            metrics[name] = metric
    else:
        scores[task] = 100.0 * _number(best[metric], f'"best" {metric}')
        metrics[task] = metric
        if task not in GLUE_TASKS:  # e.g. RACE: one row per dev set when there are several
            dev = _best_evaluation(data).get("dev")
            if isinstance(dev, dict) and len(dev) > 1:
                for dev_name, values in dev.items():
                    if isinstance(values, dict) and metric in values:
                        name = f"{task}-{os.path.splitext(os.path.basename(str(dev_name).rstrip('/')))[0]}"
                        scores[name] = 100.0 * _number(values[metric], f"{dev_name} {metric}")
                        metrics[name] = metric
    return Run(path=path, task=task, seed=seed, lr=lr, scores=scores, metric=metrics)


def _best_evaluation(data: dict[str, Any]) -> dict[str, Any]:
    evaluations = data.get("evaluations")
    if not isinstance(evaluations, list):
        raise _Malformed('no "evaluations" list')
    best_epoch = data.get("best_epoch")
    for evaluation in evaluations:
        if isinstance(evaluation, dict) and evaluation.get("epoch") == best_epoch:
            return evaluation
    raise _Malformed(f'no evaluation for "best_epoch" {best_epoch!r}')


def find_results(root: str) -> list[tuple[str, str, int, str]]:
    """(path, task, seed, lr string) of every {root}/{task}/seed{S}_lr{LR}/results.json, sorted."""
    found = []
    for task in sorted(os.listdir(root)):
        task_dir = os.path.join(root, task)
        if not os.path.isdir(task_dir):
            continue
        for run_dir in sorted(os.listdir(task_dir)):
            m = _RUN_DIR.match(run_dir)
            path = os.path.join(task_dir, run_dir, "results.json")
            if m and os.path.exists(path):
                found.append((path, task, int(m.group("seed")), m.group("lr")))
    return found


def warn(message: str) -> None:
    """One warning line on stderr."""
    print(f"warning: {message}", file=sys.stderr)


def gather(root: str, tasks: Sequence[str] | None = None, glue_score: bool = True) -> Summary:
    """Read a sweep's output directory (optionally only some tasks) into a Summary; GatherError without results."""
    if not os.path.isdir(root):
        raise GatherError(f"{root}: not a directory")
    runs: list[Run] = []
    skipped: list[tuple[str, str]] = []
    for path, task, seed, lr in find_results(root):
        if tasks is not None and task not in tasks:
            continue
        try:
            run = read_run(path, task, seed, lr)
        except _Malformed as e:
            skipped.append((path, str(e)))
            warn(f"{path}: {e}; skipped")
            continue
        runs.append(run)
    by_row: dict[str, dict[float, dict[int, tuple[float, str]]]] = {}
    row_meta: dict[str, tuple[str, str]] = {}
    for run in runs:
        for name, score in run.scores.items():
            per_seed = by_row.setdefault(name, {}).setdefault(run.lr, {})
            if run.seed in per_seed:
                warn(f"{run.path}: seed {run.seed} at lr {run.lr:g} already read from {per_seed[run.seed][1]}; "
                     "skipped")
                continue
            per_seed[run.seed] = (score, run.path)
            row_meta.setdefault(name, (run.task, run.metric[name]))
    if not by_row:
        where = f" for {', '.join(tasks)}" if tasks else ""
        raise GatherError(f"no usable results{where} under {root} (expected {{task}}/seed{{S}}_lr{{LR}}/results.json)")
    order = {name: i for i, name in enumerate(GLUE_SCORE_NAMES)}
    names = sorted(by_row, key=lambda n: (order.get(n, len(order)), n))
    rows = {}
    for name in names:
        task, metric = row_meta[name]
        stats = [LrStats(lr, {s: v for s, (v, _) in seeds.items()}) for lr, seeds in sorted(by_row[name].items())]
        rows[name] = Row(name=name, task=task, metric=metric, by_lr=stats)
    return Summary(root=root, rows=rows, skipped=skipped, glue_score=glue_score)


# ------------------------------------------------------------------------------------------------------------
# Reporting
# ------------------------------------------------------------------------------------------------------------
def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _row_names(summary: Summary) -> list[str]:
    if not summary.glue_score:
        return list(summary.rows)
    return list(GLUE_SCORE_NAMES) + [n for n in summary.rows if n not in GLUE_SCORE_NAMES]


def markdown(summary: Summary, all_lrs: bool = False) -> str:
    """The markdown report: best-lr table, then the GLUE score (and every lr with all_lrs)."""
    lines = [f"Results under {summary.root}: best learning rate per score, median_high \u00b1 stdev over seeds (x100)",
             "", "| task | metric | lr | median \u00b1 stdev | seeds |", "|---|---|---|---|---|"]
    for name in _row_names(summary):
        row = summary.rows.get(name)
        if row is None:
            lines.append(f"| {name} | - | - | - | 0 |")
            continue
        best = row.best
        lines.append(f"| {name} | {row.metric} | {best.lr:g} | {best.median:.2f} \u00b1 {best.stdev:.2f} | "
                     f"{len(best.values)} |")
    if summary.glue_score:
        numbers = summary.glue_numbers()
        present = [n for n, v in numbers.items() if v is not None]
        missing = [n for n, v in numbers.items() if v is None]
        mean = summary.glue_mean()
        lines += ["", "GLUE score (" + ", ".join(GLUE_SCORE_NAMES) + "; mean):", "",
                  "| " + " | ".join(GLUE_SCORE_NAMES) + " | GLUE |", "|" + "---|" * (len(GLUE_SCORE_NAMES) + 1),
                  "| " + " | ".join(_fmt(numbers[n]) for n in GLUE_SCORE_NAMES) + f" | {_fmt(mean)} |"]
        if missing and present:
            lines += ["", f"Note: mean over the {len(present)} present of {len(numbers)} numbers; "
                          f"missing: {', '.join(missing)}."]
        elif missing:
            lines += ["", "Note: no GLUE task results; no GLUE score."]
    if all_lrs:
        lines += ["", "Every learning rate:", "", "| task | lr | median \u00b1 stdev | seeds | per seed |",
                  "|---|---|---|---|---|"]
        for name, row in summary.rows.items():
            for s in row.by_lr:
                per_seed = ", ".join(f"{seed}: {v:.2f}" for seed, v in sorted(s.values.items()))
                lines.append(f"| {name} | {s.lr:g} | {s.median:.2f} \u00b1 {s.stdev:.2f} | {len(s.values)} | "
                             f"{per_seed} |")
    if summary.skipped:
        lines += ["", f"Skipped {len(summary.skipped)} results file(s): "
                  + "; ".join(f"{p} ({why})" for p, why in summary.skipped)]
    return "\n".join(lines) + "\n"


def to_json(summary: Summary) -> dict[str, Any]:
    """A JSON-ready summary: per row the best lr and every lr's statistics, the GLUE score, skipped files."""
    rows = []
    for row in summary.rows.values():
        best = row.best
        rows.append({
            "name": row.name, "task": row.task, "metric": row.metric, "best_lr": best.lr, "median": best.median,
            "stdev": best.stdev, "num_seeds": len(best.values),
            "by_lr": [{"lr": s.lr, "median": s.median, "stdev": s.stdev, "num_seeds": len(s.values),
                       "values": {str(seed): v for seed, v in sorted(s.values.items())}} for s in row.by_lr],
        })
    out: dict[str, Any] = {"root": summary.root, "scale": 100, "rows": rows,
                           "skipped": [{"path": p, "reason": why} for p, why in summary.skipped]}
    if summary.glue_score:
        numbers = summary.glue_numbers()
        out["glue_score"] = {"numbers": numbers, "mean": summary.glue_mean(),
                             "present": [n for n, v in numbers.items() if v is not None],
                             "missing": [n for n, v in numbers.items() if v is None]}
    return out


def _write(path: str, text: str) -> None:
    """Write text to path atomically (temp file in the same directory, then rename)."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def build_parser(description: str | None = None) -> argparse.ArgumentParser:
    """The CLI."""
    p = argparse.ArgumentParser(description=description or __doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("root", metavar="DIR", help="the sweep's output directory ({task}/seed{S}_lr{LR}/results.json)")
    p.add_argument("--output", metavar="FILE", help="also write the markdown table to FILE")
    p.add_argument("--json", nargs="?", const="", default=None, metavar="FILE",
                   help="also write a JSON summary to FILE (default: the --output file with a .json suffix)")
    p.add_argument("--all-lrs", action="store_true", help="add every learning rate's median and per-seed scores")
    p.add_argument("--tasks", nargs="+", metavar="TASK", help="only these task directories")
    return p


def main(argv: Iterable[str] | None = None, tasks: Sequence[str] | None = None, glue_score: bool = True,
         prog: str | None = None, description: str | None = None) -> int:
    """Run the CLI; returns the exit status (errors are one `error:` line on stderr)."""
    prog = prog or os.path.basename(sys.argv[0] or __file__)
    parser = build_parser(description)
    parser.prog = prog

    def one_line_error(message: str) -> None:
        print(f"error: {prog}: {message}", file=sys.stderr)
        raise SystemExit(2)

    parser.error = one_line_error  # type: ignore[method-assign]
    args = parser.parse_args(list(argv) if argv is not None else None)
    json_path = args.json
    if json_path == "":
        if not args.output:
            one_line_error("--json without a FILE needs --output (the summary goes next to it)")
        json_path = os.path.splitext(args.output)[0] + ".json"
    if json_path and args.output and os.path.abspath(json_path) == os.path.abspath(args.output):
        one_line_error("--json and --output name the same file")
    try:
        summary = gather(args.root, tasks=args.tasks or tasks, glue_score=glue_score)
    except GatherError as e:
        print(f"error: {prog}: {e}", file=sys.stderr)
        return 1
    text = markdown(summary, all_lrs=args.all_lrs)
    sys.stdout.write(text)
    try:
        if args.output:
            _write(args.output, text)
        if json_path:
            _write(json_path, json.dumps(to_json(summary), indent=2) + "\n")
    except OSError as e:
        print(f"error: {prog}: cannot write {e.filename}: {e.strerror}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
