"""Curriculum-learning data analyzer: map/reduce over a dataset into DeepSpeed's difficulty index files.

Map (per worker ``w`` and thread ``t``; the data range is split like DeepSpeed's ``split_index``):
every metric is evaluated over batches of samples; a thread writes, per metric, one ``.npy`` of
values and one of sample ids (single-value metrics) or one summed vector (accumulate metrics),
then a completion marker (see :mod:`megatron.data_efficiency.analyzer_io`). Re-running one thread
(``specific_threads``) rewrites only its files. Megatron GPT datasets take the fast token-stream
path (:class:`~megatron.data_efficiency.analyzer_sources.GPTStreamSource`); its map threads run as
Python threads (numpy releases the GIL in its loops, and nothing is forked or copied), at most one
per CPU core. Other datasets (per-sample ``__getitem__``, Python-bound) run their threads as forked
processes, like DeepSpeed.

Reduce (once, after every map thread finished): checks every marker, scatters the values into
sample-id order and writes, per single-value metric ``m`` (spec §2.6):

* ``{m}_sample_to_metric``: N items of one element, item ``i`` = metric of sample ``i``;
* ``{m}_index_to_metric``: V items, item ``j`` = ``[j-th smallest distinct value]`` (strictly increasing);
* ``{m}_index_to_sample``: V items, item ``j`` = ids of the samples whose value is that value,
  **in ascending id order** (DeepSpeed leaves them in CSV order; we sort them so the files do not
  depend on the number of workers/threads);
* ``{m}_index_to_sample_percentile_merged``: rows of index_to_sample concatenated in groups of
  ``max(1, V // 100)``;

and ``{m}_metric_value`` (one item, the summed vector) per accumulate metric. Value dtypes come from
``find_fit_int_dtype(min, max)``, sample ids from ``find_fit_int_dtype(0, N - 1)``; doc_idx is ``[0, N]``.

No shared filesystem is needed: the reduce stage reads only ``{save}/{m}/worker*_thread*/`` (three
small files per metric and thread), so workers can copy those directories to the reducing machine.
Each marker records the work split, the sample-order fingerprint and the CRC of the inputs a metric
read (e.g. total_vocab_freq for vocab_rarity); reduce refuses outputs that do not match.
"""
from __future__ import annotations

import logging
import multiprocessing as mp
import multiprocessing.connection as mp_connection
import os
import threading
import zlib
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Sequence

import numpy as np
from tqdm import tqdm

from megatron.data.indexed_dataset import data_file_path, find_fit_int_dtype, index_file_path, remove_stale_temp_files
from megatron.data_efficiency.analyzer_io import (
    MAP_FORMAT_VERSION,
    AnalyzerError,
    load_npy,
    map_output_paths,
    metric_output_prefix,
    read_marker,
    save_npy_atomic,
    split_index,
    thread_range,
    write_index_file,
    write_json_atomic,
)
from megatron.data_efficiency.analyzer_sources import GPTStreamSource, SampleSource, make_source
from megatron.data_efficiency.metrics import (
    ACCUMULATE,
    SINGLE_VALUE,
    Metric,
    MetricBatch,
    MetricContext,
    get_metric,
)

logger = logging.getLogger(__name__)

_PARALLEL_SORT_MIN = 1 << 20  # below this many samples one argsort beats splitting across reduce threads


def resolve_metrics(metrics: Sequence[str | Metric]) -> list[Metric]:
    """Registry lookup for names (Metric objects pass through); duplicates are an error."""
    resolved = [m if isinstance(m, Metric) else get_metric(m) for m in metrics]
    names = [m.name for m in resolved]
    if not names:
        raise AnalyzerError("no metric given (--analyzing-metric)")
    if len(set(names)) != len(names):
        raise AnalyzerError(f"--analyzing-metric lists a metric twice: {names}")
    return resolved


def _check_counts(num_workers: int, worker_id: int | None, num_threads: int) -> None:
    if num_workers < 1:
        raise AnalyzerError(f"--analyzing-num-workers must be >= 1, got {num_workers}")
    if num_threads < 1:
        raise AnalyzerError(f"--analyzing-num-threads must be >= 1, got {num_threads}")
    if worker_id is not None and not 0 <= worker_id < num_workers:
        raise AnalyzerError(f"--analyzing-worker-id must be in [0, {num_workers - 1}], got {worker_id}")


def _requirement_fingerprints(save_path: str, metric: Metric) -> dict[str, str]:
    """CRC of each reduced file ``metric`` reads, so reduce can tell if it changed between map threads."""
    out = {}
    for name in metric.requires:
        kind = "metric_value" if get_metric(name).metric_type == ACCUMULATE else "sample_to_metric"
        prefix = metric_output_prefix(save_path, name, kind)
        if not (os.path.isfile(prefix + ".bin") and os.path.isfile(prefix + ".idx")):
            raise AnalyzerError(f"metric {metric.name} needs {prefix}.bin/.idx: run the map and reduce stages for "
                                f"{name} (same --save) first")
        with open(prefix + ".bin", "rb") as f:
            out[name] = f"{zlib.crc32(f.read()):08x}"
    return out


def _checked_values(metric: Metric, out: Any, batch_size: int) -> np.ndarray:
    """Metric output as int64, with one clear error for a wrong shape or a non-integer dtype."""
    if type(out).__module__.startswith("torch"):
        out = out.detach().cpu().numpy()
    arr = np.asarray(out)
    if metric.metric_type == SINGLE_VALUE and arr.shape != (batch_size,):
        raise AnalyzerError(f"metric {metric.name} returned shape {arr.shape} for a batch of {batch_size} samples; "
                            f"a {SINGLE_VALUE} metric must return shape ({batch_size},)")
    if metric.metric_type == ACCUMULATE and arr.ndim != 1:
        raise AnalyzerError(f"metric {metric.name} returned shape {arr.shape}; an {ACCUMULATE} metric must return a "
                            "1-D vector")
    if arr.dtype.kind not in "iub":
        raise AnalyzerError(f"metric {metric.name} returned dtype {arr.dtype}; metric values must be integers "
                            "(convert explicitly, e.g. .astype(np.int64))")
    if arr.dtype == np.uint64 and arr.size and int(arr.max()) > np.iinfo(np.int64).max:
        raise AnalyzerError(f"metric {metric.name} returned a value above the int64 range")
    return arr.astype(np.int64, copy=False)


def map_thread(source: SampleSource, metrics: Sequence[Metric], context: MetricContext, *, num_workers: int,
               worker_id: int, num_threads: int, thread_id: int, batch_size: int,
               progress: Callable[[int], None] | None = None) -> None:
    """Run one (worker, thread) of the map stage and write its files; the marker is written last."""
    save_path = context.save_path
    start, end = thread_range(source.num_samples, num_workers, worker_id, num_threads, thread_id)
    requires = {m.name: _requirement_fingerprints(save_path, m) for m in metrics}
    paths = {m.name: map_output_paths(save_path, m.name, worker_id, thread_id) for m in metrics}
    for p in paths.values():  # an interrupted re-run must not leave the previous run's marker behind
        if os.path.exists(p["marker"]):
            os.remove(p["marker"])
    remove_stale_temp_files((f for p in paths.values() for f in p.values()), logger)  # a killed run's temp files
    n = end - start
    ids = np.empty(n, dtype=np.int64)
    values = {m.name: np.empty(n, dtype=np.int64) for m in metrics if m.metric_type == SINGLE_VALUE}
    sums: dict[str, np.ndarray | None] = {m.name: None for m in metrics if m.metric_type == ACCUMULATE}
    for m in metrics:  # whole-range shortcuts (e.g. the GPT histogram read in file order)
        if n and m.range_fn is not None and (out := m.range_fn(source, start, end, context)) is not None:
            sums[m.name] = _checked_values(m, out, 0)
    per_batch = [m for m in metrics if m.metric_type == SINGLE_VALUE or sums[m.name] is None]
    pos = 0
    if not per_batch:
        pos = n
        if progress is not None:
            progress(n)
    for batch_ids, tokens, mask, stream in source.batches(start, end, batch_size) if per_batch else ():
        batch = MetricBatch(tokens=tokens, padding_mask=mask, context=context, stream=stream)
        b = len(batch_ids)
        ids[pos:pos + b] = batch_ids
        for m in per_batch:
            out = _checked_values(m, m.fn(batch), b)
            if m.metric_type == SINGLE_VALUE:
                values[m.name][pos:pos + b] = out
            else:
                prev = sums[m.name]
                if prev is not None and prev.shape != out.shape:
                    raise AnalyzerError(f"metric {m.name} returned vectors of different lengths ({prev.shape[0]} and "
                                        f"{out.shape[0]}) for different batches")
                sums[m.name] = out.copy() if prev is None else prev + out
        pos += b
        if progress is not None:
            progress(b)
    if pos != n:
        raise AnalyzerError(f"worker {worker_id} thread {thread_id}: the source yielded {pos} samples for a range "
                            f"of {n}")
    for m in metrics:
        p = paths[m.name]
        marker = {"format": MAP_FORMAT_VERSION, "metric": m.name, "metric_type": m.metric_type,
                  "num_workers": num_workers, "worker_id": worker_id, "num_threads": num_threads,
                  "thread_id": thread_id, "start": start, "end": end, "num_samples": source.num_samples,
                  "source": source.fingerprint(), "requires": requires[m.name], "count": n}
        if m.metric_type == SINGLE_VALUE:
            save_npy_atomic(p["values"], values[m.name])
            save_npy_atomic(p["sample_ids"], ids)
        elif sums[m.name] is None:
            marker["empty"] = True
        else:
            save_npy_atomic(p["metric_value"], sums[m.name])
        write_json_atomic(p["marker"], marker)


def _rerun_hint(worker_id: int, thread_id: int) -> str:
    return f"re-run the map stage with --analyzing-worker-id {worker_id} --analyzing-specific-threads {thread_id}"


def _child(errors: Any, counter: Any, kwargs: dict[str, Any]) -> None:
    """Body of a forked map thread: report failures through ``errors`` instead of a traceback."""
    def progress(b: int) -> None:
        with counter.get_lock():
            counter.value += b
    try:
        map_thread(progress=progress, **kwargs)
    except BaseException as e:  # the parent turns this into one clear error
        errors.put((kwargs["thread_id"], f"{type(e).__name__}: {e}"))
        raise SystemExit(1)


def check_map_request(metrics: Sequence[str | Metric], save_path: str, *, num_workers: int = 1, worker_id: int = 0,
                      num_threads: int = 1, specific_threads: Sequence[int] | None = None,
                      batch_size: int = 1000) -> tuple[list[Metric], list[int]]:
    """Validate a map request before any data is read; returns the metrics and the thread ids to run."""
    _check_counts(num_workers, worker_id, num_threads)
    if batch_size < 1:
        raise AnalyzerError(f"batch size must be >= 1, got {batch_size}")
    resolved = resolve_metrics(metrics)
    threads = list(range(num_threads)) if not specific_threads else [int(t) for t in specific_threads]
    bad = [t for t in threads if not 0 <= t < num_threads]
    if bad or len(set(threads)) != len(threads):
        raise AnalyzerError(f"--analyzing-specific-threads {threads} must be distinct thread ids in "
                            f"[0, {num_threads - 1}]")
    for m in resolved:  # inputs such as the reduced total_vocab_freq must exist
        _requirement_fingerprints(save_path, m)
    return resolved, threads


def run_map(dataset: Any, metrics: Sequence[str | Metric], save_path: str, *, num_workers: int = 1, worker_id: int = 0,
            num_threads: int = 1, specific_threads: Sequence[int] | None = None, batch_size: int = 1000,
            data_type: str = "GPT", padded_vocab_size: int | None = None, seq_length: int | None = None,
            sample_indices: Sequence[int] | None = None, show_progress: bool = True) -> list[int]:
    """Map stage for one worker: run its threads (or only ``specific_threads``); returns the thread ids run."""
    resolved, threads = check_map_request(metrics, save_path, num_workers=num_workers, worker_id=worker_id,
                                          num_threads=num_threads, specific_threads=specific_threads,
                                          batch_size=batch_size)
    source = make_source(dataset, data_type, sample_indices)
    context = MetricContext(data_type=data_type, padded_vocab_size=padded_vocab_size, seq_length=seq_length,
                            save_path=save_path)
    if any("total_vocab_freq" in m.requires for m in resolved):
        context.vocab_nll()  # load once in the parent (a clear error before any thread starts)
    kwargs = dict(source=source, metrics=resolved, context=context, num_workers=num_workers, worker_id=worker_id,
                  num_threads=num_threads, batch_size=batch_size)
    ranges = [thread_range(source.num_samples, num_workers, worker_id, num_threads, t) for t in threads]
    total = sum(end - start for start, end in ranges)
    logger.info("map: worker %d runs threads %s over %d samples, metrics %s", worker_id, threads, total,
                [m.name for m in resolved])
    with tqdm(total=total, unit="sample", desc=f"map worker {worker_id}", disable=not show_progress,
              mininterval=0.5) as bar:
        if len(threads) == 1:
            map_thread(thread_id=threads[0], progress=bar.update, **kwargs)
        elif isinstance(source, GPTStreamSource):  # numpy releases the GIL in its loops: threads, no fork
            _run_threaded(threads, kwargs, bar)
        else:  # per-sample Python (dataset __getitem__) needs processes
            _run_forked(threads, kwargs, bar)
    return threads


def _run_forked(threads: list[int], kwargs: dict[str, Any], bar: tqdm) -> None:
    """Run the first map thread here and the others as forked processes; a shared counter drives the bar."""
    ctx = mp.get_context("fork")
    errors, counter = ctx.SimpleQueue(), ctx.Value("q", 0)
    procs = {t: ctx.Process(target=_child, args=(errors, counter, dict(kwargs, thread_id=t)), daemon=True)
             for t in threads[1:]}
    for p in procs.values():
        p.start()

    def progress(b: int) -> None:
        with counter.get_lock():
            counter.value += b
        bar.update(counter.value - bar.n)

    messages: dict[int, str] = {}
    try:
        try:
            map_thread(thread_id=threads[0], progress=progress, **kwargs)
        except Exception as e:  # reported with the children's failures below
            messages[threads[0]] = f"{type(e).__name__}: {e}"
        pending = {p.sentinel for p in procs.values()}
        while pending:
            pending.difference_update(mp_connection.wait(list(pending), timeout=0.5))
            bar.update(counter.value - bar.n)
    finally:  # only an interrupt leaves children running here
        for p in procs.values():
            if p.is_alive():
                p.terminate()
            p.join()
    bar.update(counter.value - bar.n)
    while not errors.empty():
        t, msg = errors.get()
        messages[t] = msg
    for t, p in procs.items():
        if p.exitcode != 0 and t not in messages:
            messages[t] = f"exit code {p.exitcode}"
    _raise_failures(kwargs["worker_id"], messages)


class _Stopped(Exception):
    """Raised inside a map thread when the run was interrupted (it then writes no marker)."""


def _run_threaded(threads: list[int], kwargs: dict[str, Any], bar: tqdm) -> None:
    """Run the map threads as Python threads (at most one per CPU core); failures are reported together."""
    lock, stop = threading.Lock(), threading.Event()

    def progress(b: int) -> None:
        if stop.is_set():  # an interrupt in the main thread: give up at the next batch
            raise _Stopped()
        with lock:
            bar.update(b)

    def one(t: int) -> tuple[int, str | None]:
        try:
            map_thread(thread_id=t, progress=progress, **kwargs)
        except _Stopped:
            return t, "interrupted"
        except Exception as e:  # reported with the other threads' failures
            return t, f"{type(e).__name__}: {e}"
        return t, None

    pool = ThreadPoolExecutor(max(1, min(len(threads), os.cpu_count() or 1)))
    try:
        results = list(pool.map(one, threads))
    except BaseException:  # e.g. KeyboardInterrupt: stop the running threads, drop the queued ones
        stop.set()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    _raise_failures(kwargs["worker_id"], {t: msg for t, msg in results if msg is not None})


def _raise_failures(worker_id: int, messages: dict[int, str]) -> None:
    """One error naming every failed map thread and how to re-run it."""
    if not messages:
        return
    failed = sorted(messages)
    details = "; ".join(f"thread {t}: {messages[t]}" for t in failed)
    raise AnalyzerError(f"map failed in worker {worker_id} ({details}); fix the cause and "
                        + _rerun_hint(worker_id, failed[0]) + (f" (threads {failed})" if len(failed) > 1 else ""))


def _collect_markers(save_path: str, metric: Metric, num_workers: int, num_threads: int,
                     num_samples: int | None) -> list[tuple[dict[str, Any], dict[str, str]]]:
    """Every (worker, thread) marker of ``metric``, checked for completeness and mutual consistency."""
    found = []
    for w in range(num_workers):
        for t in range(num_threads):
            paths = map_output_paths(save_path, metric.name, w, t)
            marker = read_marker(paths["marker"])
            if marker is None:
                raise AnalyzerError(f"map output of metric {metric.name} for worker {w} thread {t} is missing or "
                                    f"incomplete (no {paths['marker']}): {_rerun_hint(w, t)}")
            if marker.get("format") != MAP_FORMAT_VERSION or marker.get("metric") != metric.name:
                raise AnalyzerError(f"{paths['marker']}: not a map marker of metric {metric.name} (format "
                                    f"{MAP_FORMAT_VERSION}): {_rerun_hint(w, t)}")
            if (marker.get("num_workers"), marker.get("num_threads")) != (num_workers, num_threads):
                raise AnalyzerError(
                    f"{paths['marker']}: written by a map run with --analyzing-num-workers {marker.get('num_workers')} "
                    f"--analyzing-num-threads {marker.get('num_threads')}, but reduce was given {num_workers} and "
                    f"{num_threads}: use the map settings, or re-run the map stage")
            if marker.get("metric_type") != metric.metric_type:
                raise AnalyzerError(f"{paths['marker']}: metric type {marker.get('metric_type')} differs from the "
                                    f"registered {metric.metric_type}: {_rerun_hint(w, t)}")
            found.append((marker, paths))
    first = found[0][0]
    n = int(first["num_samples"])
    if num_samples is not None and num_samples != n:
        raise AnalyzerError(f"map outputs of metric {metric.name} cover {n} samples, but the dataset has {num_samples}")
    for marker, paths in found:
        w, t = marker["worker_id"], marker["thread_id"]
        for key in ("num_samples", "source", "requires"):
            if marker.get(key) != first.get(key):
                raise AnalyzerError(f"{paths['marker']}: {key} {marker.get(key)!r} differs from worker 0 thread 0's "
                                    f"{first.get(key)!r} (the data or an input changed between map runs): "
                                    f"{_rerun_hint(w, t)}")
        if (marker.get("start"), marker.get("end")) != thread_range(n, num_workers, w, num_threads, t):
            raise AnalyzerError(f"{paths['marker']}: range [{marker.get('start')}, {marker.get('end')}) is not this "
                                f"thread's share of {n} samples: {_rerun_hint(w, t)}")
    return found


def stable_value_order(values: np.ndarray, num_threads: int = 1) -> np.ndarray:
    """Sample ids sorted by (value, id): a radix sort for narrow ranges, else parallel chunk sorts merged."""
    n = values.shape[0]
    if n and int(values.max()) - int(values.min()) < 1 << 16:  # narrow range: numpy's stable sort is a radix sort
        return np.argsort((values - values.min()).astype(np.uint16), kind="stable")
    if num_threads <= 1 or n < _PARALLEL_SORT_MIN:
        return np.argsort(values, kind="stable")
    bounds = split_index(0, n, num_threads)
    with ThreadPoolExecutor(num_threads) as pool:  # numpy sorts release the GIL
        parts = list(pool.map(lambda r: np.argsort(values[r[0]:r[1]], kind="stable") + r[0], bounds))
    merged = np.concatenate(parts)  # each part sorted by (value, id); parts in id order
    return merged[np.argsort(values[merged], kind="stable")]  # timsort merges the runs; ties keep id order


def percentile_values(distinct: np.ndarray, counts: np.ndarray, step: int = 5) -> dict[int, int]:
    """Metric value at every ``step``-th percentile of the samples (smallest value reaching it)."""
    cum = np.cumsum(counts)
    total = int(cum[-1])
    return {p: int(distinct[min(int(np.searchsorted(cum, total * p / 100.0, side="left")), len(distinct) - 1)])
            for p in range(step, 101, step)}


def _reduce_single(save_path: str, metric: Metric, found: list[tuple[dict[str, Any], dict[str, str]]],
                   num_threads_reduce: int, bar: tqdm) -> dict[str, Any]:
    n = int(found[0][0]["num_samples"])
    sample_to_metric = np.empty(n, dtype=np.int64)
    seen = np.zeros(n, dtype=bool)
    for marker, paths in found:
        count = int(marker["count"])
        ids = load_npy(paths["sample_ids"], count)
        vals = load_npy(paths["values"], count)
        if count:
            if int(ids.min()) < 0 or int(ids.max()) >= n:
                raise AnalyzerError(f"{paths['sample_ids']}: sample ids outside [0, {n}) (the dataset's 'index' "
                                    f"field or sample_indices are not positions of this dataset)")
            seen[ids] = True
            sample_to_metric[ids] = vals
    if not seen.all():  # the thread ranges hold n ids in total, so a missing id means a duplicated one
        raise AnalyzerError(f"metric {metric.name}: the map outputs hold no value for sample {int(np.argmin(seen))} "
                            "(and one sample twice): the sample ids (the dataset's 'index' field or sample_indices) "
                            "are not a permutation of the dataset positions")
    bar.update(1)
    order = stable_value_order(sample_to_metric, num_threads_reduce)
    sorted_vals = sample_to_metric[order]
    starts = np.flatnonzero(np.concatenate(([True], sorted_vals[1:] != sorted_vals[:-1])))
    distinct = sorted_vals[starts]
    counts = np.diff(np.append(starts, n))
    bar.update(1)
    value_dtype = find_fit_int_dtype(int(distinct[0]), int(distinct[-1]))
    sample_dtype = find_fit_int_dtype(0, n - 1)
    step = max(1, distinct.size // 100)
    merged_sizes = np.add.reduceat(counts, np.arange(0, distinct.size, step))
    out = lambda kind: metric_output_prefix(save_path, metric.name, kind)  # noqa: E731
    write_index_file(out("sample_to_metric"), sample_to_metric, None, value_dtype)
    write_index_file(out("index_to_sample"), order, counts, sample_dtype)
    write_index_file(out("index_to_metric"), distinct, None, value_dtype)
    write_index_file(out("index_to_sample_percentile_merged"), order, merged_sizes, sample_dtype)
    bar.update(1)
    pct = percentile_values(distinct, counts)
    logger.info("metric %s: %d samples, %d distinct values in [%d, %d]; value dtype %s, sample id dtype %s",
                metric.name, n, distinct.size, int(distinct[0]), int(distinct[-1]), value_dtype, sample_dtype)
    for p, v in pct.items():
        logger.info("metric %s %dth percentile: %d", metric.name, p, v)
    return {"num_samples": n, "num_values": int(distinct.size), "min": int(distinct[0]), "max": int(distinct[-1]),
            "value_dtype": str(value_dtype), "sample_dtype": str(sample_dtype), "merge_step": step,
            "percentiles": pct}


def _reduce_accumulate(save_path: str, metric: Metric, found: list[tuple[dict[str, Any], dict[str, str]]],
                       bar: tqdm) -> dict[str, Any]:
    total: np.ndarray | None = None
    for marker, paths in found:
        if marker.get("empty"):
            continue
        vec = np.asarray(load_npy(paths["metric_value"]), dtype=np.int64)
        if total is not None and vec.shape != total.shape:
            raise AnalyzerError(f"{paths['metric_value']}: vector length {vec.shape[0]} differs from the other map "
                                f"outputs' {total.shape[0]}")
        total = vec.copy() if total is None else total + vec
    if total is None:
        raise AnalyzerError(f"metric {metric.name}: every map thread was empty")
    bar.update(2)
    dtype = find_fit_int_dtype(int(total.min()), int(total.max()))
    write_index_file(metric_output_prefix(save_path, metric.name, "metric_value"), total, [total.size], dtype)
    bar.update(1)
    logger.info("metric %s: summed vector of %d entries in [%d, %d], dtype %s", metric.name, total.size,
                int(total.min()), int(total.max()), dtype)
    return {"length": int(total.size), "min": int(total.min()), "max": int(total.max()), "value_dtype": str(dtype)}


REDUCE_OUTPUT_KINDS = ("sample_to_metric", "index_to_sample", "index_to_metric", "index_to_sample_percentile_merged",
                       "metric_value")
"""The ``{save}/{m}/{m}_{kind}.bin/.idx`` files the reduce stage writes."""


def run_reduce(save_path: str, metrics: Sequence[str | Metric], *, num_workers: int = 1, num_threads: int = 1,
               num_threads_reduce: int = 1, num_samples: int | None = None,
               show_progress: bool = True) -> dict[str, dict[str, Any]]:
    """Reduce stage: check every map output, write the spec §2.6 files; returns a summary per metric."""
    _check_counts(num_workers, None, num_threads)
    if num_threads_reduce < 1:
        raise AnalyzerError(f"--analyzing-num-threads-reduce must be >= 1, got {num_threads_reduce}")
    resolved = resolve_metrics(metrics)
    summaries = {}
    markers = {m.name: _collect_markers(save_path, m, num_workers, num_threads, num_samples) for m in resolved}
    for m in resolved:  # temp files of the outputs below that a killed reduce left behind
        prefixes = [metric_output_prefix(save_path, m.name, kind) for kind in REDUCE_OUTPUT_KINDS]
        remove_stale_temp_files((f for p in prefixes for f in (data_file_path(p), index_file_path(p))), logger)
    with tqdm(total=3 * len(resolved), desc="reduce", unit="step", disable=not show_progress) as bar:
        for m in resolved:
            found = markers[m.name]
            if m.metric_type == SINGLE_VALUE:
                summaries[m.name] = _reduce_single(save_path, m, found, num_threads_reduce, bar)
            else:
                summaries[m.name] = _reduce_accumulate(save_path, m, found, bar)
    return summaries


def run_map_reduce(dataset: Any, metrics: Sequence[str | Metric], save_path: str, *, num_workers: int = 1,
                   worker_id: int = 0, num_threads: int = 1, num_threads_reduce: int = 1, batch_size: int = 1000,
                   data_type: str = "GPT", padded_vocab_size: int | None = None, seq_length: int | None = None,
                   sample_indices: Sequence[int] | None = None, barrier: Callable[[], None] | None = None,
                   show_progress: bool = True) -> dict[str, dict[str, Any]]:
    """Map then reduce (on worker 0), metrics ordered so that e.g. total_vocab_freq is reduced before vocab_rarity."""
    if num_workers > 1 and barrier is None:
        raise AnalyzerError("run_map_reduce with several workers needs a barrier (e.g. torch.distributed.barrier); "
                            "or run the map stage on every worker, then the reduce stage once")
    resolved = resolve_metrics(metrics)
    source = make_source(dataset, data_type, sample_indices)  # built once for every stage
    names = {m.name for m in resolved}
    stages = [[m for m in resolved if not names.intersection(m.requires)],
              [m for m in resolved if names.intersection(m.requires)]]
    summaries: dict[str, dict[str, Any]] = {}
    for stage in (s for s in stages if s):
        run_map(source, stage, save_path, num_workers=num_workers, worker_id=worker_id, num_threads=num_threads,
                batch_size=batch_size, data_type=data_type, padded_vocab_size=padded_vocab_size,
                seq_length=seq_length, show_progress=show_progress)
        if barrier is not None:
            barrier()
        if worker_id == 0:
            summaries.update(run_reduce(save_path, stage, num_workers=num_workers, num_threads=num_threads,
                                        num_threads_reduce=num_threads_reduce, show_progress=show_progress))
        if barrier is not None:
            barrier()
    return summaries


class DataAnalyzer:
    """DeepSpeed-``DataAnalyzer``-shaped front end over :func:`run_map` / :func:`run_reduce`."""

    def __init__(self, dataset: Any, *, metric_names: Sequence[str | Metric], save_path: str = "./",
                 num_workers: int = 1, worker_id: int = 0, num_threads: int = 1, num_threads_reduce: int = 1,
                 specific_threads: Sequence[int] = (), batch_size: int = 1000, data_type: str = "GPT",
                 padded_vocab_size: int | None = None, seq_length: int | None = None,
                 sample_indices: Sequence[int] | None = None, show_progress: bool = True) -> None:
        self.dataset = dataset
        self.metrics = resolve_metrics(metric_names)
        self.save_path = save_path
        self.num_workers, self.worker_id = num_workers, worker_id
        self.num_threads, self.num_threads_reduce = num_threads, num_threads_reduce
        self.specific_threads = list(specific_threads)
        self.batch_size = batch_size
        self.data_type, self.padded_vocab_size, self.seq_length = data_type, padded_vocab_size, seq_length
        self.sample_indices = sample_indices
        self.show_progress = show_progress

    def run_map(self) -> list[int]:
        """Map stage of this worker (only ``specific_threads`` when given)."""
        return run_map(self.dataset, self.metrics, self.save_path, num_workers=self.num_workers,
                       worker_id=self.worker_id, num_threads=self.num_threads, specific_threads=self.specific_threads,
                       batch_size=self.batch_size, data_type=self.data_type,
                       padded_vocab_size=self.padded_vocab_size, seq_length=self.seq_length,
                       sample_indices=self.sample_indices, show_progress=self.show_progress)

    def run_reduce(self) -> dict[str, dict[str, Any]]:
        """Reduce stage (run once, after every worker's map finished)."""
        return run_reduce(self.save_path, self.metrics, num_workers=self.num_workers, num_threads=self.num_threads,
                          num_threads_reduce=self.num_threads_reduce, num_samples=len(self.dataset),
                          show_progress=self.show_progress)

    def run_map_reduce(self, barrier: Callable[[], None] | None = None) -> dict[str, dict[str, Any]]:
        """Map, then reduce on worker 0 (``barrier`` synchronises several workers)."""
        return run_map_reduce(self.dataset, self.metrics, self.save_path, num_workers=self.num_workers,
                              worker_id=self.worker_id, num_threads=self.num_threads,
                              num_threads_reduce=self.num_threads_reduce, batch_size=self.batch_size,
                              data_type=self.data_type, padded_vocab_size=self.padded_vocab_size,
                              seq_length=self.seq_length, sample_indices=self.sample_indices,
                              barrier=_default_barrier(barrier),
                              show_progress=self.show_progress)


def _default_barrier(barrier: Callable[[], None] | None) -> Callable[[], None] | None:
    """The given barrier, or torch.distributed.barrier when a process group is initialised."""
    if barrier is not None:
        return barrier
    import torch.distributed as dist

    return dist.barrier if dist.is_available() and dist.is_initialized() else None
