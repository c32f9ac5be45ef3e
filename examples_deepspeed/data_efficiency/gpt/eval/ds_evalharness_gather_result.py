#!/usr/bin/env python
"""Gather lm-eval results of GPT checkpoints into one table and the 19-task average (spec §7.4).

Reads results JSONs as ``tasks/eval_harness/evaluate.py --results_path`` writes them (lm-eval 0.4's
``simple_evaluate`` dict: ``"results": {task: {"acc,none": ...}}``, ``"n-shot"``; the older harness's
``{"results": {task: {"acc": ...}}, "config": {"num_fewshot": k}}`` works too). Each argument is a results file
or a directory searched recursively for ``*.json``. A *column* of the table is one run directory (the folder
holding the files: ``{result_dir}/{ckpt_parent}/{ckpt}/`` for the recipes) at one shot count.

Metric per task (x100, except perplexities):
    acc_norm   hellaswag piqa arc_challenge arc_easy openbookqa logiqa mathqa prost sciq (and corpus_choice)
    f1         record mc_taco
    word_perplexity   wikitext (and corpus_perplexity)
    acc        every other task; where lm-eval 0.4 reports no acc (triviaqa, webqs, generation tasks) its
               exact_match
The lambada row reads lm-eval 0.4's ``lambada_openai`` (the OpenAI LAMBADA the reference ran as ``lambada``).
"Avg" is the mean over the 19 tasks hellaswag, lambada, triviaqa, webqs, winogrande, piqa, arc_challenge,
arc_easy, anli_r1, anli_r2, anli_r3, openbookqa, race, boolq, copa, rte, wsc, multirc, record; wikitext is
reported below it and not averaged. A column with some of the 19 missing averages the present ones and a note
names the missing tasks. Tasks outside the suite (the offline corpus_* tasks, sciq, ...) get their own rows.

    python ds_evalharness_gather_result.py RESULTS... [--num_fewshot K] [--output table.md] [--json summary.json]

Unreadable or malformed files are skipped with a warning naming them; no usable results at all is one error
line (exit 1).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

TASK_ORDER: tuple[str, ...] = (
    "hellaswag", "lambada", "triviaqa", "webqs", "winogrande", "piqa", "arc_challenge", "arc_easy", "anli_r1",
    "anli_r2", "anli_r3", "openbookqa", "race", "boolq", "copa", "rte", "wsc", "multirc", "record", "wikitext")
AVG_TASKS: tuple[str, ...] = TASK_ORDER[:19]  # upstream's avg_range: indices 0..18; wikitext (19) not averaged
ACC_NORM_TASKS = frozenset({"hellaswag", "piqa", "arc_challenge", "arc_easy", "openbookqa", "logiqa", "mathqa",
                            "prost", "sciq", "corpus_choice"})
F1_TASKS = frozenset({"record", "mc_taco"})
PERPLEXITY_TASKS = frozenset({"wikitext", "corpus_perplexity"})
UNSCALED_METRICS = frozenset({"word_perplexity", "byte_perplexity", "bits_per_byte", "perplexity"})
# Row name -> the result names that hold it, first found wins (lm-eval 0.4 name first).
RESULT_NAMES: dict[str, tuple[str, ...]] = {"lambada": ("lambada_openai", "lambada")}
SUMMARY_MARKER = "ds_evalharness_gather_result"
_SHOT_SUFFIX = re.compile(r"_(\d+)shot\.json$")


class GatherError(Exception):
    """No usable results: the one error line the CLI prints."""


class _Malformed(Exception):
    """A results file that cannot be used (the message says why)."""


def metric_preference(task: str) -> tuple[str, ...]:
    """The metrics to report for a task, in order of preference (the first one present is used)."""
    if task in PERPLEXITY_TASKS:
        return ("word_perplexity",)
    if task in F1_TASKS:
        return ("f1",)
    if task in ACC_NORM_TASKS:
        return ("acc_norm", "acc")
    return ("acc", "exact_match", "em", "f1")


def scaled(metric: str, value: float) -> float:
    return value if metric in UNSCALED_METRICS else 100.0 * value


@dataclass
class Score:
    task: str          # the row name (lambada for lambada_openai)
    metric: str
    value: float       # as reported (x100 for accuracies)
    stderr: float | None
    path: str
    mtime: float


@dataclass
class Column:
    run_dir: str
    shots: int
    label: str = ""
    scores: dict[str, Score] = field(default_factory=dict)

    @property
    def present(self) -> list[str]:
        return [t for t in AVG_TASKS if t in self.scores]

    @property
    def missing(self) -> list[str]:
        return [t for t in AVG_TASKS if t not in self.scores]

    @property
    def average(self) -> float | None:
        values = [self.scores[t].value for t in self.present]
        return sum(values) / len(values) if values else None


@dataclass
class Summary:
    columns: list[Column]
    skipped: list[tuple[str, str]]    # (path, reason)
    others: list[str]                 # tasks outside the 20 suite rows, sorted

    def as_json(self) -> dict[str, Any]:
        return {
            "gather": SUMMARY_MARKER, "scale": "x100 except perplexities", "avg_tasks": list(AVG_TASKS),
            "columns": [{
                "run_dir": c.run_dir, "label": c.label, "num_fewshot": c.shots, "average": c.average,
                "num_averaged": len(c.present), "missing": c.missing,
                "scores": {t: {"metric": s.metric, "value": s.value, "stderr": s.stderr, "file": s.path}
                           for t, s in c.scores.items()},
            } for c in self.columns],
            "skipped": [{"path": p, "reason": r} for p, r in self.skipped],
        }


# ------------------------------------------------------------------------------------------------------------
# Reading
# ------------------------------------------------------------------------------------------------------------
def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _metric_value(entry: dict[str, Any], metric: str) -> tuple[float, float | None] | None:
    """(value, stderr) of a metric in one task's results entry: lm-eval 0.4's "metric,filter" keys (filter
    "none" first, then the others in sorted order) or the older harness's plain "metric" key."""
    keys = []
    if f"{metric},none" in entry:
        keys.append((f"{metric},none", f"{metric}_stderr,none"))
    for key in sorted(entry):
        name, _, flt = key.partition(",")
        if name == metric and flt and flt != "none":
            keys.append((key, f"{metric}_stderr,{flt}"))
    if metric in entry:
        keys.append((metric, f"{metric}_stderr"))
    for key, stderr_key in keys:
        value = _finite(entry[key])
        if value is not None:
            return value, _finite(entry.get(stderr_key))
    return None


def _shots(data: dict[str, Any], task: str, path: str) -> int:
    n_shot = data.get("n-shot")
    if isinstance(n_shot, dict) and isinstance(n_shot.get(task), int) and not isinstance(n_shot.get(task), bool):
        return n_shot[task]
    config = data.get("config")
    if isinstance(config, dict) and isinstance(config.get("num_fewshot"), int):
        return config["num_fewshot"]
    m = _SHOT_SUFFIX.search(os.path.basename(path))
    return int(m.group(1)) if m else 0


def read_results(path: str) -> list[tuple[str, int, Score]] | None:
    """(row name, shots, score) of every task in one results file; None for a gather summary file;
    _Malformed when the file cannot be used."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        mtime = os.path.getmtime(path)
    except json.JSONDecodeError as e:
        raise _Malformed(f"invalid JSON (line {e.lineno} column {e.colno}: {e.msg})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise _Malformed(f"cannot read ({getattr(e, 'strerror', None) or e})") from None
    if isinstance(data, dict) and data.get("gather") == SUMMARY_MARKER:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("results"), dict):
        raise _Malformed('not an lm-eval results file (no "results" object)')
    aliases = {name: row for row, names in RESULT_NAMES.items() for name in names}
    out: list[tuple[str, int, Score]] = []
    for task, entry in data["results"].items():
        if not isinstance(entry, dict):
            continue
        row = aliases.get(task, task)
        for metric in metric_preference(row):
            found = _metric_value(entry, metric)
            if found is not None:
                value, stderr = found
                score = Score(row, metric, scaled(metric, value), None if stderr is None else scaled(metric, stderr),
                              path, mtime)
                out.append((row, _shots(data, task, path), score))
                break
    if not out:
        raise _Malformed("no task with a usable metric in \"results\"")
    # lambada_openai wins over lambada when a file has both
    seen: dict[tuple[str, int], Score] = {}
    for row, shots, score in out:
        if (row, shots) not in seen:
            seen[(row, shots)] = score
    return [(row, shots, score) for (row, shots), score in seen.items()]


def find_files(paths: Sequence[str]) -> list[str]:
    """The results files named by the arguments (directories searched recursively for *.json), sorted."""
    found: list[str] = []
    for p in paths:
        if os.path.isdir(p):
            for root, dirs, files in os.walk(p):
                dirs.sort()
                found += [os.path.join(root, f) for f in sorted(files) if f.endswith(".json")]
        elif os.path.isfile(p):
            found.append(p)
        else:
            raise GatherError(f"{p}: no such file or directory")
    return sorted(dict.fromkeys(os.path.abspath(f) for f in found))


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def gather(paths: Sequence[str], num_fewshot: int | None = None) -> Summary:
    """Read every results file under paths into columns (run directory x shots); GatherError without results."""
    columns: dict[tuple[str, int], Column] = {}
    skipped: list[tuple[str, str]] = []
    for path in find_files(paths):
        try:
            rows = read_results(path)
        except _Malformed as e:
            skipped.append((path, str(e)))
            warn(f"{path}: {e}; skipped")
            continue
        if rows is None:
            continue
        run_dir = os.path.dirname(path)
        for row, shots, score in rows:
            if num_fewshot is not None and shots != num_fewshot:
                continue
            column = columns.setdefault((run_dir, shots), Column(run_dir, shots))
            old = column.scores.get(row)
            if old is not None:
                keep, drop = (score, old) if (score.mtime, score.path) >= (old.mtime, old.path) else (old, score)
                warn(f"{row} ({shots}-shot) is in both {drop.path} and {keep.path}; using the newer {keep.path}")
                score = keep
            column.scores[row] = score
    if not columns:
        shots = f"{num_fewshot}-shot " if num_fewshot is not None else ""
        raise GatherError(f"no usable {shots}lm-eval results in {', '.join(paths)}")
    ordered = sorted(columns.values(), key=lambda c: (c.run_dir, c.shots))
    run_dirs = sorted({c.run_dir for c in ordered})
    # labels: the run directories relative to their common folder ({ckpt_parent}/{ckpt} for a single one)
    common = os.path.commonpath(run_dirs) if len(run_dirs) > 1 else os.path.dirname(os.path.dirname(run_dirs[0]))
    for c in ordered:
        name = os.path.relpath(c.run_dir, common)
        c.label = f"{name if name != '.' else os.path.basename(c.run_dir)} {c.shots}-shot"
    others = sorted({t for c in ordered for t in c.scores} - set(TASK_ORDER))
    return Summary(ordered, skipped, others)


# ------------------------------------------------------------------------------------------------------------
# Reporting
# ------------------------------------------------------------------------------------------------------------
def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _row(task: str, columns: list[Column]) -> str:
    metrics = list(dict.fromkeys(c.scores[task].metric for c in columns if task in c.scores))
    cells = [_fmt(c.scores[task].value if task in c.scores else None) for c in columns]
    return f"| {task} | {'/'.join(metrics) or '-'} | " + " | ".join(cells) + " |"


def markdown(summary: Summary) -> str:
    cols = summary.columns
    header = "| task | metric | " + " | ".join(c.label for c in cols) + " |"
    rule = "|---|---|" + "---|" * len(cols)
    suite = any(t in c.scores for c in cols for t in TASK_ORDER)
    lines = []
    if suite:
        lines += ["lm-eval results (x100; perplexities as they are). Avg = mean of the 19 tasks above it.", "",
                  header, rule]
        lines += [_row(t, cols) for t in AVG_TASKS]
        lines.append("| **Avg (19 tasks)** | | " + " | ".join(_fmt(c.average) for c in cols) + " |")
        lines.append(_row("wikitext", cols))
    if summary.others:
        title = "Other tasks (not in the average):" if suite else \
            "lm-eval results (x100; perplexities as they are); none of the 19-task suite:"
        lines += (["", title] if suite else [title]) + ["", header, rule]
        lines += [_row(t, cols) for t in summary.others]
    notes = []
    for c in cols:
        if not c.present:
            notes.append(f"- {c.label}: none of the 19 tasks; no average.")
        elif c.missing:
            notes.append(f"- {c.label}: Avg over {len(c.present)} of the 19 tasks; missing: {', '.join(c.missing)}.")
    if notes:
        lines += ["", "Missing tasks:", ""] + notes
    if summary.skipped:
        lines += ["", f"Skipped {len(summary.skipped)} file(s): "
                  + "; ".join(f"{p} ({why})" for p, why in summary.skipped)]
    return "\n".join(lines) + "\n"


def _write(path: str, text: str) -> None:
    """Write text to path atomically (temp file in the same directory, then rename)."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="+", metavar="RESULTS",
                   help="results JSON files or directories (searched recursively for *.json)")
    p.add_argument("--num_fewshot", "--num-fewshot", dest="num_fewshot", type=int, default=None, metavar="K",
                   help="only results with K few-shot examples (default: every shot count, one column each)")
    p.add_argument("--output", metavar="FILE", help="also write the markdown table to FILE")
    p.add_argument("--json", metavar="FILE", help="also write a JSON summary to FILE")
    return p


def main(argv: Iterable[str] | None = None) -> int:
    """Run the CLI; returns the exit status (errors are one `error:` line on stderr)."""
    prog = os.path.basename(sys.argv[0] or __file__) if argv is None else "ds_evalharness_gather_result.py"
    parser = build_parser()
    parser.prog = prog

    def one_line_error(message: str) -> None:
        print(f"error: {prog}: {message}", file=sys.stderr)
        raise SystemExit(2)

    parser.error = one_line_error  # type: ignore[method-assign]
    args = parser.parse_args(list(argv) if argv is not None else None)
    if args.output and args.json and os.path.abspath(args.output) == os.path.abspath(args.json):
        one_line_error("--json and --output name the same file")
    try:
        summary = gather(args.paths, args.num_fewshot)
    except GatherError as e:
        print(f"error: {prog}: {e}", file=sys.stderr)
        return 1
    text = markdown(summary)
    sys.stdout.write(text)
    try:
        if args.output:
            _write(args.output, text)
        if args.json:
            _write(args.json, json.dumps(summary.as_json(), indent=2) + "\n")
    except OSError as e:
        print(f"error: {prog}: cannot write {e.filename}: {e.strerror}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
