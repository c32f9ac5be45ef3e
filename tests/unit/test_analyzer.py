"""Curriculum data analyzer (map/reduce): outputs against brute-force per-sample references (spec §2, §13.2)."""
from __future__ import annotations

import os
import struct

import numpy as np
import pytest

from megatron.data.gpt_dataset import build_train_valid_test_datasets
from megatron.data.indexed_dataset import MMapIndexedDatasetBuilder
from megatron.data_efficiency import metrics as metrics_mod
from megatron.data_efficiency.analyzer import (
    percentile_values,
    run_map,
    run_map_reduce,
    run_reduce,
    stable_value_order,
)
from megatron.data_efficiency.analyzer_io import AnalyzerError, map_output_paths, read_index_rows, thread_range
from megatron.data_efficiency.analyzer_sources import DatasetSource, GPTStreamSource, make_source
from megatron.data_efficiency.metrics import ACCUMULATE, SINGLE_VALUE, register_metric

VOCAB = 300  # padded vocabulary size of the synthetic data
SPEC_FILES = ("sample_to_metric", "index_to_sample", "index_to_metric", "index_to_sample_percentile_merged")


# ------------------------------------------------------------------------------------------------
# helpers: data, brute-force references
# ------------------------------------------------------------------------------------------------


def make_token_file(path: str, seed: int, num_docs: int = 60, max_len: int = 90) -> str:
    """A uint16 token file with Zipf-like ids, some empty and some long documents."""
    rng = np.random.default_rng(seed)
    prefix = os.path.join(path, "tokens")
    builder = MMapIndexedDatasetBuilder(prefix + ".bin", np.uint16)
    for _ in range(num_docs):
        n = int(rng.integers(0, max_len))
        builder.add_item((rng.zipf(1.4, n) - 1) % VOCAB)
        builder.end_document()
    builder.finalize(prefix + ".idx")
    return prefix


def gpt_train_set(prefix: str, cache: str, seq_length: int = 16, epochs: int = 2):
    """The Megatron GPT train split over every document, exact epochs, with the data index."""
    train, _, _ = build_train_valid_test_datasets(
        [prefix], "mmap", "100,0,0", [1, 1, 1], seq_length, 1234, train_data_exact_num_epochs=epochs,
        return_data_index=True, index_cache_dir=cache)
    return train


@pytest.fixture()
def gpt(tmp_path):
    """A small GPT train dataset (a few hundred samples)."""
    return gpt_train_set(make_token_file(str(tmp_path), seed=0), str(tmp_path))


@pytest.fixture()
def scratch_metrics():
    """Register test metrics and remove them afterwards (the registry is a module-level dict)."""
    added: list[str] = []

    def add(name, fn, metric_type, **kw):
        added.append(name)
        return register_metric(name, fn, metric_type, **kw)

    yield add
    for name in added:
        metrics_mod.METRICS.pop(name, None)


def spec_nll(freq: np.ndarray) -> np.ndarray:
    """Spec §2.8 written out: zero counts -> 1, p = f / sum(f), nll = -ln p (float64)."""
    f = np.array(freq, dtype=np.int64)
    f[f == 0] = 1
    return -np.log(f / f.sum())


def read(save: str, metric: str, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Flat data and row sizes of ``{save}/{metric}/{metric}_{kind}``."""
    return read_index_rows(os.path.join(save, metric, f"{metric}_{kind}"))


def assert_index_files(save: str, metric: str, values: np.ndarray) -> None:
    """The four spec §2.6 files of ``metric`` equal what ``values`` (value of sample id i) implies."""
    n = values.size
    data, sizes = read(save, metric, "sample_to_metric")
    assert sizes.tolist() == [1] * n and data.astype(np.int64).tolist() == values.tolist()
    distinct = np.unique(values)
    data, sizes = read(save, metric, "index_to_metric")
    assert sizes.tolist() == [1] * distinct.size and data.astype(np.int64).tolist() == distinct.tolist()
    assert np.all(np.diff(data.astype(np.int64)) > 0)
    rows = [np.flatnonzero(values == v) for v in distinct]  # ids ascending within a row
    data, sizes = read(save, metric, "index_to_sample")
    assert sizes.tolist() == [r.size for r in rows]
    assert data.astype(np.int64).tolist() == np.concatenate(rows).tolist()
    step = max(1, distinct.size // 100)
    merged = [np.concatenate(rows[i:i + step]) for i in range(0, distinct.size, step)]
    data, sizes = read(save, metric, "index_to_sample_percentile_merged")
    assert sizes.tolist() == [m.size for m in merged]
    assert data.astype(np.int64).tolist() == np.concatenate(merged).tolist()


def output_bytes(save: str, metric_kinds: dict[str, tuple[str, ...]]) -> dict[str, bytes]:
    """Every reduce output file's bytes, keyed by relative name."""
    out = {}
    for metric, kinds in metric_kinds.items():
        for kind in kinds:
            for ext in (".bin", ".idx"):
                name = f"{metric}/{metric}_{kind}{ext}"
                with open(os.path.join(save, name), "rb") as f:
                    out[name] = f.read()
    return out


VOCAB_OUTPUTS = {"total_vocab_freq": ("metric_value",), "vocab_rarity": SPEC_FILES}


class ToyDataset:
    """Spec §13.2 toy data: sample i is the two tokens [(i + 7) mod 10000, i mod 7]."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> np.ndarray:
        return np.array([(i + 7) % 10000, i % 7], dtype=np.int64)


class BertLike:
    """Padded BERT-style samples (text, padding_mask) with a permuted 'index' field."""

    def __init__(self, n: int, seq_length: int, seed: int) -> None:
        self.n, self.seq_length = n, seq_length
        self.perm = np.random.default_rng(seed).permutation(n)
        self.seed = seed

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng((self.seed, i))
        length = int(rng.integers(2, self.seq_length + 1))
        text = np.zeros(self.seq_length, dtype=np.int64)
        text[:length] = (rng.zipf(1.3, length) - 1) % (VOCAB - 50) + 1
        mask = np.zeros(self.seq_length, dtype=np.int64)
        mask[:length] = 1
        return {"text": text, "padding_mask": mask, "index": np.array([self.perm[i]])}


# ------------------------------------------------------------------------------------------------
# tests
# ------------------------------------------------------------------------------------------------


def test_toy_map_reduce_spec_13_2(tmp_path, scratch_metrics):
    """value = (i + 7) mod 10000 over 1e5 samples: every §13.2 property, fitted dtypes, DeepSpeed dtype codes."""
    scratch_metrics("toy_value", lambda t: t[:, 0], SINGLE_VALUE)
    scratch_metrics("toy_hist", lambda t: np.bincount(t[:, 1], minlength=7), ACCUMULATE)
    n = 100_000
    save = str(tmp_path / "out")
    run_map(ToyDataset(n), ["toy_value", "toy_hist"], save, batch_size=10_000, show_progress=False)
    summary = run_reduce(save, ["toy_value", "toy_hist"], show_progress=False)
    values = (np.arange(n) + 7) % 10000
    assert_index_files(save, "toy_value", values)
    data, sizes = read(save, "toy_value", "index_to_sample")
    assert sizes.size == 10000 and set(sizes.tolist()) == {10} and np.array_equal(np.sort(data), np.arange(n))
    _, merged_sizes = read(save, "toy_value", "index_to_sample_percentile_merged")
    assert merged_sizes.size == -(-10000 // max(1, 10000 // 100))
    hist, hist_sizes = read(save, "toy_hist", "metric_value")
    assert hist_sizes.tolist() == [7] and hist.tolist() == np.bincount(np.arange(n) % 7).tolist()
    # fitted dtypes (find_fit_int_dtype) written with DeepSpeed's dtype codes: uint16 -> 6, uint32 -> 7
    assert summary["toy_value"]["value_dtype"] == "uint16" and summary["toy_value"]["sample_dtype"] == "uint32"
    for kind, code in (("sample_to_metric", 6), ("index_to_sample", 7), ("index_to_metric", 6)):
        with open(os.path.join(save, "toy_value", f"toy_value_{kind}.idx"), "rb") as f:
            magic, version, dtype_code, _, n_doc = struct.unpack("<9sQBQQ", f.read(34))
        assert (magic, version, dtype_code, n_doc) == (b"MMIDIDX\x00\x00", 1, code, 2)
    # bounded map output: three files per metric per thread, never one per distinct value
    assert len(os.listdir(tmp_path / "out" / "toy_value" / "worker0_thread0")) == 3
    assert summary["toy_value"]["percentiles"][50] == int(np.percentile(values, 50, method="inverted_cdf"))


def test_gpt_vocab_metrics_equal_brute_force(gpt, tmp_path):
    """total_vocab_freq / vocab_rarity on a GPT dataset equal the per-sample spec formulas; fast path = slow path."""
    assert isinstance(make_source(gpt), GPTStreamSource)
    fast, slow = str(tmp_path / "fast"), str(tmp_path / "slow")
    run_map_reduce(gpt, ["total_vocab_freq", "vocab_rarity"], fast, padded_vocab_size=VOCAB, show_progress=False)
    samples = [gpt[i]["text"] for i in range(len(gpt))]
    assert all(s.size == gpt.seq_length + 1 for s in samples)
    freq = np.zeros(VOCAB + 1, dtype=np.int64)
    for s in samples:  # every token of every sample, shared boundary tokens twice
        freq += np.bincount(s, minlength=VOCAB + 1)
    data, sizes = read(fast, "total_vocab_freq", "metric_value")
    assert sizes.tolist() == [VOCAB + 1] and data.astype(np.int64).tolist() == freq.tolist()
    nll = spec_nll(freq)
    rarity = np.array([int(np.sum(nll[s])) for s in samples])
    assert_index_files(fast, "vocab_rarity", rarity)
    run_map_reduce(DatasetSource(gpt), ["total_vocab_freq", "vocab_rarity"], slow, padded_vocab_size=VOCAB,
                   show_progress=False)
    assert output_bytes(fast, VOCAB_OUTPUTS) == output_bytes(slow, VOCAB_OUTPUTS)


def test_gpt_fast_path_int32_tokens_and_windows_inside_one_document(tmp_path):
    """int32 token files and batches that start and end inside one long document: fast path = brute force."""
    rng = np.random.default_rng(11)
    prefix = str(tmp_path / "long")
    builder = MMapIndexedDatasetBuilder(prefix + ".bin", np.int32)
    for n in (300_000, 5, 40_000):  # one document much longer than a fast-path batch (~128k tokens)
        builder.add_item((rng.zipf(1.3, n) - 1) % 70_000)  # ids above the uint16 range
        builder.end_document()
    builder.finalize(prefix + ".idx")
    gpt = gpt_train_set(prefix, str(tmp_path), seq_length=16, epochs=1)
    source = make_source(gpt)
    assert isinstance(source, GPTStreamSource) and source._tokens.dtype == np.int32
    save = str(tmp_path / "out")
    run_map_reduce(gpt, ["total_vocab_freq", "vocab_rarity"], save, num_threads=2, padded_vocab_size=70_000,
                   show_progress=False)
    samples = [gpt[i]["text"] for i in range(len(gpt))]
    freq = np.zeros(70_001, dtype=np.int64)
    for s in samples:
        freq += np.bincount(s, minlength=70_001)
    data, _ = read(save, "total_vocab_freq", "metric_value")
    assert data.astype(np.int64).tolist() == freq.tolist()
    nll = spec_nll(freq)
    assert_index_files(save, "vocab_rarity", np.array([int(np.sum(nll[s])) for s in samples]))


def test_bert_metrics_equal_brute_force(tmp_path):
    """seqlen, total_vocab_freq (mask-weighted), vocab_rarity, seqlen_vocab_rarity; ids from the 'index' field."""
    ds, seq_length = BertLike(300, 24, seed=3), 24
    save = str(tmp_path / "bert")
    run_map_reduce(ds, ["seqlen", "total_vocab_freq", "vocab_rarity", "seqlen_vocab_rarity"], save,
                   data_type="BERT", padded_vocab_size=VOCAB, seq_length=seq_length, batch_size=64,
                   num_threads=2, show_progress=False)
    items = [ds[i] for i in range(len(ds))]
    freq = np.zeros(VOCAB + 1, dtype=np.int64)
    for it in items:
        freq += np.bincount(it["text"][it["padding_mask"] == 1], minlength=VOCAB + 1)
    data, _ = read(save, "total_vocab_freq", "metric_value")
    assert data.astype(np.int64).tolist() == freq.tolist()
    nll = spec_nll(freq)
    coeff = 10 ** (int(np.ceil(np.log10(seq_length * nll.max()))) + 1)
    seqlen, rarity = np.zeros(len(ds), np.int64), np.zeros(len(ds), np.int64)
    for it in items:  # the value of position i belongs to sample id index[i] (spec §2.3)
        sid = int(it["index"][0])
        seqlen[sid] = int(it["padding_mask"].sum())
        rarity[sid] = int(np.sum(it["padding_mask"] * nll[it["text"]]))
    assert_index_files(save, "seqlen", seqlen)
    assert_index_files(save, "vocab_rarity", rarity)
    assert_index_files(save, "seqlen_vocab_rarity", seqlen * coeff + rarity)


@pytest.mark.parametrize("workers,threads", [(2, 3), (3, 2)])
def test_outputs_do_not_depend_on_workers_and_threads(gpt, tmp_path, workers, threads):
    """Map with W workers x T threads, then reduce: byte-identical to 1 x 1."""
    ref = str(tmp_path / "ref")
    run_map_reduce(gpt, ["total_vocab_freq", "vocab_rarity"], ref, padded_vocab_size=VOCAB, show_progress=False)
    save = str(tmp_path / "split")
    for stage in (["total_vocab_freq"], ["vocab_rarity"]):
        for w in range(workers):
            run_map(gpt, stage, save, num_workers=workers, worker_id=w, num_threads=threads,
                    padded_vocab_size=VOCAB, show_progress=False)
        run_reduce(save, stage, num_workers=workers, num_threads=threads, num_threads_reduce=2, show_progress=False)
    assert output_bytes(save, VOCAB_OUTPUTS) == output_bytes(ref, VOCAB_OUTPUTS)


def test_killed_thread_is_rerun_alone(gpt, tmp_path):
    """A thread killed mid-write is reported by reduce; re-running just it fixes the outputs, others untouched."""
    ref, save = str(tmp_path / "ref"), str(tmp_path / "out")
    run_map_reduce(gpt, ["total_vocab_freq", "vocab_rarity"], ref, padded_vocab_size=VOCAB, show_progress=False)
    run_map_reduce(gpt, ["total_vocab_freq"], save, padded_vocab_size=VOCAB, show_progress=False)
    run_map(gpt, ["vocab_rarity"], save, num_threads=3, show_progress=False)
    killed = map_output_paths(save, "vocab_rarity", 0, 1)
    os.remove(killed["marker"])
    with open(killed["values"], "r+b") as f:
        f.truncate(40)
    rerun = r"worker 0 thread 1 .*--analyzing-worker-id 0 --analyzing-specific-threads 1"
    with pytest.raises(AnalyzerError, match=rerun):
        run_reduce(save, ["vocab_rarity"], num_threads=3, show_progress=False)
    others = [p for t in (0, 2) for p in map_output_paths(save, "vocab_rarity", 0, t).values() if os.path.exists(p)]
    before = {p: os.stat(p).st_mtime_ns for p in others}
    assert run_map(gpt, ["vocab_rarity"], save, num_threads=3, specific_threads=[1], show_progress=False) == [1]
    assert {p: os.stat(p).st_mtime_ns for p in others} == before
    run_reduce(save, ["vocab_rarity"], num_threads=3, show_progress=False)
    assert output_bytes(save, VOCAB_OUTPUTS) == output_bytes(ref, VOCAB_OUTPUTS)


def test_failing_thread_names_itself(tmp_path, scratch_metrics):
    """An exception inside one forked map thread becomes one error naming that thread; it writes no marker."""
    def fragile(tokens):
        if np.isin(tokens[:, 0], (15, 32)).any():
            raise RuntimeError("bad sample")
        return tokens[:, 0]

    scratch_metrics("fragile", fragile, SINGLE_VALUE)
    ds = ToyDataset(30)  # values 15 and 32 are samples 8 and 25: threads 0 and 2 of 3 (ranges of 10)
    expected = r"thread 0: RuntimeError: bad sample; thread 2: RuntimeError: bad sample.*specific-threads 0 \(threads"
    with pytest.raises(AnalyzerError, match=expected):
        run_map(ds, ["fragile"], str(tmp_path), num_threads=3, show_progress=False)
    assert [os.path.exists(map_output_paths(str(tmp_path), "fragile", 0, t)["marker"]) for t in range(3)] == \
        [False, True, False]


def test_gpt_stream_threads_run_in_process_and_failures_name_the_thread(gpt, tmp_path, scratch_metrics):
    """GPT fast path: map threads are Python threads of this process (no fork); a failing one is named."""
    pids = tmp_path / "pids.txt"

    def record(tokens):
        with open(pids, "a") as f:  # a file, so that calls made in a forked child would show up too
            f.write(f"{os.getpid()}\n")
        return tokens[:, 0].astype(np.int64)

    scratch_metrics("first_token", record, SINGLE_VALUE)
    save = str(tmp_path / "out")
    run_map(gpt, ["first_token"], save, num_threads=3, show_progress=False)
    assert set(pids.read_text().split()) == {str(os.getpid())}
    run_reduce(save, ["first_token"], num_threads=3, show_progress=False)
    assert_index_files(save, "first_token", np.array([gpt[i]["text"][0] for i in range(len(gpt))]))

    # threads 0 and 2 fail on their first batch (recognised by its first row), thread 1 completes
    source = make_source(gpt)
    first_rows = [source._window(a, a + 1)[1][0].copy()
                  for a, _ in (thread_range(len(gpt), 1, 0, 3, t) for t in range(3))]
    assert not any(np.array_equal(first_rows[1], first_rows[t]) for t in (0, 2))

    def failing(batch):
        if any(np.array_equal(batch.tokens[0], first_rows[t]) for t in (0, 2)):
            raise RuntimeError("bad batch")
        return np.asarray(batch.tokens[:, 0], dtype=np.int64)

    scratch_metrics("failing", failing, SINGLE_VALUE, takes_batch=True)
    expected = r"thread 0: RuntimeError: bad batch; thread 2: RuntimeError: bad batch.*specific-threads 0 \(threads"
    with pytest.raises(AnalyzerError, match=expected):
        run_map(source, ["failing"], save, num_threads=3, show_progress=False)
    assert [os.path.exists(map_output_paths(save, "failing", 0, t)["marker"]) for t in range(3)] == \
        [False, True, False]


def test_reduce_errors_are_clear(gpt, tmp_path):
    """Missing map output, mismatched thread count, missing or corrupt total_vocab_freq: one clear error each."""
    save = str(tmp_path / "out")
    with pytest.raises(AnalyzerError, match=r"vocab_rarity for worker 0 thread 0 is missing"):
        run_reduce(save, ["vocab_rarity"], show_progress=False)
    with pytest.raises(AnalyzerError, match=r"run the map and reduce stages for total_vocab_freq"):
        run_map(gpt, ["vocab_rarity"], save, show_progress=False)
    run_map(gpt, ["total_vocab_freq"], save, num_threads=2, padded_vocab_size=VOCAB, show_progress=False)
    with pytest.raises(AnalyzerError, match=r"--analyzing-num-threads 2, but reduce was given 1 and 1"):
        run_reduce(save, ["total_vocab_freq"], show_progress=False)
    run_reduce(save, ["total_vocab_freq"], num_threads=2, show_progress=False)
    idx = os.path.join(save, "total_vocab_freq", "total_vocab_freq_metric_value.idx")
    with open(idx, "r+b") as f:
        f.truncate(os.path.getsize(idx) - 3)
    with pytest.raises(AnalyzerError, match=r"total_vocab_freq_metric_value\.idx: truncated"):
        run_map(gpt, ["vocab_rarity"], save, show_progress=False)


def test_user_metrics_and_validation(gpt, tmp_path, scratch_metrics):
    """A registered batch metric matches brute force; bad outputs, names and data types are rejected clearly."""
    scratch_metrics("count_small", lambda t: (t < 3).sum(axis=1), SINGLE_VALUE)
    save = str(tmp_path / "out")
    run_map_reduce(gpt, ["count_small"], save, num_threads=2, show_progress=False)
    assert_index_files(save, "count_small", np.array([(gpt[i]["text"] < 3).sum() for i in range(len(gpt))]))
    scratch_metrics("floaty", lambda t: t.mean(axis=1), SINGLE_VALUE)
    with pytest.raises(AnalyzerError, match=r"metric floaty returned dtype float64; metric values must be integers"):
        run_map(gpt, ["floaty"], save, show_progress=False)
    scratch_metrics("wrong_shape", lambda t: t[:, :2], SINGLE_VALUE)
    with pytest.raises(AnalyzerError, match=r"metric wrong_shape returned shape \(\d+, 2\)"):
        run_map(gpt, ["wrong_shape"], save, show_progress=False)
    with pytest.raises(AnalyzerError, match=r"already registered"):
        register_metric("count_small", lambda t: t[:, 0], SINGLE_VALUE)
    with pytest.raises(AnalyzerError, match=r"'nope' is unknown; known metrics: .*seqlen"):
        run_map(gpt, ["nope"], save, show_progress=False)
    with pytest.raises(AnalyzerError, match=r"for --analyzing-data-type BERT"):
        run_map(gpt, ["seqlen"], save, show_progress=False)
    with pytest.raises(AnalyzerError, match=r"--analyzing-specific-threads \[2\] must be"):
        run_map(gpt, ["count_small"], save, num_threads=2, specific_threads=[2], show_progress=False)


def test_parallel_sort_and_percentiles():
    """Reduce-thread sort equals one stable argsort (ties by id); percentiles pick the value reaching each 5 %."""
    for high in (50, 1 << 40):  # narrow range (radix path) and wide range (threads + merge)
        values = np.random.default_rng(0).integers(0, high, (1 << 20) + 17)
        values[::7] = values[0]  # plenty of ties
        assert np.array_equal(stable_value_order(values, 3), np.argsort(values, kind="stable"))
    pct = percentile_values(np.array([10, 20, 30, 40]), np.array([25, 25, 25, 25]))
    assert [pct[p] for p in (5, 25, 30, 50, 55, 75, 80, 100)] == [10, 10, 20, 20, 30, 30, 40, 40]


def test_stale_temp_files_of_a_killed_map_and_reduce_are_removed(tmp_path, scratch_metrics, caplog):
    """Temp files a SIGKILLed map thread / reduce left for its outputs are removed on the next run; others kept."""
    scratch_metrics("toy_value", lambda t: t[:, 0], SINGLE_VALUE)
    save = str(tmp_path / "out")
    paths = map_output_paths(save, "toy_value", 0, 0)
    metric_dir = os.path.join(save, "toy_value")
    os.makedirs(os.path.dirname(paths["values"]))
    stale = [paths["values"] + ".x1y2z3_4.tmp", paths["marker"] + ".abcdefgh.tmp",
             os.path.join(metric_dir, "toy_value_index_to_sample.bin.q9w8e7r6.tmp"),
             os.path.join(metric_dir, "toy_value_sample_to_metric.idx.a_b_c_d_.tmp")]
    kept = [paths["values"] + ".tmp", os.path.join(metric_dir, "other.bin.abcdefgh.tmp"),
            os.path.join(metric_dir, "my_notes.txt")]
    for p in stale + kept:
        with open(p, "wb") as f:
            f.write(b"junk")
    with caplog.at_level("WARNING"):
        run_map(ToyDataset(100), ["toy_value"], save, batch_size=50, show_progress=False)
        run_reduce(save, ["toy_value"], show_progress=False)
    assert not any(os.path.exists(p) for p in stale)
    assert all(os.path.exists(p) for p in kept)
    assert sum("stale temp file" in r.getMessage() for r in caplog.records) == len(stale)
    assert_index_files(save, "toy_value", (np.arange(100) + 7) % 10000)
