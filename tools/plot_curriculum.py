"""Draw curriculum-learning data and schedules to one PNG: metric histograms and difficulty/seqlen schedules.

    python tools/plot_curriculum.py --analysis-dir output/analysis --deepspeed-config ds_config.json \\
        --output curriculum.png [--metrics vocab_rarity total_vocab_freq] [--steps 120000]

* ``--analysis-dir``: the analyzer's ``--save`` directory. For each metric (``--metrics``, default: every
  metric found there) it reads the reduce outputs ``{dir}/{m}/{m}_index_to_metric`` + ``{m}_index_to_sample``
  (or ``{m}_sample_to_metric``) and draws how many samples have each value; for an accumulated metric
  (``{m}_metric_value``, e.g. total_vocab_freq) it draws the token frequencies by rank (log-log).
* ``--deepspeed-config``: a DeepSpeed JSON. Every enabled schedule is computed step by step with the project's
  own schedulers (so the picture is what training will do): each ``curriculum_metrics`` difficulty
  (``CurriculumScheduler`` at curriculum step 1, 2, ...; a ``seqlen_truncate``/``seqlen_reshape`` metric is the
  curriculum seqlen), the legacy ``curriculum_learning`` seqlen, the random-LTD reserved length
  (``RandomLTDScheduler`` on completed optimizer steps) and, with random-LTD, the effective ("actual") seqlen
  of spec §3.6. ``custom`` schedules are set in code and cannot be drawn.
* ``--steps``: x range; default 1.1 x the longest schedule.

Bad input gives one ``error: ...`` line on stderr and exit status 2.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import tempfile
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), os.path.pardir)))  # run from a checkout

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import numpy as np  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from tqdm import tqdm  # noqa: E402

from megatron.data.indexed_dataset import data_file_path, index_file_path  # noqa: E402
from megatron.data_efficiency.analyzer_io import metric_output_prefix, read_index_file, read_index_rows  # noqa: E402
from megatron.data_efficiency.config import SEQLEN_METRICS, parse_deepspeed_config  # noqa: E402
from megatron.data_efficiency.random_ltd_schedule import RandomLTDScheduler, ltd_actual_seq_length  # noqa: E402
from megatron.data_efficiency.scheduler import CurriculumScheduler  # noqa: E402

logger = logging.getLogger("plot_curriculum")

Series = tuple[np.ndarray, np.ndarray]
"""(training steps 1..N, values): the value used for the k-th global batch."""

SINGLE, ACCUMULATE = "single_value", "accumulate"
DEFAULT_STEPS = 1000
_PROGRESS_FROM = 100_000  # steps per series from which a progress bar is shown


class PlotError(ValueError):
    """Missing/corrupt input files or keys; the message names the file or key and what was expected."""


@dataclass(frozen=True)
class MetricDistribution:
    """One analyzed metric: distinct values and how many samples (or tokens) have each."""

    name: str
    """The metric directory name, e.g. ``vocab_rarity``."""
    kind: str
    """``single_value`` (one value per sample) or ``accumulate`` (a summed vector, e.g. token frequencies)."""
    values: np.ndarray
    """single_value: distinct metric values, ascending. accumulate: vector positions (e.g. token ids)."""
    counts: np.ndarray
    """single_value: samples per value. accumulate: the summed vector."""


# ----------------------------------------------------------------------------------------------------------------
# Analyzer outputs
# ----------------------------------------------------------------------------------------------------------------
def _exists(prefix: str) -> bool:
    return os.path.isfile(index_file_path(prefix)) and os.path.isfile(data_file_path(prefix))


def discover_metrics(analysis_dir: str) -> list[str]:
    """Metric names with reduce outputs under ``analysis_dir`` (sorted)."""
    if not os.path.isdir(analysis_dir):
        raise PlotError(f"--analysis-dir {analysis_dir}: directory not found (give the analyzer's --save directory)")
    found = []
    for name in sorted(os.listdir(analysis_dir)):
        kinds = ("index_to_metric", "sample_to_metric", "metric_value")
        if any(_exists(metric_output_prefix(analysis_dir, name, kind)) for kind in kinds):
            found.append(name)
    if not found:
        raise PlotError(f"--analysis-dir {analysis_dir}: no analyzer reduce output found (expected "
                        f"{{dir}}/{{metric}}/{{metric}}_index_to_metric.idx or _metric_value.idx; run the reduce "
                        f"stage first)")
    return found


def load_metric_distribution(analysis_dir: str, metric: str) -> MetricDistribution:
    """Read one metric's reduce outputs (MMIDIDX, DeepSpeed dtype table) into a distribution."""
    index_to_metric = metric_output_prefix(analysis_dir, metric, "index_to_metric")
    index_to_sample = metric_output_prefix(analysis_dir, metric, "index_to_sample")
    sample_to_metric = metric_output_prefix(analysis_dir, metric, "sample_to_metric")
    metric_value = metric_output_prefix(analysis_dir, metric, "metric_value")
    if _exists(index_to_metric) and _exists(index_to_sample):
        values, _ = read_index_rows(index_to_metric)
        counts = np.asarray(read_index_file(index_to_sample).sizes, dtype=np.int64)
        if len(values) != len(counts):
            raise PlotError(f"{index_to_metric}: {len(values)} values but {index_to_sample} has {len(counts)} rows; "
                            f"the two files come from different reduce runs")
        return MetricDistribution(metric, SINGLE, np.asarray(values, dtype=np.int64), counts)
    if _exists(sample_to_metric):
        data, _ = read_index_rows(sample_to_metric)
        values, counts = np.unique(np.asarray(data, dtype=np.int64), return_counts=True)
        return MetricDistribution(metric, SINGLE, values, counts.astype(np.int64))
    if _exists(metric_value):
        data, _ = read_index_rows(metric_value)
        vector = np.asarray(data, dtype=np.int64)
        return MetricDistribution(metric, ACCUMULATE, np.arange(len(vector)), vector)
    raise PlotError(f"--metrics {metric}: no analyzer output in {os.path.join(analysis_dir, metric)} (expected "
                    f"{metric}_index_to_metric + {metric}_index_to_sample, {metric}_sample_to_metric, or "
                    f"{metric}_metric_value .bin/.idx)")


# ----------------------------------------------------------------------------------------------------------------
# Schedules
# ----------------------------------------------------------------------------------------------------------------
def load_deepspeed_json(path: str) -> dict[str, Any]:
    """Read a DeepSpeed JSON file; errors name the file (and line for invalid JSON)."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise PlotError(f"--deepspeed-config {path}: file not found") from None
    except json.JSONDecodeError as e:
        raise PlotError(f"--deepspeed-config {path}: line {e.lineno} column {e.colno}: invalid JSON ({e.msg})"
                        ) from None
    except OSError as e:
        raise PlotError(f"--deepspeed-config {path}: cannot read ({e.strerror})") from None
    if not isinstance(data, dict):
        raise PlotError(f"--deepspeed-config {path}: expected a JSON object at the top level")
    return data


def default_steps(ds_config: Mapping[str, Any], source: str | None = None) -> int:
    """1.1 x the longest enabled schedule (curriculum total/last discrete step, random-LTD require_steps)."""
    settings = parse_deepspeed_config(ds_config, source, check_index_files=False)  # schedules only
    lengths = []
    cl = settings.data_efficiency.data_sampling.curriculum_learning
    schedules = [m.schedule for m in cl.metrics] if cl.enabled else []
    if settings.legacy_curriculum.enabled and settings.legacy_curriculum.schedule is not None:
        schedules.append(settings.legacy_curriculum.schedule)
    for s in schedules:
        if s.total_curriculum_step:
            lengths.append(s.total_curriculum_step)
        if s.max_step:
            lengths.append(s.max_step[-1] + 1)
    ltd = settings.data_efficiency.data_routing.random_ltd
    if ltd.enabled and ltd.schedule is not None:
        lengths.append(ltd.schedule.require_steps)
    return -(-11 * max(lengths) // 10) if lengths else DEFAULT_STEPS  # ceil(1.1 x), in integers


def _run(label: str, steps: int, fn: Any) -> np.ndarray:
    out = np.empty(steps, dtype=np.int64)
    for k in tqdm(range(steps), desc=label, unit="step", disable=steps < _PROGRESS_FROM, leave=False):
        out[k] = fn(k + 1)
    return out


def schedule_series(ds_config: Mapping[str, Any], steps: int, *, source: str | None = None) -> dict[str, Series]:
    """Every enabled schedule of the JSON over training steps 1..steps, computed with the project's schedulers.

    Keys: ``"{metric} difficulty ({type})"`` or ``"curriculum seqlen ({metric})"`` per curriculum metric,
    ``"curriculum seqlen (legacy)"``, ``"random-LTD reserved length"`` and ``"actual seqlen"`` (spec §3.6).
    Step k is the k-th global batch: curriculum step k, and k - 1 completed optimizer steps for random-LTD.
    """
    if steps < 1:
        raise PlotError(f"--steps must be >= 1, got {steps}")
    settings = parse_deepspeed_config(ds_config, source, check_index_files=False)  # schedules only
    x = np.arange(1, steps + 1, dtype=np.int64)
    series: dict[str, Series] = {}
    seqlen: np.ndarray | None = None
    cl = settings.data_efficiency.data_sampling.curriculum_learning
    for m in cl.metrics if cl.enabled else ():
        if m.schedule.schedule_type == "custom":
            logger.warning("curriculum metric %s: schedule_type custom is set in code; not drawn", m.name)
            continue
        scheduler = CurriculumScheduler(m.schedule, m.name)
        label = f"curriculum seqlen ({m.name})" if m.name in SEQLEN_METRICS else \
            f"{m.name} difficulty ({m.difficulty_type})"
        values = _run(label, steps, scheduler.update_difficulty)
        series[label] = (x, values)
        if m.name in SEQLEN_METRICS:
            seqlen = values
    legacy = settings.legacy_curriculum
    if legacy.enabled and legacy.schedule is not None:
        scheduler = CurriculumScheduler(legacy.schedule, "seqlen")
        seqlen = _run("legacy seqlen", steps, scheduler.update_difficulty)
        series["curriculum seqlen (legacy)"] = (x, seqlen)
    ltd = settings.data_efficiency.data_routing.random_ltd
    if ltd.enabled and ltd.schedule is not None:
        ltd_scheduler = RandomLTDScheduler(ltd.schedule, num_layers=ltd.num_layers, num_ltd_layers=ltd.num_ltd_layers)
        reserved = _run("random-LTD", steps, lambda k: ltd_scheduler.update(k - 1))
        series["random-LTD reserved length"] = (x, reserved)
        full = seqlen if seqlen is not None else np.full(steps, ltd.schedule.max_value, dtype=np.int64)
        actual = np.array([ltd_actual_seq_length(int(s), int(r), ltd.num_layers, ltd.num_ltd_layers)
                           for s, r in zip(full, reserved)], dtype=np.int64)
        series["actual seqlen"] = (x, actual)
    return series


# ----------------------------------------------------------------------------------------------------------------
# Drawing
# ----------------------------------------------------------------------------------------------------------------
def _draw_distribution(ax: Any, dist: MetricDistribution) -> None:
    if dist.kind == ACCUMULATE:
        freq = np.sort(dist.counts[dist.counts > 0])[::-1]
        ax.loglog(np.arange(1, len(freq) + 1), freq, color="tab:purple")
        ax.set_title(f"{dist.name}: {int(dist.counts.sum()):,} tokens, {len(freq):,} distinct ids")
        ax.set_xlabel("rank")
        ax.set_ylabel("frequency")
        return
    bins = int(min(50, max(1, len(dist.values))))
    ax.hist(dist.values, bins=bins, weights=dist.counts, color="tab:blue")
    ax.set_title(f"{dist.name}: {int(dist.counts.sum()):,} samples, {len(dist.values):,} distinct values")
    ax.set_xlabel("metric value")
    ax.set_ylabel("samples")


def build_figure(distributions: Sequence[MetricDistribution], series: Mapping[str, Series]) -> Figure:
    """One panel per distribution (histogram) and per schedule (value over training steps)."""
    panels = len(distributions) + len(series)
    if panels == 0:
        raise PlotError("nothing to draw: give --analysis-dir with analyzer outputs and/or --deepspeed-config with "
                        "an enabled curriculum_learning / random_ltd schedule")
    cols = 1 if panels == 1 else 2
    rows = math.ceil(panels / cols)
    fig = Figure(figsize=(6.5 * cols, 3.6 * rows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(rows, cols, i + 1) for i in range(panels)]
    for ax, dist in zip(axes, distributions):
        _draw_distribution(ax, dist)
    for ax, (label, (x, y)) in zip(axes[len(distributions):], series.items()):
        ax.step(x, y, where="post", color="tab:orange" if "random-LTD" in label else "tab:green", label=label)
        ax.set_title(f"{label}: {int(y[0])} -> {int(y[-1])}")
        ax.set_xlabel("training step (global batch)")
        ax.set_ylabel(label.split(" (")[0])
        ax.grid(alpha=0.3)
    return fig


def save_png(fig: Figure, path: str) -> None:
    """Write ``fig`` as PNG atomically (temporary file in the same directory, then rename)."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            fig.savefig(f, format="png", dpi=100)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def plot_curriculum(output: str, *, analysis_dir: str | None = None, metrics: Sequence[str] | None = None,
                    deepspeed_config: str | None = None, steps: int | None = None) -> dict[str, Series]:
    """Read the inputs, draw the PNG at ``output``; returns the schedule series that were drawn."""
    if not output.lower().endswith(".png"):
        raise PlotError(f"--output {output}: expected a .png file name")
    if analysis_dir is None and deepspeed_config is None:
        raise PlotError("give --analysis-dir and/or --deepspeed-config")
    if metrics and analysis_dir is None:
        raise PlotError("--metrics needs --analysis-dir (the analyzer's --save directory)")
    distributions = []
    if analysis_dir is not None:
        if not os.path.isdir(analysis_dir):
            raise PlotError(f"--analysis-dir {analysis_dir}: directory not found (give the analyzer's --save "
                            "directory)")
        names = list(metrics) if metrics else discover_metrics(analysis_dir)
        distributions = [load_metric_distribution(analysis_dir, name) for name in names]
    series: dict[str, Series] = {}
    if deepspeed_config is not None:
        ds_json = load_deepspeed_json(deepspeed_config)
        n = steps if steps is not None else default_steps(ds_json, deepspeed_config)
        series = schedule_series(ds_json, n, source=deepspeed_config)
        if not series:
            logger.warning("%s: no enabled curriculum_learning / random_ltd schedule to draw", deepspeed_config)
    save_png(build_figure(distributions, series), output)
    return series


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point: 0 on success, 2 with one ``error:`` line for bad input."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--analysis-dir", default=None, help="the analyzer's --save directory")
    p.add_argument("--metrics", nargs="+", default=None, help="metrics to draw (default: all found)")
    p.add_argument("--deepspeed-config", default=None, help="DeepSpeed JSON with data_efficiency / "
                                                            "curriculum_learning blocks")
    p.add_argument("--steps", type=int, default=None, help="training steps to draw (default 1.1 x the longest "
                                                           "schedule)")
    p.add_argument("--output", required=True, help="PNG file to write")
    args = p.parse_args(argv)
    try:
        series = plot_curriculum(args.output, analysis_dir=args.analysis_dir, metrics=args.metrics,
                                 deepspeed_config=args.deepspeed_config, steps=args.steps)
    except (ValueError, OSError) as e:  # PlotError, DataEfficiencyConfigError, AnalyzerError, ...
        sys.stderr.write(f"error: {e}\n")
        return 2
    for label, (_, y) in series.items():
        logger.info("%s: %d at step 1, %d at the last step", label, int(y[0]), int(y[-1]))
    logger.info("wrote %s", args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
