"""examples_deepspeed/data_efficiency/bert/pile_data_download_preprocess.py on tiny local and served Pile chunks.

Chunks are made here with zstandard; outputs are checked against the tokenizer and sentence splitter applied
directly, then resumability (skip done chunks, redo a SIGKILLed one), merging and the one-line errors.
"""
from __future__ import annotations

import functools
import http.server
import importlib.util
import json
import os
import random
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import zstandard

from megatron.data.indexed_dataset import MMapIndexedDataset
from megatron.data.sentence_splitter import split_sentences
from megatron.tokenizer import build_tokenizer

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SCRIPT = os.path.join(ROOT, "examples_deepspeed", "data_efficiency", "bert", "pile_data_download_preprocess.py")
_spec = importlib.util.spec_from_file_location("_pile_preprocess", SCRIPT)
pile = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = pile  # dataclasses look their module up there
_spec.loader.exec_module(pile)

WORDS = ("river mountain Paris Alice Bob data model token Learning curriculum sentence the a of and "
         "Quick brown fox jumps over lazy dog Research Training GPU").split()


def make_docs(seed: int, n: int) -> list[str]:
    """``n`` short English documents of 2-4 mixed-case sentences."""
    rng = random.Random(seed)
    docs = []
    for _ in range(n):
        sentences = []
        for _ in range(rng.randint(2, 4)):
            words = [rng.choice(WORDS) for _ in range(rng.randint(3, 8))]
            sentences.append(" ".join([words[0].capitalize()] + words[1:]) + rng.choice(".!?"))
        docs.append(" ".join(sentences))
    return docs


def write_chunk(path, docs: list[str], frames: int = 1) -> None:
    """``{"text": ...}`` lines compressed as ``frames`` concatenated zstd frames."""
    lines = [json.dumps({"text": d}) + "\n" for d in docs]
    step = -(-len(lines) // frames)
    cctx = zstandard.ZstdCompressor(level=3)
    with open(path, "wb") as f:
        for i in range(0, len(lines), step):
            f.write(cctx.compress("".join(lines[i:i + step]).encode()))


CHUNK_DOCS = {0: make_docs(0, 30), 1: make_docs(1, 36), 2: make_docs(2, 24)}


@pytest.fixture
def src(tmp_path):
    d = tmp_path / "src"
    d.mkdir()
    for c, docs in CHUNK_DOCS.items():
        write_chunk(d / f"{c:02d}.jsonl.zst", docs, frames=2 if c == 2 else 1)
    return d


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer("BertWordPieceLowerCase", vocab_file=pile.DEFAULT_VOCAB)


@pytest.fixture(autouse=True)
def _quiet_tokenizers(monkeypatch):
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")


def expected_items(tokenizer, docs: list[str]) -> list[list[int]]:
    return [tokenizer.tokenize(s) for d in docs for s in split_sentences(d)]


def run(argv, capsys) -> tuple[int, str, str]:
    rc = pile.main([str(a) for a in argv] + ["--no-progress"])
    out, err = capsys.readouterr()
    return rc, out, err


def mtimes(out_dir, chunk=None) -> dict[str, int]:
    prefix = pile.chunk_prefix(str(out_dir), chunk) if chunk is not None else pile.merged_prefix(str(out_dir))
    return {p: os.stat(p).st_mtime_ns for p in (prefix + ".bin", prefix + ".idx", prefix + ".done.json")}


def check_dataset(prefix: str, docs_per_part: list[list[str]], tokenizer) -> MMapIndexedDataset:
    ds = MMapIndexedDataset(prefix)
    expected = [item for docs in docs_per_part for item in expected_items(tokenizer, docs)]
    n_docs = sum(len(d) for d in docs_per_part)
    assert len(ds.doc_idx) - 1 == n_docs
    assert len(ds) == len(expected) > n_docs  # split into sentences
    assert [ds[i].tolist() for i in range(len(ds))] == expected
    assert ds.dtype == np.uint16 and int(ds.sizes.sum()) and max(int(ds[i].max()) for i in range(len(ds))) < 8192
    text = tokenizer.detokenize(np.concatenate([ds[i] for i in range(len(ds))]).tolist())
    assert text == text.lower() and "paris" in text
    return ds


def test_process_merge_and_skip_done(tmp_path, src, tokenizer, capsys):
    out = tmp_path / "out"
    rc, stdout, err = run(["range", 0, 1, "--source", src, "--output-dir", out, "--workers", 2], capsys)
    assert rc == 0, err
    # merging before chunk 02 exists names it
    rc, _, err = run(["merge", "--num-chunks", 3, "--output-dir", out], capsys)
    assert rc == 2 and err.splitlines() == [err.strip()] and "chunk(s) 02 not processed" in err
    rc, _, err = run(["2", "--source", src, "--output-dir", out, "--workers", 1], capsys)
    assert rc == 0, err
    for c, docs in CHUNK_DOCS.items():
        prefix = pile.chunk_prefix(str(out), c)
        assert prefix.endswith(f"pile_bert_train_{c:02d}_text_sentence")
        ds = check_dataset(prefix, [docs], tokenizer)
        marker = json.loads(open(prefix + ".done.json").read())
        assert (marker["docs"], marker["sentences"], marker["tokens"]) == (len(docs), len(ds), int(ds.sizes.sum()))
    assert not list(out.glob("*.tmp")) and not list(out.glob("*.jsonl*"))  # nothing decompressed to disk

    rc, stdout, err = run(["merge", "--num-chunks", 3, "--output-dir", out], capsys)
    assert rc == 0, err
    merged = pile.merged_prefix(str(out))
    assert merged.endswith("pile_bert_train_text_sentence")
    check_dataset(merged, [CHUNK_DOCS[c] for c in range(3)], tokenizer)

    # a re-run skips done chunks and an up-to-date merge without touching their files
    before = {**mtimes(out, 0), **mtimes(out, 1), **mtimes(out, 2), **mtimes(out)}
    start = time.perf_counter()
    rc, stdout, _ = run(["range", 0, 2, "--source", src, "--output-dir", out], capsys)
    assert rc == 0 and stdout.count("skipping") == 3
    rc, stdout, _ = run(["merge", "--num-chunks", 3, "--output-dir", out], capsys)
    assert rc == 0 and "up to date" in stdout
    assert time.perf_counter() - start < 2.0
    assert {**mtimes(out, 0), **mtimes(out, 1), **mtimes(out, 2), **mtimes(out)} == before

    # published outputs without a marker (killed between rename and marker) are redone; merge follows
    os.remove(pile.marker_path(pile.chunk_prefix(str(out), 1)))
    rc, stdout, _ = run(["0", "1", "--source", src, "--output-dir", out], capsys)
    assert rc == 0 and "chunk 00: done already" in stdout and "chunk 01: removed" in stdout
    after = mtimes(out, 1)
    assert all(after[p] != before[p] for p in after)
    rc, stdout, _ = run(["merge", "--num-chunks", 3, "--output-dir", out], capsys)
    assert rc == 0 and "merge: 3 chunks" in stdout
    check_dataset(merged, [CHUNK_DOCS[c] for c in range(3)], tokenizer)


_KILLER = """
import importlib.util, os, signal, sys
spec = importlib.util.spec_from_file_location("pile", {script!r})
pile = importlib.util.module_from_spec(spec); sys.modules["pile"] = pile; spec.loader.exec_module(pile)
encode, calls = pile.ChunkEncoder.encode, []
def dying_encode(self, *a):
    calls.append(1)
    if len(calls) == 3:  # mid-chunk, after two batches went into the builder
        os.kill(os.getpid(), signal.SIGKILL)
    return encode(self, *a)
pile.ChunkEncoder.encode = dying_encode
sys.exit(pile.main(sys.argv[1:]))
"""


def test_killed_run_is_redone(tmp_path, src, tokenizer, capsys):
    docs = make_docs(3, 160)
    write_chunk(src / "03.jsonl.zst", docs)
    out = tmp_path / "out"
    argv = ["3", "--source", str(src), "--output-dir", str(out), "--num-chunks", "4", "--workers", "1", "--no-progress"]
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.run([sys.executable, "-c", _KILLER.format(script=SCRIPT)] + argv, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == -9, proc.stderr
    prefix = pile.chunk_prefix(str(out), 3)
    assert list(out.glob("*.tmp")) and not os.path.exists(prefix + ".idx") and not os.path.exists(prefix + ".done.json")

    rc, stdout, err = run(argv[:-1], capsys)
    assert rc == 0, err
    assert "chunk 03: removed" in stdout and not list(out.glob("*.tmp"))
    check_dataset(prefix, [docs], tokenizer)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server(src):
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(src)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


def test_http_source(tmp_path, src, server, tokenizer, capsys):
    out = tmp_path / "out"
    rc, _, err = run(["0", "--source", server, "--output-dir", out, "--keep-raw", "--workers", 1], capsys)
    assert rc == 0, err
    assert (out / "00.jsonl.zst").read_bytes() == (src / "00.jsonl.zst").read_bytes()
    rc, _, err = run(["1", "--source", server, "--output-dir", out, "--workers", 1], capsys)
    assert rc == 0, err
    assert not (out / "01.jsonl.zst").exists() and not list(out.glob("*.part"))
    check_dataset(pile.chunk_prefix(str(out), 0), [CHUNK_DOCS[0]], tokenizer)
    check_dataset(pile.chunk_prefix(str(out), 1), [CHUNK_DOCS[1]], tokenizer)
    rc, _, err = run(["5", "--source", server, "--output-dir", out], capsys)
    assert rc == 2 and err.splitlines() == [err.strip()] and "chunk 05: cannot download" in err and "HTTP 404" in err


def _bad_source(tmp_path, kind: str):
    d = tmp_path / kind
    d.mkdir()
    good = d / "good.zst"
    write_chunk(good, make_docs(9, 20))
    data = good.read_bytes()
    good.unlink()
    (d / "00.jsonl.zst").write_bytes({
        "garbage": b"this is not a zstd stream at all\n" * 4,
        "truncated": data[: len(data) // 2],
        "empty": b"",
    }.get(kind, data))
    if kind == "badjson":
        lines = [json.dumps({"text": "Fine. Line."}), '{"text": "broken', json.dumps({"text": "Never read."})]
        (d / "00.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(("\n".join(lines) + "\n").encode()))
    return d


@pytest.mark.parametrize("argv, expected", [
    (["30"], "chunk id 30 is out of range: the Pile has chunks 0..29"),
    (["range", "3", "1"], "range 3 1: the first chunk id must not exceed the last"),
    (["range", "3"], "'range' takes two chunk ids"),
    (["two"], "chunk id 'two' is not an integer"),
    (["merge", "1"], "'merge' takes no chunk ids"),
    (["1", "--workers", "0"], "--workers must be >= 1"),
    (["1", "--bogus"], "unrecognized arguments: --bogus"),
    (["5", "--source", "{src}"], "chunk 05: source file {src}/05.jsonl.zst not found"),
    (["0", "--source", "{tmp}/nowhere"], "--source {tmp}/nowhere: not a directory"),
    (["merge", "--output-dir", "{tmp}/empty"], "merge: chunk(s) 00-29 not processed"),
    (["0", "--source", "{garbage}"], "chunk 00: {garbage}/00.jsonl.zst is not a valid zstd file"),
    (["0", "--source", "{truncated}"], "chunk 00: {truncated}/00.jsonl.zst is empty or truncated"),
    (["0", "--source", "{empty}"], "chunk 00: {empty}/00.jsonl.zst is empty or truncated"),
    (["0", "--source", "{badjson}"], "chunk 00: {badjson}/00.jsonl.zst:2: malformed JSON"),
])
def test_errors_are_one_line(tmp_path, src, capsys, argv, expected):
    names = {"src": str(src), "tmp": str(tmp_path)}
    for kind in ("garbage", "truncated", "empty", "badjson"):
        if "{" + kind + "}" in expected:
            names[kind] = str(_bad_source(tmp_path, kind))
    argv = [a.format(**names) for a in argv]
    if "--output-dir" not in argv:
        argv += ["--output-dir", str(tmp_path / "out")]
    rc, _, err = run(argv, capsys)
    assert rc == 2
    assert err.splitlines() == [f"error: {err[len('error: '):].strip()}"], err
    assert expected.format(**names) in err
    assert not list((tmp_path / "out").glob("*.tmp")) if (tmp_path / "out").exists() else True
    if "{garbage}" in expected or "{badjson}" in expected:  # a failed chunk publishes nothing
        assert not list((tmp_path / "out").glob("*.bin"))
