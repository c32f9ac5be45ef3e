"""Pure-Python reference of BERT's tokenizer (basic split + greedy WordPiece), the ground truth for tests.

Basic step: drop NUL/U+FFFD/control characters and turn whitespace into spaces, put spaces around CJK
ideographs, split on whitespace, optionally lowercase and strip accents (NFD, drop combining marks),
then make every punctuation character its own token. WordPiece step: split each word greedily into
the longest vocab prefixes, continuation pieces spelled with "##"; a word that cannot be split (or is
longer than `max_chars`) becomes the unknown token.
"""
from __future__ import annotations

import unicodedata

# CJK Unified Ideographs blocks (and extensions / compatibility ideographs) that BERT isolates.
CJK_RANGES = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
              (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))


def is_whitespace(ch: str) -> bool:
    """Space, tab, newline, carriage return, or a Unicode space separator (Zs)."""
    return ch in " \t\n\r" or unicodedata.category(ch) == "Zs"


def is_control(ch: str) -> bool:
    """Any 'C*' category character except tab/newline/carriage return (those count as whitespace)."""
    return ch not in "\t\n\r" and unicodedata.category(ch).startswith("C")


def is_punctuation(ch: str) -> bool:
    """ASCII symbols (all non-alphanumeric printable ASCII) or any Unicode 'P*' character."""
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def is_cjk(ch: str) -> bool:
    """True for a CJK ideograph in the blocks BERT splits character by character."""
    cp = ord(ch)
    return any(lo <= cp <= hi for lo, hi in CJK_RANGES)


class ReferenceBertTokenizer:
    """Slow, obviously-correct BERT basic + WordPiece tokenizer over a token → id vocab."""

    def __init__(self, vocab: dict[str, int], lower_case: bool = True, unk_token: str = "[UNK]",
                 max_chars: int = 200) -> None:
        self.vocab = vocab
        self.lower_case = lower_case
        self.unk_token = unk_token
        self.max_chars = max_chars

    def basic_tokenize(self, text: str) -> list[str]:
        """Clean, isolate CJK, whitespace-split, (lowercase + strip accents), split punctuation."""
        cleaned = []
        for ch in text:
            cp = ord(ch)
            if cp == 0 or cp == 0xFFFD or is_control(ch):
                continue
            if is_whitespace(ch):
                cleaned.append(" ")
            elif is_cjk(ch):
                cleaned.append(f" {ch} ")
            else:
                cleaned.append(ch)
        words: list[str] = []
        for word in "".join(cleaned).split():
            if self.lower_case:
                word = word.lower()
                word = "".join(c for c in unicodedata.normalize("NFD", word)
                               if unicodedata.category(c) != "Mn")
            current = ""
            for ch in word:
                if is_punctuation(ch):
                    if current:
                        words.append(current)
                        current = ""
                    words.append(ch)
                else:
                    current += ch
            if current:
                words.append(current)
        return words

    def wordpiece(self, word: str) -> list[str]:
        """Greedy longest-prefix WordPiece split of one word, or [unk] if it cannot be split."""
        if len(word) > self.max_chars:
            return [self.unk_token]
        pieces: list[str] = []
        start = 0
        while start < len(word):
            end = len(word)
            found = None
            while start < end:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in self.vocab:
                    found = piece
                    break
                end -= 1
            if found is None:
                return [self.unk_token]
            pieces.append(found)
            start = end
        return pieces

    def tokenize_to_strings(self, text: str) -> list[str]:
        """Text → WordPiece token strings."""
        return [p for w in self.basic_tokenize(text) for p in self.wordpiece(w)]

    def encode(self, text: str) -> list[int]:
        """Text → ids."""
        return [self.vocab[p] for p in self.tokenize_to_strings(text)]
