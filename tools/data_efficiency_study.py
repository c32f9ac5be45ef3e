"""The data-efficiency study: baseline vs curriculum vs random-LTD vs both at several token budgets, one report.

    python tools/data_efficiency_study.py [--study-dir runs/data_efficiency_study] [--cases NAME ...] [--tiny]
        [--set KEY=VALUE ...] [--lr-sweep LR[,LR...]] [--deb PKG ...] [--report-dir docs] [--report-only]

Prepares the data once (corpus from Debian documentation packages, a BPE vocabulary trained on the training
split, token files, vocab-rarity analysis, offline lm-eval tasks), then for each case trains with
pretrain_gpt.py, evaluates the final checkpoint on the whole held-out split with tools/eval_gpt.py and runs the
offline zero-shot tasks; finally writes the report (markdown, JSON, PNG plots).  Resumable: a rerun skips what
is finished and resumes a killed training run from its last checkpoint.  ``--tiny`` is a seconds-long
configuration on 1 MB of the bundled corpus (for tests); its report goes to the study directory.
``--set KEY=VALUE`` overrides a field of ``megatron.study.plan.StudyConfig`` (e.g. ``--set budget_tokens=2000000``).
``--lr-sweep 0.0015,0.003`` first runs ``lrsweep_<lr>`` cases: the 100 % baseline at ``sweep_budget_fraction``
(0.5) of the budget with that peak LR, reported in the section "Choice of the peak LR" only (it may be added to
an existing study directory).
Bad input: one ``error:`` line, exit status 2.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time

_STARTED = time.time()  # the study's wall-clock counts from here (data preparation and downloads included)

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), os.path.pardir)))  # run from a checkout

from megatron.study.plan import (TINY, StudyConfig, StudyError, all_cases, parse_lr_sweep, select_cases,  # noqa: E402
                                 sweep_case)
from megatron.study.prepare import DEFAULT_DEBS  # noqa: E402
from megatron.study.runner import ROOT, Interrupted, Study, log  # noqa: E402

TINY_CORPUS = "data/corpus/python_docs.jsonl.gz"


class _SourceAction(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None):  # noqa: ANN001 - argparse's signature
        namespace.sources.append((self.dest, values))


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.set_defaults(sources=[])
    ap.add_argument("--study-dir", default=os.environ.get("STUDY_DIR"),
                    help="where data, runs and state go (default: $STUDY_DIR, else runs/data_efficiency_study, "
                         "runs/data_efficiency_study_tiny with --tiny)")
    ap.add_argument("--cases", nargs="+", default=None, metavar="NAME",
                    help="run only these cases (default: all): " + " ".join(c.name for c in all_cases(StudyConfig())))
    ap.add_argument("--tiny", action="store_true", help="seconds-long configuration on 1 MB of the bundled corpus")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a StudyConfig field")
    ap.add_argument("--lr-sweep", default=None, metavar="LR[,LR...]",
                    help="before the cases, run the 100%% baseline at sweep_budget_fraction of the budget with each "
                         "of these peak LRs (cases lrsweep_<lr>; default: no sweep)")
    ap.add_argument("--deb", action=_SourceAction, metavar="PKG",
                    help=f"Debian documentation package for the corpus (repeatable; default {' '.join(DEFAULT_DEBS)})")
    ap.add_argument("--src", action=_SourceAction, metavar="DIR", help="reST directory for the corpus (repeatable)")
    ap.add_argument("--jsonl", action=_SourceAction, metavar="FILE", help="jsonl corpus to include (repeatable)")
    ap.add_argument("--deb-cache", default=None, help="download cache for --deb (default: STUDY_DIR/debs)")
    ap.add_argument("--max-mb", type=float, default=None, help="corpus size limit in MB of text")
    ap.add_argument("--report-dir", default=None,
                    help="where the report goes (default: docs/, or STUDY_DIR/report with --tiny)")
    ap.add_argument("--report-only", action="store_true", help="only write the report from the finished runs")
    return ap


def apply_overrides(config: StudyConfig, items: list[str]) -> StudyConfig:
    """``KEY=VALUE`` overrides, converted to the field's type; StudyError names a bad one."""
    fields = {f.name: f for f in dataclasses.fields(StudyConfig)}
    changes = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in fields:
            raise StudyError(f"--set {item!r}: expected KEY=VALUE with KEY one of {', '.join(fields)}")
        current = getattr(config, key)
        try:
            if isinstance(current, bool):
                if value.lower() not in ("true", "false", "1", "0"):
                    raise ValueError(value)
                changes[key] = value.lower() in ("true", "1")
            elif isinstance(current, tuple):
                changes[key] = tuple(int(v) for v in value.split(",") if v)
            else:
                changes[key] = type(current)(float(value)) if isinstance(current, int) else type(current)(value)
        except ValueError:
            raise StudyError(f"--set {item!r}: expected a {type(current).__name__} value") from None
    return dataclasses.replace(config, **changes)


def main(argv: list[str] | None = None) -> int:
    """CLI entry: 0 when done, 2 with one ``error:`` line on bad input or a failed stage, 130 when interrupted."""
    args = build_parser().parse_args(argv)
    try:
        config = apply_overrides(TINY if args.tiny else StudyConfig(), args.set)
        sweep = [sweep_case(config, lr) for lr in parse_lr_sweep(args.lr_sweep)]
        cases = sweep + select_cases(config, args.cases)
        sources = args.sources or ([("jsonl", os.path.join(ROOT, TINY_CORPUS))] if args.tiny
                                   else [("deb", d) for d in DEFAULT_DEBS])
        max_mb = args.max_mb if args.max_mb is not None else (1.0 if args.tiny else None)
        study_dir = os.path.abspath(args.study_dir or os.path.join(
            ROOT, "runs", "data_efficiency_study_tiny" if args.tiny else "data_efficiency_study"))
        report_dir = args.report_dir or (os.path.join(study_dir, "report") if args.tiny else os.path.join(ROOT, "docs"))
        study = Study(study_dir, config, started=_STARTED)
        study.check_identity()
        study.prepare(sources=sources, deb_cache=args.deb_cache or os.path.join(study_dir, "debs"), max_mb=max_mb)
        if not args.report_only:
            study.record_time()
            study.run(cases)
        from megatron.study.report import write_report

        known = {c.name for c in sweep}
        sweep += [c for c in study.sweep_cases_on_disk() if c.name not in known]
        paths = write_report(study, sorted(sweep, key=lambda c: c.lr) + all_cases(config), report_dir)
    except StudyError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Interrupted as e:
        log(f"interrupted ({e}); rerun the same command to continue")
        return 130
    log("report: " + ", ".join(paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
