"""A deterministic WordPiece vocabulary trainer (BPE-style merges with "##" continuation pieces).

HF's WordPieceTrainer gives a different vocab on every run (ties are broken in hash-map order), which
is bad for a committed file. This trainer follows the same recipe with an explicit tie-break:
1. split the text exactly as the BERT tokenizer will (the engine's normalizer + pre-tokenizer) and
   count words;
2. keep the `limit_alphabet` most frequent characters; a word starts as its first character followed
   by "##"-prefixed characters;
3. repeatedly merge the most frequent adjacent pair (ties: the smallest pair of strings), adding the
   merged piece to the vocab, until the vocab is full or no pair occurs `min_frequency` times.
"""
from __future__ import annotations

import heapq
from collections import Counter
from typing import Iterable

from tqdm import tqdm

PREFIX = "##"


def _join(left: str, right: str) -> str:
    return left + right[len(PREFIX):] if right.startswith(PREFIX) else left + right


def count_words(texts: Iterable[str], lower_case: bool, progress: bool = True) -> Counter:
    """Count the words of `texts` as split by the BERT engine (normalize + pre-tokenize)."""
    from .bert_wordpiece import build_wordpiece_engine
    engine = build_wordpiece_engine({"[UNK]": 0}, lower_case)
    normalizer, pre_tokenizer = engine.normalizer, engine.pre_tokenizer
    counts: Counter = Counter()
    for text in tqdm(texts, desc="counting words", unit="doc", disable=not progress):
        counts.update(w for w, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text)))
    return counts


def train_wordpiece_vocab(word_counts: Counter, vocab_size: int, special_tokens: list[str],
                          min_frequency: int = 2, limit_alphabet: int = 1000,
                          progress: bool = True) -> list[str]:
    """Learn a WordPiece vocab (token list in id order: specials, alphabet, '##' alphabet, merges)."""
    char_freq: Counter = Counter()
    for word, n in word_counts.items():
        for ch in word:
            char_freq[ch] += n
    alphabet = sorted(sorted(char_freq, key=lambda c: (-char_freq[c], c))[:limit_alphabet])
    known = set(alphabet)

    words: list[list[str]] = []
    freqs: list[int] = []
    for word, n in sorted(word_counts.items()):
        chars = [c for c in word if c in known]
        if chars:
            words.append([chars[0]] + [PREFIX + c for c in chars[1:]])
            freqs.append(n)

    vocab: list[str] = list(special_tokens)
    seen = set(vocab)

    def add(tok: str) -> None:
        if tok not in seen:
            seen.add(tok)
            vocab.append(tok)

    for c in alphabet:
        add(c)
    for c in sorted({s for w in words for s in w[1:]}):
        add(c)

    pair_count: Counter = Counter()
    where: dict[tuple[str, str], set[int]] = {}
    for i, w in enumerate(words):
        for pair in zip(w, w[1:]):
            pair_count[pair] += freqs[i]
            where.setdefault(pair, set()).add(i)
    heap = [(-n, pair) for pair, n in pair_count.items()]
    heapq.heapify(heap)

    bar = tqdm(total=max(vocab_size - len(vocab), 0), desc="merging", unit="tok", disable=not progress)
    while len(vocab) < vocab_size and heap:
        neg, pair = heapq.heappop(heap)
        if pair_count.get(pair, 0) != -neg:
            continue  # stale heap entry
        if -neg < max(min_frequency, 1):
            break
        merged = _join(*pair)
        before = len(vocab)
        add(merged)
        bar.update(len(vocab) - before)
        touched: Counter = Counter()
        for i in where.pop(pair, set()):
            w, n = words[i], freqs[i]
            for p in zip(w, w[1:]):
                pair_count[p] -= n
                touched[p] += 0
            out: list[str] = []
            k = 0
            while k < len(w):
                if k + 1 < len(w) and (w[k], w[k + 1]) == pair:
                    out.append(merged)
                    k += 2
                else:
                    out.append(w[k])
                    k += 1
            words[i] = out
            for p in zip(out, out[1:]):
                pair_count[p] += n
                touched[p] += 0
                where.setdefault(p, set()).add(i)
        pair_count.pop(pair, None)
        for p in touched:
            n = pair_count.get(p, 0)
            if n > 0 and p != pair:
                heapq.heappush(heap, (-n, p))
            elif n <= 0:
                pair_count.pop(p, None)
                where.pop(p, None)
    bar.close()
    return vocab
