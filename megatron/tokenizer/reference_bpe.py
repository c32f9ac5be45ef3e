"""Pure-Python reference of GPT-2's byte-level BPE: the ground truth the fast engine is tested against.

The algorithm, as published with GPT-2:
1. split the text with GPT-2's pre-tokenization regex (needs the `regex` package for \\p{L} / \\p{N});
2. map every UTF-8 byte of a piece to a printable unicode character (`bytes_to_unicode`);
3. repeatedly merge the adjacent symbol pair with the lowest merge rank until no ranked pair is left;
4. look the resulting symbols up in vocab.json.
"""
from __future__ import annotations

import functools
import json
from typing import Iterable

import regex

from .base import TokenizerError

# The exact GPT-2 pre-tokenization pattern: English contractions, letter runs, digit runs, other
# symbol runs (each optionally preceded by one space), then whitespace (a trailing whitespace run
# keeps its last character for the next word).
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
GPT2_REGEX = regex.compile(GPT2_PATTERN)
MERGES_HEADER = "#version: 0.2"


@functools.lru_cache(maxsize=None)
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte → printable-character table: printable Latin-1 bytes map to themselves,
    the other 68 bytes (controls, space, …) to code points 256, 257, … in byte order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    table: dict[int, str] = {}
    extra = 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def byte_alphabet() -> list[str]:
    """The 256 byte characters in GPT-2's vocab order (printable bytes first, then the remapped ones)."""
    table = bytes_to_unicode()
    return sorted(table.values(), key=ord)


def read_vocab_json(path: str, flag: str = "--vocab-file") -> dict[str, int]:
    """Load a GPT-2 vocab.json (token → id), raising a clear error for bad content."""
    try:
        with open(path, encoding="utf-8") as f:
            vocab = json.load(f)
    except UnicodeDecodeError as e:
        raise TokenizerError(f"{flag} {path}: not valid UTF-8 ({e.reason} at byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise TokenizerError(f"{flag} {path}:{e.lineno}: not valid JSON ({e.msg}); expected a "
                             "GPT-2 vocab.json object mapping token to id") from None
    if not isinstance(vocab, dict) or not vocab:
        raise TokenizerError(f"{flag} {path}: expected a non-empty JSON object mapping token to id")
    for token, index in vocab.items():
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < 2 ** 31:
            raise TokenizerError(f"{flag} {path}: token {token!r} has id {index!r}; expected an "
                                 "integer in [0, 2**31)")
    return vocab


def read_merges_txt(path: str, vocab: dict[str, int] | None = None,
                    vocab_file: str = "vocab.json") -> list[tuple[str, str]]:
    """Load a GPT-2 merges.txt ("#version" header, then one "left right" pair per line, rank order).

    With `vocab`, also check that both parts and the merged token of every pair are vocab tokens."""
    merges: list[tuple[str, str]] = []
    try:
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                line = line.rstrip("\r\n")
                if not line or (lineno == 1 and line.startswith("#version")):
                    continue
                parts = line.split(" ")
                if len(parts) != 2 or not parts[0] or not parts[1]:
                    raise TokenizerError(f"--merge-file {path}:{lineno}: expected two tokens separated "
                                         f"by one space, got {line[:80]!r}")
                if vocab is not None:
                    for tok in (parts[0], parts[1], parts[0] + parts[1]):
                        if tok not in vocab:
                            raise TokenizerError(f"--merge-file {path}:{lineno}: token {tok!r} of merge "
                                                 f"{line!r} is not in --vocab-file {vocab_file}")
                merges.append((parts[0], parts[1]))
    except UnicodeDecodeError as e:
        raise TokenizerError(f"--merge-file {path}: not valid UTF-8 ({e.reason} at byte {e.start})") from None
    return merges


def check_byte_alphabet(vocab: dict[str, int], vocab_file: str) -> None:
    """A byte-level BPE vocab must contain all 256 byte symbols, or some text cannot be encoded."""
    missing = [c for c in byte_alphabet() if c not in vocab]
    if missing:
        raise TokenizerError(f"--vocab-file {vocab_file}: not a byte-level BPE vocab; {len(missing)} of "
                             f"the 256 byte symbols are missing (e.g. {missing[0]!r})")


class ReferenceGPT2BPE:
    """Slow, obviously-correct GPT-2 BPE encoder/decoder over a vocab dict and a ranked merge list."""

    def __init__(self, vocab: dict[str, int], merges: list[tuple[str, str]]) -> None:
        self.encoder = dict(vocab)
        self.decoder = {i: t for t, i in self.encoder.items()}
        self.ranks = {pair: rank for rank, pair in enumerate(merges)}
        self.byte_encoder = bytes_to_unicode()
        self.byte_decoder = {c: b for b, c in self.byte_encoder.items()}
        # The cache is per instance: lru_cache on a bound method would pin `self` forever.
        self.bpe = functools.lru_cache(maxsize=2 ** 16)(self._bpe)

    @classmethod
    def from_files(cls, vocab_file: str, merge_file: str) -> "ReferenceGPT2BPE":
        """Build from a GPT-2 vocab.json + merges.txt."""
        return cls(read_vocab_json(vocab_file), read_merges_txt(merge_file))

    def _bpe(self, word: str) -> tuple[str, ...]:
        """Merge the symbols of one byte-mapped word, lowest rank first, until nothing ranked is left."""
        symbols = list(word)
        while len(symbols) > 1:
            pairs = {(symbols[i], symbols[i + 1]) for i in range(len(symbols) - 1)}
            best = min(pairs, key=lambda p: self.ranks.get(p, float("inf")))
            if best not in self.ranks:
                break
            merged: list[str] = []
            i = 0
            while i < len(symbols):
                if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == best:
                    merged.append(symbols[i] + symbols[i + 1])
                    i += 2
                else:
                    merged.append(symbols[i])
                    i += 1
            symbols = merged
        return tuple(symbols)

    def pretokenize(self, text: str) -> list[str]:
        """Split text into GPT-2 pre-tokens (before byte mapping)."""
        return GPT2_REGEX.findall(text)

    def tokenize_to_strings(self, text: str) -> list[str]:
        """Encode into BPE token strings (byte-mapped characters)."""
        out: list[str] = []
        for piece in GPT2_REGEX.findall(text):
            mapped = "".join(self.byte_encoder[b] for b in piece.encode("utf-8"))
            out.extend(self.bpe(mapped))
        return out

    def encode(self, text: str) -> list[int]:
        """Encode text into ids."""
        return [self.encoder[t] for t in self.tokenize_to_strings(text)]

    def decode(self, ids: Iterable[int]) -> str:
        """Decode ids into text (invalid UTF-8 sequences become U+FFFD)."""
        chars = "".join(self.decoder[i] for i in ids)
        return bytes(self.byte_decoder[c] for c in chars).decode("utf-8", errors="replace")
