"""Tokenizers: engine == pure-Python reference ids, round trips, special ids, padding, errors, training."""
from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import subprocess
import sys
import unicodedata

import pytest

from megatron.tokenizer import TOKENIZERS, AbstractTokenizer, build_tokenizer, build_tokenizer_from_args
from megatron.tokenizer.base import TokenizerError, vocab_size_with_padding
from megatron.tokenizer.bert_wordpiece import ENGINE_DIVERGENT_CHARS, build_wordpiece_engine, read_vocab_txt
from megatron.tokenizer.bpe_cache import (GPT2_ASCII_REGEX, GROUP_TEXTS, WHITESPACE_SCAN_LIMIT, FragmentCache,
                                          fragment_pattern, regex_whitespace)
from megatron.tokenizer.gpt2_bpe import GPT2BPETokenizer, needs_reference
from megatron.tokenizer.reference_bpe import GPT2_REGEX, ReferenceGPT2BPE, byte_alphabet, bytes_to_unicode
from megatron.tokenizer.reference_wordpiece import ReferenceBertTokenizer
from megatron.tokenizer.train import iter_jsonl_texts

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CORPUS = os.path.join(ROOT, "data", "corpus", "python_docs.jsonl.gz")
TOK_DIR = os.path.join(ROOT, "data", "tokenizers")
GPT2_VOCAB = os.path.join(TOK_DIR, "gpt2-bpe", "vocab.json")
GPT2_MERGES = os.path.join(TOK_DIR, "gpt2-bpe", "merges.txt")
BERT_VOCAB = os.path.join(TOK_DIR, "bert-wordpiece", "vocab.txt")
SPM_MODEL = os.path.join(TOK_DIR, "spm", "spm.model")
TRAIN_TOOL = os.path.join(ROOT, "tools", "train_tokenizer.py")

# Hand-picked hard cases: contractions, whitespace runs, code, unicode, emoji, special-token text.
HAND_PICKED = [
    "", " ", "  ", "\n", "\n\n\n", "\t\t x", "a  b   c    d", "trailing   ", "   leading", " \n \n ",
    "I'm you're we've he'll she'd it's DON'T 'S ''s 'll'", "rock 'n' roll", "x'''y",
    "def f(x):\n    return x ** 2  # square\n\n\tif a != b: pass\r\n",
    "for i in range(10):\n        print(f\"{i:>3}\")", "1234567890 3.14159 1e-10 0x1F 1,000,000",
    "café naïve Ångström résumé façade", "e\u0301 combining acute, ñ vs n\u0303", "Straße ß ẞ",
    "日本語のテキスト 中文字符 한국어", "\U0002B820\U0002B8F9 ext-E ideographs", "Привет мир", "مرحبا بالعالم",
    "emoji 👍🏽 🎉 👨‍👩‍👧 🇫🇷 ❤️", "zero\u200bwidth\u200djoiner", "nbsp\xa0here\u2028line\u2029para",
    "<|endoftext|>", "before<|endoftext|>after", "[CLS] [SEP] [MASK] <MASK> <EOD>",
    "null\x00byte and \x07bell \x1b[0m ansi", "tabs\tand\x0bvertical\x0cform", "\ufeffBOM start",
    "superlong" * 30, "a" * 250 + " short", "y" * 150 + " word of 150 chars", "mixed123abc 456def",
    "ⅷ ² ½ ① numerals",
    "punct!!! ??? ... --- ___ *** ### @@@ $$$ %%% ^^^ &&& (()) [[]] {{}} <<>> ||| \\\\ //",
    "U+166D ᙭ U+1734 ᜴ U+11938 𑤸 U+111C9 𑇉",
]


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    """The first 300 documents of the bundled corpus plus the hand-picked strings."""
    texts = []
    with gzip.open(CORPUS, "rt", encoding="utf-8") as f:
        for line in f:
            texts.append(json.loads(line)["text"])
            if len(texts) == 300:
                break
    return texts + HAND_PICKED


@pytest.fixture(scope="module")
def gpt2() -> AbstractTokenizer:
    return build_tokenizer("GPT2BPETokenizer", vocab_file=GPT2_VOCAB, merge_file=GPT2_MERGES)


@pytest.fixture(scope="module")
def bert_lower() -> AbstractTokenizer:
    return build_tokenizer("BertWordPieceLowerCase", vocab_file=BERT_VOCAB)


@pytest.fixture(scope="module")
def bert_case() -> AbstractTokenizer:
    return build_tokenizer("BertWordPieceCase", vocab_file=BERT_VOCAB)


@pytest.fixture(scope="module")
def spm_tok() -> AbstractTokenizer:
    return build_tokenizer("SentencePieceTokenizer", tokenizer_model=SPM_MODEL)


def random_unicode(rng: random.Random, n: int) -> str:
    """A random string mixing ASCII, whitespace, BMP, astral (incl. unassigned) code points."""
    out = []
    for _ in range(n):
        r = rng.random()
        if r < 0.3:
            out.append(chr(rng.randint(0, 0x7F)))
        elif r < 0.45:
            out.append(rng.choice(" \t\n\r\x0b\x0c\x1c\x85\xa0\u1680\u2000\u2028\u202f\u3000\u200b\ufeff"))
        elif r < 0.75:
            out.append(chr(rng.randint(0x80, 0xD7FF)))
        else:
            cp = rng.randint(0xE000, 0x10FFFF)
            out.append(chr(cp))
    return "".join(out)


# ---------------------------------------------------------------- GPT-2 BPE
def test_gpt2_engine_ids_equal_reference_on_corpus(gpt2, corpus):
    ref = ReferenceGPT2BPE.from_files(GPT2_VOCAB, GPT2_MERGES)
    assert not any(needs_reference(t) for t in corpus)  # so the old path below uses HF's pipeline only
    got = gpt2.tokenize_batch(corpus)
    assert sum(map(len, got)) > 100_000
    for text, ids in zip(corpus, got):
        assert ids == ref.encode(text), text[:80]
    assert gpt2.tokenize_batch_engine(corpus) == got


def test_gpt2_single_and_batch_agree(gpt2, corpus):
    for text, ids in zip(corpus[:50], gpt2.tokenize_batch(corpus[:50])):
        assert gpt2.tokenize(text) == ids


def test_gpt2_round_trip_corpus_and_random_unicode(gpt2, corpus):
    ref = ReferenceGPT2BPE.from_files(GPT2_VOCAB, GPT2_MERGES)
    for text in corpus:
        assert gpt2.detokenize(gpt2.tokenize(text)) == text
    rng = random.Random(1234)
    texts = [random_unicode(rng, rng.randint(0, 40)) for _ in range(400)]
    for text, ids in zip(texts, gpt2.tokenize_batch(texts)):
        assert ids == ref.encode(text), repr(text)
        assert gpt2.detokenize(ids) == text


def test_gpt2_endoftext_text_is_not_special(gpt2):
    ids = gpt2.tokenize("a<|endoftext|>b")
    assert gpt2.eod not in ids
    assert gpt2.detokenize(ids + [gpt2.eod]) == "a<|endoftext|>b<|endoftext|>"


def test_gpt2_vocab_layout_and_special_ids(gpt2):
    assert gpt2.vocab_size == 8192 and gpt2.padded_vocab_size == 8192
    assert gpt2.eod == gpt2.vocab["<|endoftext|>"] == 8191
    assert [gpt2.inv_vocab[i] for i in range(256)] == byte_alphabet()
    with open(GPT2_MERGES, encoding="utf-8") as f:
        assert f.readline().startswith("#version")
    assert gpt2.detokenize([gpt2.vocab["Ġ"]]) == " "


def test_gpt2_engine_pretokenizer_agrees_with_regex_on_assigned_code_points():
    """Guard for needs_reference(): only code points unassigned in Python's tables may diverge."""
    from tokenizers import pre_tokenizers
    byte_enc = bytes_to_unicode()
    pre = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    chars = [chr(cp) for cp in range(0x80, 0x110000, 2)
             if not 0xD800 <= cp <= 0xDFFF and unicodedata.category(chr(cp)) != "Cn"]
    for i in range(0, len(chars), 64):
        s = "".join(f"a{c}a {c}1 {c}{c} x\n" for c in chars[i:i + 64])
        expected = ["".join(byte_enc[b] for b in p.encode("utf-8")) for p in GPT2_REGEX.findall(s)]
        assert [w for w, _ in pre.pre_tokenize_str(s)] == expected, s[:40]


def test_gpt2_unassigned_code_points_use_reference(gpt2):
    text = "a\u0558a \U0002B73A1"  # assigned after Unicode 14: the two regex tables may differ here
    assert needs_reference(text)
    ref = ReferenceGPT2BPE.from_files(GPT2_VOCAB, GPT2_MERGES)
    assert gpt2.tokenize(text) == gpt2.tokenize_batch_engine([text])[0] == ref.encode(text)


# Characters that stress the fragment cut: every kind of whitespace (incl. \x1c-\x1f, which `str.isspace`
# calls whitespace but GPT-2's regex does not), letters, digits, symbols, contraction parts.
TRICKY = list(" \t\n\r\x0b\x0c\x1c\x1f\x85\xa0\u2028\u3000a1'stremvld\xe9\u4e2d!.,_\x00") + [
    "'s", "'re", "'ll", " '", "  ", "\n\n    ", "\U0001F600"]


def test_gpt2_fragment_cut_is_exact():
    """Fragments encoded alone give the same GPT-2 pre-tokens as the whole text (what the cache relies on)."""
    split = fragment_pattern().findall
    rng = random.Random(5)
    for _ in range(20_000):
        text = "".join(rng.choice(TRICKY) for _ in range(rng.randint(0, 14)))
        fragments = split(text)
        assert "".join(fragments) == text
        assert [p for f in fragments for p in GPT2_REGEX.findall(f)] == GPT2_REGEX.findall(text), repr(text)


def test_gpt2_ascii_pattern_equals_gpt2_regex():
    rng = random.Random(6)
    alphabet = [chr(i) for i in range(128)] + ["'s", "'re", "'ll", "'ve", "'m", "'d", "'t", "  ", "\n\n"]
    for _ in range(20_000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 20)))
        assert GPT2_ASCII_REGEX.findall(text) == GPT2_REGEX.findall(text), repr(text)


def test_gpt2_whitespace_scan_limit_covers_all_code_points():
    """Guard for WHITESPACE_SCAN_LIMIT: the installed `regex` has no \\s above it."""
    assert regex_whitespace(0x110000) == regex_whitespace() == regex_whitespace(WHITESPACE_SCAN_LIMIT)
    assert "\x1c" not in regex_whitespace() and "\u3000" in regex_whitespace()


def count_bpe_calls(tok: GPT2BPETokenizer) -> list[int]:
    """Wrap the encoder's BPE function; the returned list gets the batch size of every call."""
    calls: list[int] = []
    bpe_words = tok._encoder.bpe_words

    def counting(words: list[str]) -> list[list[int]]:
        calls.append(len(words))
        return bpe_words(words)
    tok._encoder.bpe_words = counting
    return calls


def test_gpt2_cache_hits_give_same_ids_without_bpe(corpus):
    tok = GPT2BPETokenizer(GPT2_VOCAB, GPT2_MERGES)
    calls = count_bpe_calls(tok)
    texts = corpus[:60]
    first = tok.tokenize_batch(texts)
    n_calls, entries = len(calls), len(tok.fragment_cache)
    assert n_calls > 0 and entries > 1000
    assert tok.tokenize_batch(texts) == first  # all from the cache: no BPE, no new entries
    assert [tok.tokenize(t) for t in texts[:5]] == first[:5]
    assert len(calls) == n_calls and len(tok.fragment_cache) == entries
    assert first == tok.tokenize_batch_engine(texts)


def test_gpt2_cache_is_bounded_and_exact():
    ref = ReferenceGPT2BPE.from_files(GPT2_VOCAB, GPT2_MERGES)
    rng = random.Random(8)
    tok = GPT2BPETokenizer(GPT2_VOCAB, GPT2_MERGES, cache_entries=64)
    sizes = []
    for _ in range(200):
        texts = ["".join(rng.choice(TRICKY) for _ in range(rng.randint(0, 20))) for _ in range(2)]
        assert tok.tokenize_batch(texts) == [ref.encode(t) for t in texts]
        sizes.append(len(tok.fragment_cache))
    assert max(sizes) < 64 and max(sizes) >= 32  # filled up, never past the bound after a call
    assert any(b < a for a, b in zip(sizes, sizes[1:]))  # and emptied when full
    # Fragments longer than max_fragment_chars are encoded but not kept.
    tok.fragment_cache.clear()
    long_word = " " + "abcdefghij" * 20
    assert tok.tokenize(long_word + " x") == ref.encode(long_word + " x")
    assert long_word not in tok.fragment_cache and " x" in tok.fragment_cache
    with pytest.raises(TokenizerError, match="cache_entries must be an integer >= 1, got 0"):
        GPT2BPETokenizer(GPT2_VOCAB, GPT2_MERGES, cache_entries=0)


def test_fragment_cache_is_emptied_when_full():
    cache = FragmentCache(3)
    cache.entries.update({"a": b"1", "b": b"2"})
    cache.trim()  # not full: kept
    assert len(cache) == 2 and "a" in cache
    cache.entries.update({"c": b"3", "d": b"4"})  # one group may overshoot
    cache.trim()
    assert len(cache) == 0 and "a" not in cache


def test_gpt2_pickles_without_its_cache(corpus):
    import pickle
    tok = GPT2BPETokenizer(GPT2_VOCAB, GPT2_MERGES)
    ids = tok.tokenize_batch(corpus[:20])
    assert len(tok.fragment_cache) > 100
    copy = pickle.loads(pickle.dumps(tok))
    assert len(copy.fragment_cache) == 0 and copy.fragment_cache.max_entries == tok.fragment_cache.max_entries
    assert copy.tokenize_batch(corpus[:20]) == ids


def test_gpt2_cache_misses_go_to_bpe_in_one_batch_per_group():
    ref = ReferenceGPT2BPE.from_files(GPT2_VOCAB, GPT2_MERGES)
    tok = GPT2BPETokenizer(GPT2_VOCAB, GPT2_MERGES)
    calls = count_bpe_calls(tok)
    texts = [f"w{i}x zq{i}" for i in range(GROUP_TEXTS)]
    assert tok.tokenize_batch(texts) == [ref.encode(t) for t in texts]
    assert calls == [len({p for t in texts for p in GPT2_REGEX.findall(t)})]  # every new pre-token, once
    more = [f"v{i}y" for i in range(GROUP_TEXTS + 1)]  # two groups, each with new pre-tokens
    assert tok.tokenize_batch(more) == [ref.encode(t) for t in more]
    assert len(calls) == 3
    # A batch mixing known and new pre-tokens: one more call, with only the new one.
    assert tok.tokenize_batch(["w1x zq2 brandnew", "v3y"]) == [ref.encode("w1x zq2 brandnew"), ref.encode("v3y")]
    assert calls[3:] == [1]


def test_gpt2_bad_text_and_ids(gpt2):
    with pytest.raises(TokenizerError, match="lone surrogate U\\+D800 at character 2"):
        gpt2.tokenize("ab\ud800c")
    with pytest.raises(TokenizerError, match="expected str"):
        gpt2.tokenize_batch(["ok", 5])
    with pytest.raises(TokenizerError, match="id 9000 is not in the vocabulary"):
        gpt2.detokenize([1, 9000])


# ---------------------------------------------------------------- BERT WordPiece
@pytest.mark.parametrize("lower", [True, False])
def test_bert_engine_ids_equal_reference(corpus, lower):
    tok = build_tokenizer("BertWordPieceLowerCase" if lower else "BertWordPieceCase", vocab_file=BERT_VOCAB)
    ref = ReferenceBertTokenizer(read_vocab_txt(BERT_VOCAB), lower_case=lower)
    engine = build_wordpiece_engine(read_vocab_txt(BERT_VOCAB), lower)
    texts = corpus[:300]  # corpus text: the engine alone must already agree
    raw = [e.ids for e in engine.encode_batch_fast(texts, add_special_tokens=False)]
    for text, ids in zip(texts, raw):
        assert ids == ref.encode(text), text[:80]
    rng = random.Random(7)
    more = HAND_PICKED + [random_unicode(rng, rng.randint(0, 30)) for _ in range(400)]
    raw = [e.ids for e in engine.encode_batch_fast(more, add_special_tokens=False)]
    divergent = [t for t in more if any(c in t for c in ENGINE_DIVERGENT_CHARS[lower])]
    assert len(divergent) == 1  # only the hand-picked string naming them
    for text, engine_ids, ids in zip(more, raw, tok.tokenize_batch(more)):
        assert ids == ref.encode(text), repr(text)
        if text not in divergent:
            assert engine_ids == ids, repr(text)
    # Lone surrogates: the engine refuses them, BERT deletes them (category Cs) like other controls.
    assert tok.tokenize("ab\ud800c") == ref.encode("ab\ud800c") == ref.encode("abc")


def test_bert_divergent_char_list_is_exact():
    """Guard for ENGINE_DIVERGENT_CHARS: probe every assigned non-ASCII, non-control code point."""
    chars = [chr(cp) for cp in range(0x80, 0x110000)
             if not 0xD800 <= cp <= 0xDFFF and unicodedata.category(chr(cp))[0] != "C"]
    vocab = {"[UNK]": 0}
    for lower in (True, False):
        engine = build_wordpiece_engine(vocab, lower)
        ref = ReferenceBertTokenizer(vocab, lower_case=lower)

        def words(s: str) -> list[str]:
            return [w for w, _ in engine.pre_tokenizer.pre_tokenize_str(engine.normalizer.normalize_str(s))]

        found = []
        for i in range(0, len(chars), 1024):
            block = chars[i:i + 1024]
            s = " ".join(f"a{c}b" for c in block)
            if words(s) != ref.basic_tokenize(s):
                found += [c for c in block if words(f"a{c}b") != ref.basic_tokenize(f"a{c}b")]
        assert "".join(found) == ENGINE_DIVERGENT_CHARS[lower]


def test_bert_special_ids_and_detokenize(bert_lower):
    v = bert_lower.vocab
    assert (bert_lower.pad, bert_lower.cls, bert_lower.sep, bert_lower.mask) == (
        v["[PAD]"], v["[CLS]"], v["[SEP]"], v["[MASK]"])
    assert bert_lower.eod == bert_lower.sep
    assert (bert_lower.bos, bert_lower.eos) == (v["[BOS]"], v["[EOS]"])
    assert bert_lower.vocab_size == 8192 and bert_lower.padded_vocab_size == 8192
    ids = bert_lower.tokenize("The Quick brown FOX, jumps!")
    assert bert_lower.detokenize(ids) == "the quick brown fox , jumps !"
    assert bert_lower.cls not in bert_lower.tokenize("[CLS]")  # special text is not special
    assert bert_lower.tokenize("x" * 201) == [v["[UNK]"]]  # BERT's 200-character word limit


def test_bert_megatron_added_tokens(tmp_path):
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "##b"]) + "\n")
    tok = build_tokenizer("BertWordPieceCase", vocab_file=str(vocab), vocab_extra_ids=2)
    # [BOS], [EOS], <extra_id_0>, <extra_id_1> appended after the 7 file tokens, as Megatron does.
    assert (tok.bos, tok.eos) == (7, 8) and tok.additional_special_tokens_ids == [9, 10]
    assert tok.vocab_size == 11 and tok.padded_vocab_size == 128
    assert tok.tokenize("ab a") == [5, 6, 5]
    assert tok.detokenize([5, 6, 5]) == "ab a"


# ---------------------------------------------------------------- SentencePiece
def test_sentencepiece_specials_and_round_trip(spm_tok, corpus):
    v = spm_tok.vocab
    assert spm_tok.vocab_size == 8000 and spm_tok.padded_vocab_size == 8064
    assert spm_tok.eod == spm_tok.eos == v["<EOD>"]
    assert (spm_tok.cls, spm_tok.sep, spm_tok.mask, spm_tok.pad, spm_tok.bos) == (
        v["<CLS>"], v["<SEP>"], v["<MASK>"], v["<pad>"], v["<s>"])
    assert spm_tok.tokenize("a <MASK> b").count(spm_tok.mask) == 1  # Megatron: special text matched
    plain = build_tokenizer("GPTSentencePieceTokenizer", tokenizer_model=SPM_MODEL)
    assert plain.eod == spm_tok.eod and plain.vocab_size == 8000
    for text in corpus[:100]:
        assert plain.detokenize(plain.tokenize(text)) == text  # byte fallback + identity normalization
    batch = spm_tok.tokenize_batch(corpus[:50] + ["x <SEP> y"])
    assert batch == [spm_tok.tokenize(t) for t in corpus[:50] + ["x <SEP> y"]]


def test_sentencepiece_appends_missing_specials(tmp_path):
    import sentencepiece as spm
    lines = [t for t in iter_jsonl_texts(CORPUS, ["text"], limit=30, progress=False)]
    prefix = str(tmp_path / "m")
    spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_prefix=prefix, vocab_size=300,
                                   pad_id=-1, minloglevel=2)
    tok = build_tokenizer("SentencePieceTokenizer", tokenizer_model=prefix + ".model", vocab_extra_ids=1)
    # <CLS> <SEP> <EOD> <MASK> <PAD> <extra_id_0> are appended (the model defines <s> and </s>).
    assert (tok.cls, tok.sep, tok.eod, tok.mask, tok.pad) == (300, 301, 302, 303, 304)
    assert tok.additional_special_tokens_ids == [305] and tok.vocab_size == 306
    assert tok.eos == tok.vocab["</s>"]
    assert tok.detokenize(tok.tokenize("hi <EOD>")) == "hi <EOD> "  # Megatron: specials get spaces around


# ---------------------------------------------------------------- interface, padding, errors
def test_registry_and_padding():
    assert {"GPT2BPETokenizer", "SentencePieceTokenizer", "BertWordPieceLowerCase",
            "BertWordPieceCase"} <= set(TOKENIZERS)
    assert vocab_size_with_padding(8000, 128, 1) == 8064
    assert vocab_size_with_padding(8192, 128, 3) == 8448
    assert vocab_size_with_padding(50257, 128, 1) == 50304  # GPT-2's real vocab
    assert vocab_size_with_padding(30524, 128, 2) == 30720
    with pytest.raises(TokenizerError, match="--make-vocab-size-divisible-by"):
        vocab_size_with_padding(10, 0, 1)


def test_build_from_args_applies_padding_flags():
    args = argparse.Namespace(tokenizer_type="GPT2BPETokenizer", vocab_file=GPT2_VOCAB,
                              merge_file=GPT2_MERGES, tokenizer_model=None, vocab_extra_ids=0, make_vocab_size_divisible_by=100,
                              tensor_model_parallel_size=2)
    tok = build_tokenizer_from_args(args)
    assert tok.vocab_size == 8192 and tok.padded_vocab_size == 8200


@pytest.mark.parametrize("kwargs, match", [
    (dict(tokenizer_type="GPT3Tokenizer"), r"--tokenizer-type 'GPT3Tokenizer' is not supported"),
    (dict(tokenizer_type="GPT2BPETokenizer", merge_file=GPT2_MERGES), r"--vocab-file is required"),
    (dict(tokenizer_type="GPT2BPETokenizer", vocab_file="/nope/vocab.json", merge_file=GPT2_MERGES),
     r"--vocab-file /nope/vocab.json: file not found"),
    (dict(tokenizer_type="GPT2BPETokenizer", vocab_file=GPT2_VOCAB, merge_file="/nope/m.txt"),
     r"--merge-file /nope/m.txt: file not found"),
    (dict(tokenizer_type="BertWordPieceCase", vocab_file="/nope/vocab.txt"), r"--vocab-file /nope/vocab.txt"),
    (dict(tokenizer_type="SentencePieceTokenizer"), r"--tokenizer-model is required"),
    (dict(tokenizer_type="SentencePieceTokenizer", tokenizer_model="/nope/spm.model"),
     r"--tokenizer-model /nope/spm.model: file not found"),
    (dict(tokenizer_type="SentencePieceTokenizer", tokenizer_model=BERT_VOCAB),
     r"--tokenizer-model .*vocab.txt: not a SentencePiece model"),
    (dict(tokenizer_type="BertWordPieceLowerCase", vocab_file=GPT2_MERGES), r"missing BERT special token"),
    (dict(tokenizer_type="GPT2BPETokenizer", vocab_file=BERT_VOCAB, merge_file=GPT2_MERGES),
     r"--vocab-file .*vocab.txt:1: not valid JSON"),
])
def test_build_errors_name_flag_and_path(kwargs, match):
    tokenizer_type = kwargs.pop("tokenizer_type")
    with pytest.raises(TokenizerError, match=match):
        build_tokenizer(tokenizer_type, **kwargs)


def test_gpt2_bad_merges_file_names_line(tmp_path):
    bad = tmp_path / "merges.txt"
    bad.write_text("#version: 0.2\nĠ t\nthree parts here\n", encoding="utf-8")
    with pytest.raises(TokenizerError, match=r"merges.txt:3: expected two tokens"):
        build_tokenizer("GPT2BPETokenizer", vocab_file=GPT2_VOCAB, merge_file=str(bad))
    bad.write_text("#version: 0.2\nĠ t\nzz qq\n", encoding="utf-8")
    with pytest.raises(TokenizerError, match=r"merges.txt:3: token 'zz' of merge 'zz qq' is not in"):
        build_tokenizer("GPT2BPETokenizer", vocab_file=GPT2_VOCAB, merge_file=str(bad))


def test_gpt2_truncated_merges_file_is_refused(tmp_path):
    """A merges.txt cut short (all its merges valid) leaves vocab tokens no merge produces: one error naming both."""
    lines = open(GPT2_MERGES, encoding="utf-8").read().splitlines()
    cut = tmp_path / "merges.txt"
    cut.write_text("\n".join(lines[:len(lines) // 2]) + "\n", encoding="utf-8")
    with pytest.raises(TokenizerError, match=r"--merge-file .*merges.txt: \d+ token\(s\) of --vocab-file .*vocab.json "
                                             r"are produced by no merge") as info:
        build_tokenizer("GPT2BPETokenizer", vocab_file=GPT2_VOCAB, merge_file=str(cut))
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------- training tool
def _tiny_input(tmp_path, docs: int = 100) -> str:
    path = tmp_path / "tiny.jsonl.gz"
    texts = list(iter_jsonl_texts(CORPUS, ["text"], limit=docs, progress=False))
    with gzip.open(path, "wt", encoding="utf-8") as f:
        for t in texts:
            f.write(json.dumps({"text": t, "meta": 1}) + "\n")
    return str(path)


@pytest.mark.parametrize("kind, vocab_size, files", [
    ("GPT2BPETokenizer", 600, ["vocab.json", "merges.txt"]),
    ("BertWordPieceLowerCase", 500, ["vocab.txt"]),
    ("BertWordPieceCase", 500, ["vocab.txt"]),
    ("SentencePieceTokenizer", 500, ["spm.model", "spm.vocab"]),
])
def test_train_tokenizer_writes_loadable_files(tmp_path, kind, vocab_size, files):
    sys.path.insert(0, os.path.dirname(TRAIN_TOOL))
    import train_tokenizer
    src = _tiny_input(tmp_path)
    out = tmp_path / "out"
    assert train_tokenizer.main(["--tokenizer-type", kind, "--input", src, "--vocab-size", str(vocab_size),
                                 "--output-dir", str(out), "--no-progress"]) == 0
    assert sorted(os.listdir(out)) == sorted(files)  # nothing else (no temp files left behind)
    tok = build_tokenizer(kind, vocab_file=str(out / files[0]) if files[0].startswith("vocab") else None,
                          merge_file=str(out / "merges.txt") if "merges.txt" in files else None,
                          tokenizer_model=str(out / "spm.model") if "spm.model" in files else None)
    assert tok.vocab_size == vocab_size
    text = "def main():\n    return 'Hello, world'\n"
    ids = tok.tokenize(text)
    assert ids and all(0 <= i < tok.vocab_size for i in ids)
    if kind == "GPT2BPETokenizer":
        assert tok.detokenize(ids) == text and tok.eod == vocab_size - 1
        assert [tok.inv_vocab[i] for i in range(256)] == byte_alphabet()  # GPT-2 layout
        ref = ReferenceGPT2BPE.from_files(str(out / "vocab.json"), str(out / "merges.txt"))
        assert ref.encode(text) == ids
    if kind.startswith("Bert"):
        first = (out / "vocab.txt").read_text(encoding="utf-8").split("\n")[:7]
        assert first == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[BOS]", "[EOS]"]
        before = (out / "vocab.txt").read_bytes()
        train_tokenizer.main(["--tokenizer-type", kind, "--input", src, "--vocab-size", str(vocab_size),
                              "--output-dir", str(out), "--no-progress"])
        assert (out / "vocab.txt").read_bytes() == before  # deterministic


def test_train_tokenizer_bad_input_is_one_clear_error(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"text": "ok"\n', encoding="utf-8")
    cmd = [sys.executable, TRAIN_TOOL, "--tokenizer-type", "GPT2BPETokenizer", "--input", str(bad),
           "--vocab-size", "300", "--output-dir", str(tmp_path / "o"), "--no-progress"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: --input ") and "bad.jsonl:2: malformed JSON" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "o").exists()


def test_iter_jsonl_texts_errors(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"text": "a"}\n{"body": "b"}\n', encoding="utf-8")
    with pytest.raises(TokenizerError, match=r"x.jsonl:2: missing key 'text'"):
        list(iter_jsonl_texts(str(path), ["text"], progress=False))
    path.write_bytes(b'{"text": "a"}\n{"text": "\xff"}\n')
    with pytest.raises(TokenizerError, match=r"x.jsonl:2: invalid UTF-8"):
        list(iter_jsonl_texts(str(path), ["text"], progress=False))
    path.write_text('{"text": 3}\n', encoding="utf-8")
    with pytest.raises(TokenizerError, match=r"x.jsonl:1: key 'text' must be a string"):
        list(iter_jsonl_texts(str(path), ["text"], progress=False))
