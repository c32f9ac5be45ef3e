"""BERT masked-LM selection: whole-word n-gram masking (default) and the per-token rule (bit-for-bit frozen)."""
from __future__ import annotations

import numpy as np
import pytest

from megatron.data import bert_dataset as bd
from megatron.data.dataset_utils import DatasetError
from megatron.data.indexed_dataset import MMapIndexedDatasetBuilder

IDS = dict(cls_id=1, sep_id=2, mask_id=3, pad_id=0, vocab_size=1000)
SPECIAL = {"[PAD]": 0, "[CLS]": 1, "[SEP]": 2, "[MASK]": 3, "[UNK]": 4}
FIRST_PIECE = 600  # ids 5..599 are word starts "w{i}", ids 600..999 are continuation pieces "##p{i}"
VOCAB = {**SPECIAL, **{f"w{i}": i for i in range(5, FIRST_PIECE)}, **{f"##p{i}": i for i in range(FIRST_PIECE, 1000)}}
WORD_START = bd.word_start_table(VOCAB, 1000)


def random_sentence(rng: np.random.RandomState) -> np.ndarray:
    """A sentence of 2-12 words, each a start piece followed by 0-3 continuation pieces (p .5/.25/.15/.1)."""
    n_words = rng.randint(2, 13)
    lengths = 1 + np.searchsorted([0.5, 0.75, 0.9], rng.random_sample(n_words), side="right")
    out = rng.randint(FIRST_PIECE, 1000, size=int(lengths.sum()))
    out[np.cumsum(lengths) - lengths] = rng.randint(5, FIRST_PIECE, size=n_words)
    return out.astype(np.int64)


def sample(seed: int, msl: int = 64, target: int | None = None, **kw):
    """(sentences, target, built sample) for one seed; the target leaves room for some truncation."""
    rng = np.random.RandomState(seed)
    sentences = [random_sentence(rng) for _ in range(rng.randint(2, 6))]
    target = msl - 3 if target is None else target
    args = dict(vocab_ids=None, masked_lm_prob=0.15, binary_head=True, word_start=WORD_START)
    args.update(kw)
    return sentences, target, bd.build_training_sample(sentences, target, msl, rng=np.random.RandomState(seed + 7),
                                                       **IDS, **args)


def structure(s):
    """(original tokens, candidate positions, word bounds over the candidates) of a built sample."""
    n = int(s["padding_mask"].sum())
    orig = np.where(s["loss_mask"] == 1, s["labels"], s["text"])[:n]
    cand = np.flatnonzero((orig != IDS["cls_id"]) & (orig != IDS["sep_id"]))
    return orig, cand, bd.word_bounds(orig, cand, WORD_START)


@pytest.fixture(scope="module")
def samples():
    return [sample(seed)[2] for seed in range(3000)]


def test_word_start_table_from_mapping_and_tokenizer(tmp_path):
    table = bd.word_start_table({"[PAD]": 0, "hello": 1, "##lo": 2, "##": 3, "a##b": 4}, 8)
    assert table.dtype == np.bool_ and table.tolist() == [True, True, False, False, True, True, True, True]
    assert bd.word_start_table({"x": 0, "##y": 2}).tolist() == [True, True, False]  # size = largest id + 1
    from megatron.tokenizer.bert_wordpiece import BertWordPieceTokenizer

    vocab_file = tmp_path / "vocab.txt"
    vocab_file.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "un", "##aff", "##able", "x"]))
    tok = BertWordPieceTokenizer(str(vocab_file))
    got = bd.word_start_table(tok, 16)
    assert got[:9].tolist() == [True] * 6 + [False, False, True] and got[9:].all()
    assert tok.tokenize("unaffable x") == [5, 6, 7, 8]

    class InvOnly:  # a tokenizer exposing only id -> token
        inv_vocab = {0: "a", 1: "##b"}

    assert bd.word_start_table(InvOnly()).tolist() == [True, False]
    with pytest.raises(DatasetError, match="size 2 is smaller than the vocabulary"):
        bd.word_start_table({"a": 0, "b": 5}, 2)
    with pytest.raises(DatasetError, match="got int"):
        bd.word_start_table(3)


def test_about_15_percent_of_tokens_and_words(samples):
    masked = tokens = words = masked_words = exact = 0
    for s in samples:
        orig, cand, bounds = structure(s)
        n = len(orig)
        got = int(s["loss_mask"].sum())
        budget = min(round(0.15 * 64), max(1, round(0.15 * n)))
        assert got <= budget
        exact += got == budget
        masked += got
        tokens += n
        words += len(bounds) - 1
        masked_words += int(s["loss_mask"][cand[bounds[:-1]]].sum())
    assert 0.14 <= masked / tokens <= 0.16  # n_tokens counts [CLS]/[SEP] (Megatron)
    assert 0.16 <= masked_words / words <= 0.20  # above 15 %: the token budget is topped up with short words
    assert exact / len(samples) > 0.8  # the budget is usually filled exactly


def test_80_10_10_split(samples):
    masked = as_mask = kept = other = 0
    for s in samples:
        pos = np.flatnonzero(s["loss_mask"])
        text, labels = s["text"][pos], s["labels"][pos]
        masked += len(pos)
        as_mask += int((text == IDS["mask_id"]).sum())
        kept += int((text == labels).sum())
        other += int(((text != IDS["mask_id"]) & (text != labels)).sum())
    assert 0.78 <= as_mask / masked <= 0.82
    assert 0.085 <= kept / masked <= 0.115
    assert 0.085 <= other / masked <= 0.115


def test_never_a_special_token_or_pad(samples):
    for s in samples:
        n = int(s["padding_mask"].sum())
        orig, cand, _ = structure(s)
        special = np.setdiff1d(np.arange(64), cand)  # [CLS], both [SEP]s, padding
        assert not s["loss_mask"][special].any() and (s["labels"][special] == -1).all()
        assert s["text"][0] == IDS["cls_id"] and (s["text"][n:] == IDS["pad_id"]).all()
        assert (s["text"][special[special < n]] == orig[special[special < n]]).all()
        pos = np.flatnonzero(s["loss_mask"])
        assert (s["labels"][pos] >= 5).all() and (s["labels"][s["loss_mask"] == 0] == -1).all()


def test_words_are_masked_whole():
    orphans = truncated = masked_orphans = 0
    for seed in range(1500):
        sentences, _, s = sample(seed, msl=32, target=20)  # heavy truncation: segments cut inside words
        truncated += int(s["truncated"])
        orig, cand, bounds = structure(s)
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            word = s["loss_mask"][cand[lo:hi]]
            assert word.min() == word.max(), f"seed {seed}: word at {cand[lo:hi]} partly masked"
            orphans += not WORD_START[orig[cand[lo]]]  # a segment starting with a continuation piece
        assert bounds[0] == 0
        masked_orphans += int(s["loss_mask"][1]) * (not WORD_START[orig[1]])  # A begins inside a word
        # independently of word_bounds: a continuation piece right after a non-special token shares its fate
        piece = np.flatnonzero(~WORD_START[orig[1:]]) + 1
        piece = piece[(orig[piece - 1] != IDS["cls_id"]) & (orig[piece - 1] != IDS["sep_id"])]
        assert (s["loss_mask"][piece] == s["loss_mask"][piece - 1]).all()
    assert truncated > 500 and orphans > 50 and masked_orphans > 0


def test_ngram_spans_decrease_with_n():
    counts = np.zeros(5, dtype=np.int64)
    for seed in range(2000):
        rng = np.random.RandomState(seed)
        bounds = np.cumsum([0] + list(rng.choice(4, size=rng.randint(10, 60), p=[0.5, 0.3, 0.15, 0.05]) + 1))
        budget = max(1, round(0.15 * bounds[-1]))
        spans = bd.choose_whole_word_ngrams(bounds, budget, rng)
        covered = np.zeros(bounds[-1], dtype=int)
        for w, n in spans:
            counts[n] += 1
            covered[bounds[w] : bounds[w + n]] += 1
        assert covered.max() <= 1 and covered.sum() <= budget
    assert counts[0] == 0 and counts[4] == 0
    share = counts[1:4] / counts.sum()
    assert share[0] > share[1] > share[2] > 0.06  # shrinking and overlap skipping favour short spans further
    # the draw itself: the first span never shrinks (budget 3, one-token words) nor overlaps: P(n) ∝ 1/n
    rng = np.random.RandomState(0)
    first = [bd.choose_whole_word_ngrams(np.arange(51), 3, rng)[0][1] for _ in range(3000)]
    np.testing.assert_allclose(np.bincount(first, minlength=4)[1:] / 3000, [6 / 11, 3 / 11, 2 / 11], atol=0.03)


def test_masked_runs_in_samples_decrease_with_word_count(samples):
    runs = np.zeros(8, dtype=np.int64)
    for s in samples:
        _, cand, bounds = structure(s)
        flags = s["loss_mask"][cand[bounds[:-1]]]  # one flag per word
        length = 0
        for f in list(flags) + [0]:
            if f:
                length += 1
            elif length:
                runs[min(length, 7)] += 1
                length = 0
    assert runs[1] > runs[2] > runs[3] > 0


def test_budget_edge_cases():
    _, _, s = sample(0, word_start=None)  # every token a word: exactly the budget
    n = int(s["padding_mask"].sum())
    assert s["loss_mask"].sum() == min(round(0.15 * 64), max(1, round(0.15 * n)))
    _, _, s = sample(1, msl=16, masked_lm_prob=0.01)  # max_predictions = round(0.16) = 0
    assert not s["loss_mask"].any()
    _, _, s = sample(1, msl=16, masked_lm_prob=0.01, masking_style="token")  # the token rule masks at least one
    assert s["loss_mask"].sum() == 1
    _, _, s = sample(2, masked_lm_prob=0.0)
    assert not s["loss_mask"].any() and (s["labels"] == -1).all()
    a, b = sample(5)[2], sample(5)[2]
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])


def test_errors_name_the_value():
    with pytest.raises(DatasetError, match="masking_style 'wwm': expected one of 'whole-word', 'token'"):
        sample(0, masking_style="wwm")
    with pytest.raises(DatasetError, match="masking_style 'bert'"):
        bd.build_train_valid_test_datasets(["/nonexistent/x"], "mmap", "1,0,0", [1, 1, 1], 32, masking_style="bert",
                                           **IDS)
    with pytest.raises(DatasetError, match=r"token id \d+ is outside word_start \(a table over 600 ids\)"):
        sample(0, word_start=np.ones(600, dtype=bool))


def test_dataset_passes_masking_style_and_word_start(tmp_path):
    rng = np.random.RandomState(0)
    prefix = str(tmp_path / "wp_text_sentence")
    builder = MMapIndexedDatasetBuilder(prefix + ".bin", dtype=np.uint16)
    for _ in range(40):
        for _ in range(rng.randint(2, 6)):
            builder.add_item(random_sentence(rng))
        builder.end_document()
    builder.finalize(prefix + ".idx")

    def build(**kw):
        return bd.build_train_valid_test_datasets([prefix], "mmap", "1,0,0", [100, 0, 0], 48, seed=3, **IDS, **kw)[0]

    whole, token = build(word_start=WORD_START), build(masking_style="token", word_start=WORD_START)
    partial = 0
    for i in range(100):
        orig, cand, bounds = structure(whole[i])
        for name, ds in (("whole", whole), ("token", token)):
            per_word = np.add.reduceat(ds[i]["loss_mask"][cand], bounds[:-1]) if len(cand) else []
            broken = int(((per_word > 0) & (per_word < np.diff(bounds))).sum())
            if name == "whole":
                assert broken == 0
            else:
                partial += broken
    assert partial > 0  # the token rule splits words: the option really reaches the samples
    with pytest.raises(DatasetError, match="word_start covers 10 token ids, fewer than vocab_size 1000"):
        build(word_start=np.ones(10, dtype=bool))
    with pytest.raises(DatasetError, match="expected a 1-D bool array"):
        build(word_start=np.ones(1000, dtype=np.int64))


# ----------------------------------------------------------------------------------------------
# masking_style="token" == the implementation before whole-word masking (frozen here)
# ----------------------------------------------------------------------------------------------


def frozen_token_sample(sentences, target_seq_length, max_seq_length, *, cls_id, sep_id, mask_id, pad_id,
                        vocab_size, vocab_ids, masked_lm_prob, binary_head, rng):
    """The per-token build_training_sample as it was before masking_style existed."""
    if binary_head:
        n = len(sentences)
        a_end = 1 if n < 3 else int(rng.randint(1, n))
        a, b = np.concatenate(sentences[:a_end]), np.concatenate(sentences[a_end:])
        is_random = bool(rng.random_sample() < 0.5)
        if is_random:
            a, b = b, a
    else:
        a, b, is_random = np.concatenate(list(sentences)), np.empty(0, dtype=np.int64), False
    a, b = a.astype(np.int64), b.astype(np.int64)
    fa, fb = bd.trimmed_lengths(len(a), len(b), target_seq_length)
    truncated = fa + fb < len(a) + len(b)
    a, b = bd._trim(a, len(a) - fa, rng), bd._trim(b, len(b) - fb, rng)
    la, lb = len(a), len(b)
    parts = [[cls_id], a, [sep_id]] + ([b, [sep_id]] if lb else [])
    tokens = np.concatenate([np.asarray(p, dtype=np.int64) for p in parts])
    n_tok = len(tokens)
    types = np.zeros(max_seq_length, dtype=np.int64)
    types[la + 2 : n_tok] = 1
    labels = np.full(max_seq_length, -1, dtype=np.int64)
    loss_mask = np.zeros(max_seq_length, dtype=np.int64)
    candidates = np.concatenate([np.arange(1, 1 + la), np.arange(la + 2, la + 2 + lb)])
    if masked_lm_prob > 0 and candidates.size:
        num = min(candidates.size, max(1, int(round(candidates.size * masked_lm_prob))))
        pos = np.sort(rng.choice(candidates, size=num, replace=False))
        u = rng.random_sample(num)
        random_tokens = (rng.randint(0, vocab_size, size=num) if vocab_ids is None
                         else vocab_ids[rng.randint(0, len(vocab_ids), size=num)])
        labels[pos] = tokens[pos]
        loss_mask[pos] = 1
        tokens[pos] = np.where(u < 0.8, mask_id, np.where(u < 0.9, random_tokens, tokens[pos]))
    text = np.full(max_seq_length, pad_id, dtype=np.int64)
    text[:n_tok] = tokens
    padding_mask = np.zeros(max_seq_length, dtype=np.int64)
    padding_mask[:n_tok] = 1
    return {"text": text, "types": types, "labels": labels, "is_random": np.int64(is_random),
            "loss_mask": loss_mask, "padding_mask": padding_mask, "truncated": np.int64(truncated)}


def test_token_style_matches_outputs_captured_before_the_change():
    # Captured from the implementation before masking_style existed (sentences from RandomState(100 + seed)).
    expected = {
        0: ([1, 802, 3, 2, 916, 360, 876, 63, 845, 748, 3, 3, 762, 290, 665, 2],
            {2: 845, 8: 588, 10: 536, 11: 812}),
        1: ([1, 347, 848, 3, 3, 85, 983, 46, 654, 2, 767, 326, 3, 120, 15, 918, 487, 3, 2],
            {3: 585, 4: 609, 7: 562, 12: 714, 17: 50}),
        2: ([1, 765, 3, 636, 889, 3, 979, 55, 338, 89, 3, 782, 2], {2: 600, 5: 844, 10: 913}),
    }
    cases = {0: (None, True), 1: (np.arange(5, 50), True), 2: (None, False)}
    for seed, (vocab_ids, head) in cases.items():
        r = np.random.RandomState(100 + seed)
        sentences = [r.randint(10, 1000, size=r.randint(2, 9)) for _ in range(4)]
        s = bd.build_training_sample(sentences, 21, 24, vocab_ids=vocab_ids, masked_lm_prob=0.3, binary_head=head,
                                     rng=np.random.RandomState(seed), masking_style="token", **IDS)
        text, labels = expected[seed]
        assert s["text"].tolist() == text + [0] * (24 - len(text))
        assert {int(i): int(s["labels"][i]) for i in np.flatnonzero(s["labels"] >= 0)} == labels
    r = np.random.RandomState(103)
    sentences = [r.randint(10, 1000, size=r.randint(2, 9)) for _ in range(4)]
    s = bd.build_training_sample(sentences, 12, 16, vocab_ids=None, masked_lm_prob=0.15, binary_head=True,
                                 rng=np.random.RandomState(3), masking_style="token", **IDS)
    assert s["text"].tolist() == [1, 3, 935, 731, 133, 382, 900, 2, 705, 534, 873, 3, 100, 80, 2, 0]
    assert s["types"].tolist() == [0] * 8 + [1] * 7 + [0]
    assert int(s["is_random"]) == 1 and int(s["truncated"]) == 1 and np.flatnonzero(s["loss_mask"]).tolist() == [1, 11]


def test_token_style_matches_frozen_copy_bit_for_bit():
    for seed in range(300):
        r = np.random.RandomState(seed)
        sentences = [r.randint(5, 1000, size=r.randint(1, 20)) for _ in range(r.randint(2, 7))]
        msl = int(r.randint(8, 80))
        args = dict(vocab_ids=None if seed % 3 else np.arange(5, 900), masked_lm_prob=float(r.choice([0.0, 0.15, 0.4])),
                    binary_head=bool(seed % 4), **IDS)
        target = int(r.randint(2, msl - 2))
        got = bd.build_training_sample(sentences, target, msl, rng=np.random.RandomState(seed), masking_style="token",
                                       **args)
        want = frozen_token_sample(sentences, target, msl, rng=np.random.RandomState(seed), **args)
        assert got.keys() == want.keys()
        for key in want:
            assert np.asarray(got[key]).dtype == np.asarray(want[key]).dtype
            np.testing.assert_array_equal(got[key], want[key], err_msg=f"seed {seed} key {key}")
