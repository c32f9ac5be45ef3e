"""tools/preprocess_data.py end to end on the bundled corpus, bad-input errors, and the sentence splitter."""
from __future__ import annotations

import gzip
import importlib.util
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from megatron.data import preprocessing
from megatron.data.indexed_dataset import MMapIndexedDataset
from megatron.data.sentence_splitter import split_sentences
from megatron.tokenizer import build_tokenizer

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CORPUS = os.path.join(ROOT, "data", "corpus", "python_docs.jsonl.gz")
VOCAB = os.path.join(ROOT, "data", "tokenizers", "gpt2-bpe", "vocab.json")
MERGES = os.path.join(ROOT, "data", "tokenizers", "gpt2-bpe", "merges.txt")
N_DOCS = 200


def _load_tool(name: str):
    spec = importlib.util.spec_from_file_location(f"_tool_{name}", os.path.join(ROOT, "tools", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


tool = _load_tool("preprocess_data")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """The first N_DOCS lines of the bundled corpus as .jsonl and .jsonl.gz, plus their texts."""
    d = tmp_path_factory.mktemp("corpus")
    with gzip.open(CORPUS, "rb") as f:
        lines = [next(f) for _ in range(N_DOCS)]
    plain, gz = str(d / "docs.jsonl"), str(d / "docs.jsonl.gz")
    with open(plain, "wb") as f:
        f.writelines(lines)
    with gzip.open(gz, "wb") as f:
        f.writelines(lines)
    return {"jsonl": plain, "gz": gz, "lines": lines, "texts": [json.loads(x)["text"] for x in lines]}


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer("GPT2BPETokenizer", vocab_file=VOCAB, merge_file=MERGES)


def run(input_path: str, out_prefix: str, *extra: str) -> int:
    return tool.main(["--input", input_path, "--output-prefix", out_prefix, "--tokenizer-type", "GPT2BPETokenizer",
                      "--vocab-file", VOCAB, "--merge-file", MERGES, "--no-progress", *extra])


def read_bytes(prefix: str) -> tuple[bytes, bytes]:
    return open(prefix + ".bin", "rb").read(), open(prefix + ".idx", "rb").read()


def test_document_level_equals_tokenize_plus_eod(tmp_path, corpus, tok, capsys):
    assert run(corpus["jsonl"], str(tmp_path / "c"), "--append-eod") == 0
    ds = MMapIndexedDataset(str(tmp_path / "c_text_document"))
    assert ds.dtype == np.uint16 and len(ds) == N_DOCS
    assert ds.doc_idx.tolist() == list(range(N_DOCS + 1))
    expected = [tok.tokenize(t) for t in corpus["texts"]]
    for i in range(N_DOCS):
        assert ds[i].tolist() == expected[i] + [tok.eod]
    total = sum(len(x) + 1 for x in expected)
    out = capsys.readouterr().out
    assert f"docs={N_DOCS} " in out and f"items={N_DOCS} " in out and f"tokens={total} " in out
    assert "MB/s=" in out and "tokens/s=" in out


def test_without_eod_and_two_keys(tmp_path, corpus, tok):
    assert run(corpus["jsonl"], str(tmp_path / "k"), "--json-keys", "text", "source") == 0
    text = MMapIndexedDataset(str(tmp_path / "k_text_document"))
    source = MMapIndexedDataset(str(tmp_path / "k_source_document"))
    assert text[5].tolist() == tok.tokenize(corpus["texts"][5])
    assert source[7].tolist() == tok.tokenize(json.loads(corpus["lines"][7])["source"])


def test_gzip_and_workers_give_identical_bytes(tmp_path, corpus):
    assert run(corpus["jsonl"], str(tmp_path / "w1"), "--append-eod", "--workers", "1") == 0
    assert run(corpus["gz"], str(tmp_path / "w2"), "--append-eod", "--workers", "2", "--chunk-size", "7") == 0
    assert read_bytes(str(tmp_path / "w1_text_document")) == read_bytes(str(tmp_path / "w2_text_document"))


def test_split_sentences_doc_idx_marks_documents(tmp_path, corpus, tok):
    assert run(corpus["jsonl"], str(tmp_path / "s"), "--split-sentences", "--append-eod", "--workers", "2",
               "--chunk-size", "16") == 0
    ds = MMapIndexedDataset(str(tmp_path / "s_text_sentence"))
    doc_idx = ds.doc_idx.tolist()
    assert len(doc_idx) == N_DOCS + 1 and doc_idx[-1] == len(ds) and len(ds) > 3 * N_DOCS
    for d in (0, 1, 57, N_DOCS - 1):
        sentences = [s for s in split_sentences(corpus["texts"][d]) if tok.tokenize(s)]
        items = [ds[i].tolist() for i in range(doc_idx[d], doc_idx[d + 1])]
        assert items == [tok.tokenize(s) for s in sentences[:-1]] + [tok.tokenize(sentences[-1]) + [tok.eod]]


def test_keep_newlines_sentences_rebuild_the_document(tmp_path, corpus, tok):
    assert run(corpus["jsonl"], str(tmp_path / "n"), "--split-sentences", "--keep-newlines") == 0
    ds = MMapIndexedDataset(str(tmp_path / "n_text_sentence"))
    doc_idx = ds.doc_idx.tolist()
    for d in range(0, N_DOCS, 13):
        ids = np.concatenate(ds[doc_idx[d]:doc_idx[d + 1]]).tolist()
        assert tok.detokenize(ids) == corpus["texts"][d]


def _write_lines(path, lines: list[bytes]) -> str:
    with open(path, "wb") as f:
        f.writelines(lines)
    return str(path)


BAD_LINES = {
    "malformed json": (b'{"text": "abc"\n', r"malformed JSON: Expecting ',' delimiter"),
    "not an object": (b'["text", "abc"]\n', "expected a JSON object, got list"),
    "missing key": (b'{"body": "abc"}\n', "missing key 'text'"),
    "non-string value": (b'{"text": 42}\n', "key 'text' holds a int, expected a string"),
    "invalid utf-8": (b'{"text": "caf\xe9"}\n', "invalid UTF-8 at byte offset 13 "),
    "lone surrogate": (b'{"text": "a\\ud800b"}\n', "unpaired surrogate"),
}


@pytest.mark.parametrize("case", sorted(BAD_LINES))
@pytest.mark.parametrize("workers", ["1", "2"])
def test_bad_line_gives_one_clear_error_and_no_output(tmp_path, corpus, capsys, case, workers):
    bad, message = BAD_LINES[case]
    lines = corpus["lines"][:40] + [bad] + corpus["lines"][40:60]
    src = _write_lines(tmp_path / "bad.jsonl", lines)
    out_dir = tmp_path / "out"
    assert run(src, str(out_dir / "x"), "--workers", workers, "--chunk-size", "8") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {src}:41: ")
    assert re.search(message, err[0])
    assert os.listdir(out_dir) == []


def test_skip_bad_lines_counts_and_skips(tmp_path, corpus, tok, capsys):
    lines = corpus["lines"][:10] + [b'{"text": 1}\n', b"\n", b"not json\n", b'{"text": ""}\n'] + corpus["lines"][10:20]
    src = _write_lines(tmp_path / "mixed.jsonl", lines)
    assert run(src, str(tmp_path / "m"), "--skip-bad-lines", "--workers", "2", "--chunk-size", "3") == 0
    captured = capsys.readouterr()
    assert "docs=21 empty_docs_skipped=1 bad_lines_skipped=2 blank_lines=1 items=20 " in captured.out
    assert "skipped 2 bad line(s)" in captured.err and f"{src}:11: key 'text' holds a int" in captured.err
    assert f"{src}:13: malformed JSON" in captured.err
    ds = MMapIndexedDataset(str(tmp_path / "m_text_document"))
    assert len(ds) == 20 and ds.doc_idx.tolist() == list(range(21))
    assert ds[10].tolist() == tok.tokenize(corpus["texts"][10])


def test_empty_documents_are_skipped_but_counted(tmp_path, capsys):
    src = _write_lines(tmp_path / "e.jsonl", [b'{"text": "hello"}\n', b'{"text": ""}\n', b'{"text": "world"}\n'])
    assert run(src, str(tmp_path / "e"), "--append-eod") == 0
    assert "docs=3 empty_docs_skipped=1 " in capsys.readouterr().out
    ds = MMapIndexedDataset(str(tmp_path / "e_text_document"))
    assert len(ds) == 2 and ds.doc_idx.tolist() == [0, 1, 2]


def test_utf8_bom_on_first_line_is_accepted(tmp_path, tok):
    src = _write_lines(tmp_path / "bom.jsonl", [b'\xef\xbb\xbf{"text": "caf\xc3\xa9"}\n'])
    assert run(src, str(tmp_path / "b")) == 0
    assert MMapIndexedDataset(str(tmp_path / "b_text_document"))[0].tolist() == tok.tokenize("caf\u00e9")


def test_token_ids_that_do_not_fit_the_dtype(tmp_path, corpus, capsys, monkeypatch):
    monkeypatch.setattr(preprocessing, "best_fitting_dtype", lambda vocab_size: np.dtype(np.uint8))
    src = _write_lines(tmp_path / "t.jsonl", [b'{"text": "a"}\n', b'{"text": "zzzz the documentation"}\n'])
    assert run(src, str(tmp_path / "out" / "t")) == 2
    err = capsys.readouterr().err
    assert f"error: {src}:2: token id " in err and "does not fit the output dtype uint8" in err
    assert os.listdir(tmp_path / "out") == []


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--dataset-impl", "lazy"], "--dataset-impl 'lazy' is not supported"),
        (["--workers", "0"], "--workers must be >= 1"),
        (["--lang", "german"], "--lang 'german' is not supported"),
    ],
)
def test_bad_flags(tmp_path, corpus, capsys, extra, message):
    assert run(corpus["jsonl"], str(tmp_path / "f"), *extra) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {message}")
    assert not os.path.exists(tmp_path / "f_text_document.bin")


def test_missing_input_and_tokenizer_file(tmp_path, capsys):
    assert run(str(tmp_path / "none.jsonl"), str(tmp_path / "o")) == 2
    assert "error: --input" in capsys.readouterr().err
    src = _write_lines(tmp_path / "a.jsonl", [b'{"text": "a"}\n'])
    rc = tool.main(["--input", src, "--output-prefix", str(tmp_path / "o"), "--tokenizer-type", "GPT2BPETokenizer",
                    "--vocab-file", str(tmp_path / "nope.json"), "--merge-file", MERGES])
    assert rc == 2 and "nope.json" in capsys.readouterr().err


def test_cli_subprocess(tmp_path, corpus):
    out = str(tmp_path / "sub")
    cmd = [sys.executable, os.path.join(ROOT, "tools", "preprocess_data.py"), "--input", corpus["gz"], "--output-prefix",
           out, "--tokenizer-type", "GPT2BPETokenizer", "--vocab-file", VOCAB, "--merge-file", MERGES, "--append-eod",
           "--workers", "2"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert f"docs={N_DOCS} " in proc.stdout and "preprocess" in proc.stderr  # the progress bar
    assert run(corpus["jsonl"], str(tmp_path / "inproc"), "--append-eod") == 0
    assert read_bytes(out + "_text_document") == read_bytes(str(tmp_path / "inproc_text_document"))
    bad = _write_lines(tmp_path / "bad.jsonl", [b'{"text": "ok"}\n', b"{oops\n"])
    proc = subprocess.run(cmd[:3] + [bad] + cmd[4:], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].startswith(f"error: {bad}:2: malformed JSON")
    assert "Traceback" not in proc.stderr


# ---------------------------------------------------------------------------------- sentence splitter


def test_splitter_rules():
    text = ("Hello world. Mr. Smith paid 3.14 dollars, e.g. for tea! Really? Yes... And then J. R. Tolkien "
            "arrived. See Fig. 3 for details.")
    assert split_sentences(text) == [
        "Hello world.", "Mr. Smith paid 3.14 dollars, e.g. for tea!", "Really?", "Yes...",
        "And then J. R. Tolkien arrived.", "See Fig. 3 for details.",
    ]
    assert split_sentences('He said "Stop." Then he left. version 2.0 is out. lower case stays') == [
        'He said "Stop."', "Then he left. version 2.0 is out. lower case stays",
    ]


def test_splitter_newline_rules():
    text = "\n  First line\nwraps here. Second one.\n\nno period paragraph\ncontinues\n"
    assert split_sentences(text) == ["First line wraps here.", "Second one.", "no period paragraph continues"]
    kept = split_sentences(text, keep_newlines=True)
    assert kept == ["\n  First line\nwraps here. ", "Second one.\n\n", "no period paragraph\ncontinues\n"]
    assert "".join(kept) == text
    assert split_sentences(" \n\t ") == [] and split_sentences(" \n ", keep_newlines=True) == []


def test_inspect_dataset_tool(tmp_path, capsys):
    src = _write_lines(tmp_path / "i.jsonl", [b'{"text": "Hello there."}\n', b'{"text": "Bye."}\n'])
    assert run(src, str(tmp_path / "i"), "--append-eod") == 0
    capsys.readouterr()
    inspect = _load_tool("inspect_dataset")
    prefix = str(tmp_path / "i_text_document")
    assert inspect.main([prefix, "--tokenizer-type", "GPT2BPETokenizer", "--vocab-file", VOCAB, "--merge-file", MERGES]) == 0
    out = capsys.readouterr().out
    assert "version=1 dtype_code=8 N=2 D=3" in out and "dtype       uint16" in out
    assert "text: 'Hello there.<|endoftext|>'" in out
    assert inspect.main([str(tmp_path / "missing")]) == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_truncated_gzip_input(tmp_path, corpus, capsys):
    data = open(corpus["gz"], "rb").read()
    src = tmp_path / "cut.jsonl.gz"
    src.write_bytes(data[: len(data) // 2])
    assert run(str(src), str(tmp_path / "out" / "g"), "--workers", "2") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {src}: cannot read input near line ")
    assert os.listdir(tmp_path / "out") == []


@pytest.mark.parametrize("content", [b"", b"\n\n"])
def test_empty_input_is_an_error_naming_the_file(tmp_path, capsys, content):
    """An empty input (or only blank lines) is one error line naming the file, exit 2, no dataset written."""
    src = tmp_path / "empty.jsonl"
    src.write_bytes(content)
    out = tmp_path / "out"
    assert run(str(src), str(out / "e")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: --input {src}: the file ")
    assert os.listdir(out) == []


def test_stale_temp_files_of_the_same_output_are_removed(tmp_path, corpus, caplog):
    """Temp files a SIGKILLed run left for this output prefix are removed (and logged); others are kept."""
    out = tmp_path / "out"
    out.mkdir()
    stale = [out / "x_text_document.bin.ab3_9xyz.tmp", out / "x_text_document.idx.k2l5m8n0.tmp"]
    kept = [out / "y_text_document.bin.ab3_9xyz.tmp", out / "x_text_document.bin.notours.tmp",
            out / "x_text_document_v2.bin.ab3_9xyz.tmp", out / "notes.txt"]
    for p in stale + kept:
        p.write_bytes(b"junk")
    src = _write_lines(tmp_path / "s.jsonl", corpus["lines"][:5])
    with caplog.at_level("WARNING"):
        assert run(src, str(out / "x")) == 0
    assert not any(p.exists() for p in stale)
    assert all(p.exists() for p in kept)
    assert sorted(os.listdir(out)) == sorted([p.name for p in kept] + ["x_text_document.bin", "x_text_document.idx"])
    removed = [r.getMessage() for r in caplog.records if "stale temp file" in r.getMessage()]
    assert len(removed) == 2 and all(str(p) in " ".join(removed) for p in stale)
