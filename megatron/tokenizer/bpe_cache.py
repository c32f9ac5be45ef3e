"""Exact, cached GPT-2 encoding: cut text into independent fragments, look each up, BPE only the new ones.

Why a fragment cut is exact. GPT-2's pre-tokenization regex (`reference_bpe.GPT2_PATTERN`) scans left
to right with no look-behind; its only look-ahead is `\\s+(?!\\S)`. Cut the text before
  * every non-space run, together with the one whitespace character in front of it (if any), and
  * every whitespace run that follows a non-space character (minus that run's last character when a
    non-space character follows, since that last character goes with the next run).
Every cut falls on a boundary between two regex matches, and the matches inside a fragment are the
same whether the fragment is scanned alone or inside the text (a fragment never ends in a whitespace
run that the regex would extend or shorten differently). So the ids of a text are the concatenation
of the ids of its fragments encoded alone, and "fragment → ids" can be cached. A GPT-2 pre-token is
itself such a fragment, so fragments and pre-tokens share one cache. The cut uses the exact
whitespace set of the `regex` package, which also pre-tokenizes the new fragments, so the result
equals the pure-Python reference on every code point (no Unicode-table mismatch to work around).

Per group of texts: cut every text (stdlib `re`), collect the fragments missing from the cache,
pre-tokenize all of them in one regex call, BPE the new pre-tokens in one batch, then build each
text's ids with one `bytes.join` of packed per-fragment ids, unpacked into a list in C.
"""
from __future__ import annotations

import re
from array import array
from itertools import accumulate, chain, count
from typing import Callable

import regex

from .reference_bpe import GPT2_REGEX, bytes_to_unicode

# Typecode of an unsigned array of at least 4 bytes per item (ids are < 2**31, see read_vocab_json).
ID_TYPECODE = "I" if array("I").itemsize >= 4 else "L"
DEFAULT_MAX_ENTRIES = 1 << 17  # ~150 bytes each: ~20 MB
DEFAULT_MAX_FRAGMENT_CHARS = 128  # longer fragments/pre-tokens (CJK runs, base64, ...) are not kept
# Texts are encoded in groups of at most this many texts / characters; the cache is trimmed in between.
GROUP_TEXTS = 64
GROUP_CHARS = 1 << 18
# Every code point in the White_Space property of any Unicode version lies below U+3001;
# tests check this against a scan of all code points with the installed `regex`.
WHITESPACE_SCAN_LIMIT = 0x3001
# GPT-2's pattern for ASCII-only text, for the faster stdlib `re` (\p{L}, \p{N}, \s restricted to ASCII).
_ASCII_WS = r"\t\n\x0b\x0c\r "
GPT2_ASCII_REGEX = re.compile(
    rf"""'s|'t|'re|'ve|'m|'ll|'d| ?[A-Za-z]+| ?[0-9]+| ?[^{_ASCII_WS}A-Za-z0-9]+|[{_ASCII_WS}]+(?![^{_ASCII_WS}])"""
    rf"""|[{_ASCII_WS}]+""")
# GPT-2 byte → character table as a str.translate table for latin-1-decoded UTF-8 bytes.
_BYTE_TABLE = dict(bytes_to_unicode())


def regex_whitespace(limit: int = WHITESPACE_SCAN_LIMIT) -> str:
    """The code points below `limit` that GPT-2's regex treats as `\\s` (the `regex` package's tables)."""
    probe = regex.compile(r"\s", flags=GPT2_REGEX.flags)
    chars = "".join(chr(c) for c in range(limit) if not 0xD800 <= c <= 0xDFFF)
    return "".join(probe.findall(chars))


def fragment_pattern(whitespace: str | None = None) -> re.Pattern[str]:
    """The regex that cuts text into independent fragments (see the module docstring)."""
    ws_chars = "".join(re.escape(c) for c in (regex_whitespace() if whitespace is None else whitespace))
    ws, non_ws = f"[{ws_chars}]", f"[^{ws_chars}]"
    # 1: optional whitespace char + non-space run; 2: whitespace run whose last char goes with the next
    # run; 3: any other whitespace run (at the end of the text).
    return re.compile(f"{ws}?{non_ws}+|{ws}+(?={ws}{non_ws})|{ws}+")


class FragmentCache:
    """Bounded map fragment → packed ids, emptied once it holds `max_entries` (checked between groups of
    texts, so it never holds more than `max_entries` plus the new fragments of one group). Measured on
    20 MB of code, clearing matched a two-generation LRU approximation in speed, with less code."""

    def __init__(self, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        if max_entries < 1:
            raise ValueError(f"FragmentCache: max_entries must be >= 1, got {max_entries}")
        self.max_entries = max_entries
        self.entries: dict[str, bytes] = {}

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, fragment: str) -> bool:
        return fragment in self.entries

    def trim(self) -> None:
        """Empty the cache if it is full (call between groups of texts)."""
        if len(self.entries) >= self.max_entries:
            self.entries = {}

    def clear(self) -> None:
        """Drop every entry."""
        self.entries = {}

    def __getstate__(self) -> dict[str, int]:
        return {"max_entries": self.max_entries}  # a copy starts empty

    def __setstate__(self, state: dict[str, int]) -> None:
        self.__init__(state["max_entries"])  # type: ignore[misc]


class CachedGPT2Encoder:
    """GPT-2 byte-level BPE with a fragment cache; `bpe_words` encodes byte-mapped pre-tokens (cache misses)."""

    def __init__(self, bpe_words: Callable[[list[str]], list[list[int]]],
                 max_entries: int = DEFAULT_MAX_ENTRIES,
                 max_fragment_chars: int = DEFAULT_MAX_FRAGMENT_CHARS) -> None:
        self.bpe_words = bpe_words
        self.cache = FragmentCache(max_entries)
        self.max_fragment_chars = max_fragment_chars
        self._whitespace = frozenset(regex_whitespace())
        self._split = fragment_pattern("".join(sorted(self._whitespace))).findall

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Ids of every text (raises TypeError for a non-str, UnicodeEncodeError for a lone surrogate)."""
        out: list[list[int]] = []
        start = 0
        while start < len(texts):
            stop, chars = start, 0
            while stop < len(texts) and stop - start < GROUP_TEXTS and chars < GROUP_CHARS:
                text = texts[stop]
                chars += len(text) if isinstance(text, str) else 0
                stop += 1
            out.extend(self._encode_group(texts[start:stop]))
            self.cache.trim()
            start = stop
        return out

    def _encode_group(self, texts: list[str]) -> list[list[int]]:
        entries = self.cache.entries
        per_text = list(map(self._split, texts))
        missing = set(chain.from_iterable(per_text)).difference(entries)
        transient: list[str] = []
        try:
            if missing:
                self._add(missing, transient)
            out: list[list[int]] = []
            get, join = entries.__getitem__, b"".join
            for fragments in per_text:
                ids = array(ID_TYPECODE)
                ids.frombytes(join(map(get, fragments)))
                out.append(ids.tolist())
        finally:
            for fragment in transient:  # too long to keep: only needed for this group
                entries.pop(fragment, None)
        return out

    def _add(self, fragments: set[str], transient: list[str]) -> None:
        """Put every (new) fragment into the cache; append to `transient` those to drop later."""
        entries = self.cache.entries
        # A whitespace-only fragment is one pre-token. The others (optional whitespace char + non-space
        # run) are pre-tokenized in ONE regex call, joined by "\n": after a non-space character a "\n"
        # is a pre-token of its own and leaves the next fragment's pre-tokens unchanged.
        ws = self._whitespace
        texty = [f for f in fragments if f[-1] not in ws]
        joined = "\n".join(texty) + "\n"
        pieces = (GPT2_ASCII_REGEX if joined.isascii() else GPT2_REGEX).findall(joined)
        words = set(pieces).difference(entries)
        if "\n" in words and not any(f[0] == "\n" for f in texty):
            words.discard("\n")  # only the separator
        words.update(f for f in fragments if f[-1] in ws)
        limit = self.max_fragment_chars
        if words:
            table = _BYTE_TABLE
            ordered = list(words)
            mapped = [w.encode("utf-8").decode("latin-1").translate(table) for w in ordered]
            for word, ids in zip(ordered, self.bpe_words(mapped)):
                entries[word] = array(ID_TYPECODE, ids).tobytes()
                if len(word) > limit:
                    transient.append(word)
        # Regroup the pre-tokens by fragment: `after[offset]` is the index of the pre-token that starts
        # at that offset of `joined`. A fragment now in `entries` is one pre-token (stored above).
        after = dict(zip(accumulate(map(len, pieces)), count(1)))
        after[0] = 0
        join, get = b"".join, entries.__getitem__
        start = 0
        for fragment in texty:
            end = start + len(fragment)
            if fragment not in entries:
                entries[fragment] = join(map(get, pieces[after[start]:after[end]]))
                if end - start > limit:
                    transient.append(fragment)
            start = end + 1  # skip the separator
