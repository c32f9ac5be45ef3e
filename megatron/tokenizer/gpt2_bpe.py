"""GPT2BPETokenizer: byte-level BPE from a GPT-2 vocab.json + merges.txt.

Encoding (`tokenize`/`tokenize_batch`) is exact GPT-2 (same pre-tokenization regex, no prefix space, no
special-token matching: the text "<|endoftext|>" is encoded as ordinary characters, as in GPT-2 and
Megatron) and runs through `bpe_cache.CachedGPT2Encoder`: the text is cut into independent fragments
whose ids are cached; only new pre-tokens, split by GPT-2's regex with the `regex` package, go
through the BPE model of HF `tokenizers` in one batch. `reference_bpe.ReferenceGPT2BPE` is the
pure-Python ground truth the tests compare with.

`tokenize_batch_engine` keeps the former path, HF's whole pipeline (its own regex, oniguruma), for
comparisons and benchmarks. Oniguruma and `regex` carry different Unicode versions and may disagree
on letters/digits assigned in recent versions; those code points are unassigned in Python's own
`unicodedata` tables, so that path encodes a text containing one with the reference (exact, slower).
The cached path needs no such fallback: its pre-tokenizer is the reference's.
"""
from __future__ import annotations

import functools
import unicodedata
from typing import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers

from .base import AbstractTokenizer, TokenizerError, check_file
from .bpe_cache import DEFAULT_MAX_ENTRIES, CachedGPT2Encoder, FragmentCache
from .reference_bpe import (ReferenceGPT2BPE, bytes_to_unicode, check_byte_alphabet, read_merges_txt,
                            read_vocab_json)

EOD_TOKEN = "<|endoftext|>"


@functools.lru_cache(maxsize=65536)
def _is_unassigned(ch: str) -> bool:
    """True if Python's Unicode tables do not assign `ch` (category Cn)."""
    return unicodedata.category(ch) == "Cn"


def needs_reference(text: str) -> bool:
    """True if `text` holds a code point on which the engine's and `regex`'s Unicode tables may differ."""
    return not text.isascii() and any(_is_unassigned(c) for c in set(text) if c > "\u0377")


def check_encodable(text: str) -> None:
    """Raise a clear error for text that is not valid Unicode (a lone surrogate cannot become UTF-8)."""
    if not isinstance(text, str):
        raise TokenizerError(f"cannot tokenize a {type(text).__name__}; expected str")
    for pos, ch in enumerate(text):
        if "\ud800" <= ch <= "\udfff":
            raise TokenizerError(f"text contains a lone surrogate U+{ord(ch):04X} at character {pos}; "
                                 "it cannot be encoded as UTF-8")


def check_vocab_reachable(vocab: dict[str, int], merges: list[tuple[str, str]], vocab_file: str,
                          merge_file: str) -> None:
    """Every vocab token must be a byte symbol, a special token (``<...>``) or the result of a merge.

    A truncated merges.txt (or one of another tokenizer) leaves tokens no text can ever encode to: one error
    naming both files instead of a tokenizer that silently never uses part of its vocabulary."""
    produced = {a + b for a, b in merges}
    alphabet = set(bytes_to_unicode().values())
    unreachable = [t for t in vocab if t not in produced and t not in alphabet
                   and not (t.startswith("<") and t.endswith(">") and len(t) > 2)]
    if unreachable:
        raise TokenizerError(
            f"--merge-file {merge_file}: {len(unreachable)} token(s) of --vocab-file {vocab_file} are produced by no "
            f"merge (e.g. {unreachable[0]!r}); is the merges file truncated ({len(merges)} merges) or from another "
            "tokenizer?")


def build_bpe_engine(vocab: dict[str, int], merges: list[tuple[str, str]]) -> Tokenizer:
    """An HF `tokenizers` pipeline that encodes exactly like GPT-2's BPE for this vocab/merges."""
    model = models.BPE(vocab=vocab, merges=merges, dropout=None, unk_token=None, fuse_unk=False,
                       byte_fallback=False, ignore_merges=False)
    engine = Tokenizer(model)
    # use_regex=True is GPT-2's pattern; add_prefix_space=False keeps the text untouched.
    engine.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    engine.decoder = decoders.ByteLevel()
    return engine


class ModelBPEWords:
    """Callable encoding byte-mapped pre-tokens with an HF BPE model alone (no second regex pass).

    One `model.tokenize` call per word: measured ~2x faster than `Tokenizer.encode_batch_fast`, whose
    per-text Encoding objects cost more than the BPE of a short word."""

    def __init__(self, model: models.Model) -> None:
        self.model = model

    def __call__(self, words: list[str]) -> list[list[int]]:
        """Ids of every word."""
        tokenize = self.model.tokenize
        return [[t.id for t in tokenize(w)] for w in words]


class GPT2BPETokenizer(AbstractTokenizer):
    """GPT-2 byte-level BPE (Megatron's GPT2BPETokenizer); eod is the id of <|endoftext|>.

    `cache_entries` bounds the fragment → ids cache (about 150 bytes per entry; not pickled). The cache
    makes encoding stateful: use one tokenizer per thread (processes each build or unpickle their own)."""

    def __init__(self, vocab_file: str, merge_file: str, cache_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        super().__init__("GPT2 BPE")
        vocab_file = check_file(vocab_file, "--vocab-file", "GPT2BPETokenizer")
        merge_file = check_file(merge_file, "--merge-file", "GPT2BPETokenizer")
        self.vocab_file, self.merge_file = vocab_file, merge_file
        self._vocab = read_vocab_json(vocab_file)
        check_byte_alphabet(self._vocab, vocab_file)
        if EOD_TOKEN not in self._vocab:
            raise TokenizerError(f"--vocab-file {vocab_file}: has no {EOD_TOKEN} token (needed as eod)")
        self.merges = read_merges_txt(merge_file, self._vocab, vocab_file)
        check_vocab_reachable(self._vocab, self.merges, vocab_file, merge_file)
        self._inv_vocab = {i: t for t, i in self._vocab.items()}
        self._eod = self._vocab[EOD_TOKEN]
        if not isinstance(cache_entries, int) or cache_entries < 1:
            raise TokenizerError(f"GPT2BPETokenizer: cache_entries must be an integer >= 1, got {cache_entries!r}")
        self._engine = build_bpe_engine(self._vocab, self.merges)
        self._encoder = CachedGPT2Encoder(ModelBPEWords(self._engine.model), max_entries=cache_entries)
        self._reference: ReferenceGPT2BPE | None = None  # built on first use (rare texts only)
        # id → bytes table for an exact, engine-independent detokenize.
        byte_decoder = {c: b for b, c in bytes_to_unicode().items()}
        size = max(self._inv_vocab) + 1
        self._id_bytes: list[bytes | None] = [None] * size
        for tok, i in self._vocab.items():
            if all(c in byte_decoder for c in tok):
                self._id_bytes[i] = bytes(byte_decoder[c] for c in tok)
            else:  # e.g. a special token written with non-byte characters: decode as its text
                self._id_bytes[i] = tok.encode("utf-8")

    @property
    def vocab(self) -> dict[str, int]:
        """Token string → id (vocab.json)."""
        return self._vocab

    @property
    def inv_vocab(self) -> dict[int, str]:
        """Id → token string."""
        return self._inv_vocab

    @property
    def eod(self) -> int:
        """Id of <|endoftext|>."""
        return self._eod

    def reference(self) -> ReferenceGPT2BPE:
        """The pure-Python reference encoder over the same vocab/merges."""
        if self._reference is None:
            self._reference = ReferenceGPT2BPE(self._vocab, self.merges)
        return self._reference

    def tokenize(self, text: str) -> list[int]:
        """Encode text into ids (no special tokens recognised or added)."""
        return self.tokenize_batch([text])[0]

    def tokenize_batch(self, texts: list[str]) -> list[list[int]]:
        """Encode many texts (one core): cached fragments, new pre-tokens BPE-encoded in one batch."""
        texts = list(texts)
        try:
            return self._encoder.encode_batch(texts)
        except (TypeError, UnicodeEncodeError):
            for t in texts:
                check_encodable(t)
            raise

    @property
    def fragment_cache(self) -> FragmentCache:
        """The bounded fragment → ids cache of the encoder (size, clear)."""
        return self._encoder.cache

    def tokenize_batch_engine(self, texts: list[str]) -> list[list[int]]:
        """Encode with HF's whole pipeline (the former path; same ids, kept for comparisons/benchmarks)."""
        texts = list(texts)
        slow = [i for i, t in enumerate(texts) if not isinstance(t, str) or needs_reference(t)]
        if not slow:
            return self._encode_engine(texts)
        out: list[list[int]] = [[] for _ in texts]
        slow_set = set(slow)
        fast = [i for i in range(len(texts)) if i not in slow_set]
        for i, ids in zip(fast, self._encode_engine([texts[i] for i in fast])):
            out[i] = ids
        for i in slow:
            try:
                out[i] = self.reference().encode(texts[i])
            except (UnicodeEncodeError, TypeError, AttributeError):
                check_encodable(texts[i])
                raise
        return out

    def _encode_engine(self, texts: list[str]) -> list[list[int]]:
        try:
            return [e.ids for e in self._engine.encode_batch_fast(texts, add_special_tokens=False)]
        except TypeError:  # the engine refuses strings with lone surrogates
            for t in texts:
                if not t.isascii():
                    check_encodable(t)
            raise

    def detokenize(self, token_ids: Iterable[int]) -> str:
        """Decode ids into text; invalid UTF-8 byte sequences become U+FFFD (GPT-2's errors='replace')."""
        table = self._id_bytes
        chunks: list[bytes] = []
        for i in token_ids:
            i = int(i)
            chunk = table[i] if 0 <= i < len(table) else None
            if chunk is None:
                raise TokenizerError(f"detokenize: id {i} is not in the vocabulary "
                                     f"(vocab_size {self.vocab_size})")
            chunks.append(chunk)
        return b"".join(chunks).decode("utf-8", errors="replace")
