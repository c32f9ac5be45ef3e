"""A GPT-2-format vocab/merges trained elsewhere (HF ``ByteLevelBPETokenizer``) through tools/preprocess_data.py.

The ``.bin``/``.idx`` files are read back by a minimal reader written here from spec §1.1/§1.2 only (struct +
numpy, nothing imported from ``megatron.data``) and every item is compared with HF ``tokenizers``' own encoding
of the same text (ByteLevel pre-tokenizer, no prefix space) plus the EOD id.  HF's files differ from ours: its
merges.txt starts with a ``#version`` line and its vocab.json puts ``<|endoftext|>`` first (id 0).
"""
from __future__ import annotations

import gzip
import importlib.util
import json
import os
import struct

import numpy as np
import pytest
from tokenizers import ByteLevelBPETokenizer, Tokenizer, models, pre_tokenizers

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CORPUS = os.path.join(ROOT, "data", "corpus", "python_docs.jsonl.gz")
EOD = "<|endoftext|>"
EXTRA_DOCS = ["Café naïve — “quotes” and ‘more’, 日本語のテキスト, emoji 😀👍🏽.\n\nZweiter Absatz: Straße.",
              "Tabs\tand  spaces,\r\nCRLF lines, a literal <|endoftext|> inside text. Next sentence here!"]

spec = importlib.util.spec_from_file_location("_tool_preprocess_data_ext", os.path.join(ROOT, "tools", "preprocess_data.py"))
tool = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tool)

# ------------------------------------------------------------------ independent reader (spec §1.1 / §1.2)
MEGATRON_DTYPE_CODES = {1: "u1", 2: "i1", 3: "<i2", 4: "<i4", 5: "<i8", 6: "<f8", 7: "<f4", 8: "<u2"}


def read_mmidx(prefix: str) -> dict:
    """Parse prefix.idx/.bin by the spec: header, sizes, pointers, doc_idx, items."""
    with open(prefix + ".idx", "rb") as f:
        idx = f.read()
    with open(prefix + ".bin", "rb") as f:
        data = f.read()
    magic, version, code, n, d = struct.unpack_from("<9sQBQQ", idx, 0)
    assert len(idx) == 34 + 12 * n + 8 * d, "idx size does not match N and D"
    sizes = np.frombuffer(idx, "<i4", n, 34)
    pointers = np.frombuffer(idx, "<i8", n, 34 + 4 * n)
    doc_idx = np.frombuffer(idx, "<i8", d, 34 + 12 * n)
    dtype = np.dtype(MEGATRON_DTYPE_CODES[code])
    items = [np.frombuffer(data, dtype, int(s), int(p)).tolist() for s, p in zip(sizes, pointers)]
    return {"magic": magic, "version": version, "code": code, "dtype": dtype, "sizes": sizes,
            "pointers": pointers, "doc_idx": doc_idx, "items": items, "bin_size": len(data)}


def check_layout(r: dict) -> None:
    """Header and index invariants of spec §1.1."""
    assert r["magic"] == b"MMIDIDX\x00\x00" and r["version"] == 1
    elements = np.concatenate([[0], np.cumsum(r["sizes"], dtype=np.int64)])
    assert np.array_equal(r["pointers"], elements[:-1] * r["dtype"].itemsize)  # exclusive prefix sum, in bytes
    assert r["bin_size"] == elements[-1] * r["dtype"].itemsize  # .bin has no header and no slack
    assert r["doc_idx"][0] == 0 and r["doc_idx"][-1] == len(r["sizes"]) and (np.diff(r["doc_idx"]) > 0).all()


# ------------------------------------------------------------------ fixtures
def _hf_train(texts: list[str], out_dir: str, vocab_size: int, specials: list[str]) -> tuple[str, str]:
    trainer = ByteLevelBPETokenizer(add_prefix_space=False)
    trainer.train_from_iterator(texts, vocab_size=vocab_size, min_frequency=2, special_tokens=specials,
                                show_progress=False)
    os.makedirs(out_dir, exist_ok=True)
    vocab, merges = trainer.save_model(out_dir)
    return vocab, merges


def _hf_encoder(vocab: str, merges: str) -> Tokenizer:
    tok = Tokenizer(models.BPE.from_file(vocab, merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    return tok


@pytest.fixture(scope="module")
def ext(tmp_path_factory) -> dict:
    """HF-trained vocab/merges (on ~10 KB of the bundled corpus) and a small jsonl (+ .gz) to preprocess."""
    d = tmp_path_factory.mktemp("external")
    with gzip.open(CORPUS, "rt", encoding="utf-8") as f:
        texts = [json.loads(line)["text"] for _, line in zip(range(20), f)]
    texts += EXTRA_DOCS
    vocab, merges = _hf_train(texts[:10], str(d / "hf"), 600, [EOD])
    jsonl = str(d / "docs.jsonl")
    with open(jsonl, "w", encoding="utf-8") as f:
        for t in texts:
            f.write(json.dumps({"text": t}, ensure_ascii=False) + "\n")
    with open(jsonl, "rb") as src, gzip.open(jsonl + ".gz", "wb") as dst:
        dst.write(src.read())
    return {"dir": d, "texts": texts, "vocab": vocab, "merges": merges, "jsonl": jsonl}


def preprocess(ext: dict, prefix: str, *extra: str, vocab: str | None = None, inp: str | None = None) -> int:
    return tool.main(["--input", inp or ext["jsonl"], "--output-prefix", prefix, "--tokenizer-type", "GPT2BPETokenizer",
                      "--vocab-file", vocab or ext["vocab"], "--merge-file", ext["merges"], "--no-progress", *extra])


# ------------------------------------------------------------------ tests
def test_hf_files_differ_from_ours_in_the_ways_that_matter(ext):
    with open(ext["merges"], encoding="utf-8") as f:
        assert f.readline().startswith("#version")
    with open(ext["vocab"], encoding="utf-8") as f:
        assert json.load(f)[EOD] == 0  # HF puts special tokens first; GPT-2's files put it last


def test_document_level_items_equal_hf_encoding_plus_eod(ext, tmp_path):
    prefix = str(tmp_path / "ext")
    assert preprocess(ext, prefix, "--append-eod") == 0
    r = read_mmidx(prefix + "_text_document")
    check_layout(r)
    assert r["code"] == 8 and r["dtype"] == np.dtype("<u2")  # vocab 600 < 65500 -> uint16, Megatron code 8
    hf = _hf_encoder(ext["vocab"], ext["merges"])
    want = [e.ids + [0] for e in hf.encode_batch(ext["texts"], add_special_tokens=False)]
    assert np.array_equal(r["doc_idx"], np.arange(len(ext["texts"]) + 1))
    assert r["items"] == want


def test_gzip_input_and_two_workers_give_identical_files(ext, tmp_path):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    assert preprocess(ext, a, "--append-eod") == 0
    assert preprocess(ext, b, "--append-eod", "--workers", "2", "--chunk-size", "3", inp=ext["jsonl"] + ".gz") == 0
    for suffix in (".bin", ".idx"):
        with open(a + "_text_document" + suffix, "rb") as fa, open(b + "_text_document" + suffix, "rb") as fb:
            assert fa.read() == fb.read()


@pytest.mark.parametrize("vocab_size, code, dtype", [(65499, 8, "<u2"), (65500, 4, "<i4")])
def test_dtype_rule_uint16_below_65500_else_int32(ext, tmp_path, vocab_size, code, dtype):
    with open(ext["vocab"], encoding="utf-8") as f:
        vocab = json.load(f)
    for i in range(vocab_size - len(vocab)):  # unreachable extra tokens: ids stay those of the trained vocab
        vocab[f"<extra_{i}>"] = len(vocab)
    big = str(tmp_path / "big_vocab.json")
    with open(big, "w", encoding="utf-8") as f:
        json.dump(vocab, f)
    prefix = str(tmp_path / "big")
    assert preprocess(ext, prefix, "--append-eod", vocab=big) == 0
    r = read_mmidx(prefix + "_text_document")
    check_layout(r)
    assert r["code"] == code and r["dtype"] == np.dtype(dtype)
    hf = _hf_encoder(big, ext["merges"])
    assert r["items"] == [e.ids + [0] for e in hf.encode_batch(ext["texts"], add_special_tokens=False)]


def test_sentence_level_items_are_hf_encodings_of_the_sentences(ext, tmp_path):
    prefix = str(tmp_path / "sent")
    assert preprocess(ext, prefix, "--append-eod", "--split-sentences", "--keep-newlines") == 0
    r = read_mmidx(prefix + "_text_sentence")
    check_layout(r)
    hf = _hf_encoder(ext["vocab"], ext["merges"])
    assert len(r["doc_idx"]) == len(ext["texts"]) + 1
    assert len(r["sizes"]) > 2 * len(ext["texts"])  # really split into sentences
    spans_of = item_decoder(ext["vocab"])
    for d, text in enumerate(ext["texts"]):
        items = r["items"][r["doc_idx"][d]:r["doc_idx"][d + 1]]
        assert items[-1][-1] == 0  # EOD closes the document's last sentence
        items[-1] = items[-1][:-1]
        spans = [spans_of(x) for x in items]
        assert "".join(spans) == text  # --keep-newlines: sentences are consecutive spans of the document
        assert [hf.encode(s, add_special_tokens=False).ids for s in spans] == items


def test_vocab_without_endoftext_is_one_clear_error(ext, tmp_path, capsys):
    vocab, _ = _hf_train(ext["texts"][:10], str(tmp_path / "noeod"), 600, [])
    prefix = str(tmp_path / "noeod_out")
    assert preprocess(ext, prefix, "--append-eod", vocab=vocab) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --vocab-file") and vocab in err and EOD in err and "Traceback" not in err
    assert not [p for p in os.listdir(tmp_path) if p.startswith("noeod_out")]


# ------------------------------------------------------------------ helpers
def item_decoder(vocab_file: str):
    """ids -> text through GPT-2's byte <-> printable-character map, rebuilt here (printable Latin-1 bytes map to
    themselves, the other 68 bytes to U+0100.. in byte order)."""
    keep = {*range(33, 127), *range(161, 173), *range(174, 256)}
    char_to_byte, extra = {}, 0
    for b in range(256):
        if b in keep:
            char_to_byte[chr(b)] = b
        else:
            char_to_byte[chr(256 + extra)] = b
            extra += 1
    with open(vocab_file, encoding="utf-8") as f:
        inv = {i: t for t, i in json.load(f).items()}
    return lambda ids: bytes(char_to_byte[c] for i in ids for c in inv[i]).decode("utf-8")
