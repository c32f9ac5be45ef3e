"""BERT dataset: samples mapping (vs a loop reference), sample layout, masking statistics, exact epochs, pinning."""
from __future__ import annotations

import os

import numpy as np
import pytest

from megatron.data import bert_dataset as bd
from megatron.data.dataset_utils import DatasetError
from megatron.data.indexed_dataset import MMapIndexedDatasetBuilder

IDS = dict(cls_id=1, sep_id=2, mask_id=3, pad_id=0, vocab_size=1000)


def random_documents(rng: np.random.RandomState, n_docs: int) -> list[list[np.ndarray]]:
    """Documents of 0-7 sentences of 1-14 tokens (ids >= 10, so never special)."""
    docs = []
    for _ in range(n_docs):
        docs.append([rng.randint(10, 1000, size=rng.randint(1, 15)) for _ in range(rng.randint(0, 8))])
    docs[2] = [rng.randint(10, 1000, size=5), rng.randint(10, 1000, size=600)]  # long sentence: skipped
    docs[3] = [rng.randint(10, 1000, size=9)]  # one sentence: skipped with the binary head
    return docs


def write_sentences(prefix: str, docs: list[list[np.ndarray]]) -> None:
    """Sentence-level data: one item per sentence, doc_idx marks documents."""
    builder = MMapIndexedDatasetBuilder(prefix + ".bin", dtype=np.uint16)
    for doc in docs:
        for sentence in doc:
            builder.add_item(sentence)
        builder.end_document()
    builder.finalize(prefix + ".idx")


@pytest.fixture()
def corpus(tmp_path):
    docs = random_documents(np.random.RandomState(0), 120)
    prefix = str(tmp_path / "bert_text_sentence")
    write_sentences(prefix, docs)
    return prefix, docs


def loop_mapping(doc_idx, sizes, epochs, target, ssp, seed, min_sent):
    """Sentence-by-sentence grouping (Megatron's rules) with the same per-sentence target draws."""
    base, stop = int(doc_idx[0]), int(doc_idx[-1])
    rng = np.random.RandomState(seed)
    rows = []
    for _ in range(epochs):
        n = stop - base
        short = rng.random_sample(n) < ssp
        targets = np.where(short, rng.randint(2, target + 1, size=n), target)
        for a, b in zip(doc_idx[:-1], doc_idx[1:]):
            a, b = int(a), int(b)
            if b - a < min_sent or (b - a > 1 and (sizes[a:b] > 512).any()):
                continue
            start, seq_len, num = a, 0, 0
            for s in range(a, b):
                seq_len += int(sizes[s])
                num += 1
                remaining = b - s - 1
                t = int(targets[start - base])
                if (seq_len >= t and remaining > 1 and num >= min_sent) or remaining == 0:
                    rows.append((start, s + 1, t))
                    start, seq_len, num = s + 1, 0, 0
    mapping = np.array(rows, dtype=np.uint32)
    np.random.RandomState(seed + 1).shuffle(mapping)
    return mapping


@pytest.mark.parametrize("min_sent", [1, 2])
@pytest.mark.parametrize("seed", [0, 3])
def test_samples_mapping_equals_loop_reference(min_sent, seed):
    rng = np.random.RandomState(seed)
    docs = random_documents(rng, 60)
    sizes = np.array([len(s) for d in docs for s in d], dtype=np.int32)
    doc_idx = np.concatenate([[0], np.cumsum([len(d) for d in docs])])[10:51]  # a split in the middle
    got = bd.build_samples_mapping(doc_idx, sizes, 3, None, 20, 0.3, seed, min_sent)
    np.testing.assert_array_equal(got, loop_mapping(doc_idx, sizes, 3, 20, 0.3, seed, min_sent))


def test_samples_mapping_whole_epochs_until_max_num_samples():
    docs = random_documents(np.random.RandomState(1), 40)
    sizes = np.array([len(s) for d in docs for s in d], dtype=np.int32)
    doc_idx = np.concatenate([[0], np.cumsum([len(d) for d in docs])])
    per_epoch = len(bd.build_samples_mapping(doc_idx, sizes, 1, None, 20, 0.0, 5, 2))
    got = bd.build_samples_mapping(doc_idx, sizes, None, per_epoch * 2 + 1, 20, 0.0, 5, 2)
    assert len(got) == 3 * per_epoch


def test_trimmed_lengths_match_token_by_token_rule():
    rng = np.random.RandomState(0)
    for _ in range(300):
        la, lb, m = (int(v) for v in rng.randint(0, 40, size=3))
        a, b = la, lb
        while a + b > m:
            if a > b:
                a -= 1
            else:
                b -= 1
        assert bd.trimmed_lengths(la, lb, m) == (a, b)


def build(prefix, nums=(200, 20, 0), **kw):
    args = dict(max_seq_length=40, seed=1234)
    args.update(kw)
    msl, seed = args.pop("max_seq_length"), args.pop("seed")
    return bd.build_train_valid_test_datasets([prefix], "mmap", "90,10,0", list(nums), msl, seed=seed, **IDS, **args)


def test_shapes_layout_padding_and_content(corpus):
    prefix, docs = corpus
    sentences = [s for d in docs for s in d]
    train, valid, test = build(prefix, masked_lm_prob=0.0)
    assert test is None and len(train) >= 200 and len(valid) >= 20
    for i in range(len(train)):
        s = train[i]
        for key in ("text", "types", "labels", "loss_mask", "padding_mask"):
            assert s[key].shape == (40,) and s[key].dtype == np.int64
        n = int(s["padding_mask"].sum())
        assert s["padding_mask"][:n].all() and not s["padding_mask"][n:].any()
        text, types = s["text"], s["types"]
        assert (text[n:] == IDS["pad_id"]).all() and text[0] == IDS["cls_id"] and text[n - 1] == IDS["sep_id"]
        seps = np.flatnonzero(text[:n] == IDS["sep_id"])
        assert len(seps) == 2  # [CLS] A [SEP] B [SEP]
        assert (types[: seps[0] + 1] == 0).all() and (types[seps[0] + 1 : n] == 1).all() and not types[n:].any()
        assert (s["labels"] == -1).all() and not s["loss_mask"].any()
        start, end, target = (int(v) for v in train.samples_mapping[i])
        assert n <= target + 3
        if not s["truncated"]:
            a, b = text[1 : seps[0]], text[seps[0] + 1 : n - 1]
            joined = np.concatenate([b, a]) if s["is_random"] else np.concatenate([a, b])
            np.testing.assert_array_equal(joined, np.concatenate(sentences[start:end]))


@pytest.mark.parametrize("style", ["token", "whole-word"])
def test_masking_statistics(corpus, style):
    # token: 15 % of the non-special positions; whole-word: 15 % of all tokens, specials counted (Megatron)
    prefix, _ = corpus
    train = build(prefix, nums=(600, 1, 0), max_seq_length=64, short_seq_prob=0.0, masking_style=style)[0]
    masked = candidates = total = as_mask = kept = 0
    swaps = []
    for i in range(600):
        s = train[i]
        n = int(s["padding_mask"].sum())
        special = (np.arange(64) == 0) | (s["text"] == IDS["sep_id"]) & (s["loss_mask"] == 0)
        cand = int(n - special[:n].sum())
        pos = np.flatnonzero(s["loss_mask"])
        assert (s["labels"][pos] >= 10).all() and (s["labels"][s["loss_mask"] == 0] == -1).all()
        assert not s["loss_mask"][n:].any() and s["loss_mask"][0] == 0
        masked += len(pos)
        candidates += cand
        total += n
        as_mask += int((s["text"][pos] == IDS["mask_id"]).sum())
        kept += int((s["text"][pos] == s["labels"][pos]).sum())
        swaps.append(int(s["is_random"]))
    assert 0.14 <= masked / (candidates if style == "token" else total) <= 0.16
    assert 0.77 <= as_mask / masked <= 0.83
    assert 0.07 <= kept / masked <= 0.13  # the rest (~10 %) are random tokens
    assert 0.4 <= np.mean(swaps) <= 0.6


def test_determinism_and_seed(corpus, tmp_path):
    prefix, _ = corpus
    a = build(prefix, index_cache_dir=str(tmp_path / "a"))[0]
    b = build(prefix, index_cache_dir=str(tmp_path / "b"))[0]
    c = build(prefix, index_cache_dir=str(tmp_path / "c"), seed=99)[0]
    for key in ("text", "labels", "types"):
        np.testing.assert_array_equal(np.stack([a[i][key] for i in range(50)]), np.stack([b[i][key] for i in range(50)]))
    assert not np.array_equal(np.stack([a[i]["text"] for i in range(50)]), np.stack([c[i]["text"] for i in range(50)]))


def test_exact_epochs_length_and_name(corpus):
    prefix, _ = corpus
    one = build(prefix, nums=(1, 1, 1), short_seq_prob=0.0, train_data_exact_num_epochs=1)[0]
    three = build(prefix, nums=(1, 1, 1), short_seq_prob=0.0, train_data_exact_num_epochs=3)[0]
    assert len(three) == 3 * len(one)
    assert os.path.isfile(f"{prefix}_train_indexmap_exact3ep_37msl_0.00ssp_1234s.npy")
    assert os.path.isfile(f"{prefix}_valid_indexmap_1mns_37msl_0.00ssp_1234s.npy")


def test_pinned_train_idx_path_and_errors(corpus, tmp_path):
    prefix, _ = corpus
    ref = build(prefix, nums=(1, 1, 1), train_data_exact_num_epochs=2, index_cache_dir=str(tmp_path / "an"),
                return_data_index=True)[0]
    path = str(tmp_path / "an" / "bert_text_sentence_train_indexmap_exact2ep_37msl_0.10ssp_1234s.npy")
    pinned = build(prefix, nums=(5000, 10, 0), train_idx_path=path)[0]
    assert len(pinned) == len(ref)
    for i in (0, 7, len(ref) - 1):
        np.testing.assert_array_equal(pinned[i]["text"], ref[i]["text"])
        assert ref[i]["index"].tolist() == [i]
    with pytest.raises(DatasetError, match="--train-idx-path .*missing.npy: file not found"):
        build(prefix, train_idx_path=str(tmp_path / "missing.npy"))
    with pytest.raises(DatasetError, match="--train-idx-path .* does not match"):  # made for 40 tokens
        build(prefix, max_seq_length=16, train_idx_path=path)
    np.save(tmp_path / "bad.npy", np.zeros((4, 2), dtype=np.uint32))
    with pytest.raises(DatasetError, match="--train-idx-path .* does not match"):
        build(prefix, train_idx_path=str(tmp_path / "bad.npy"))


def test_no_binary_head_and_sentence_level_error(corpus, tmp_path):
    prefix, _ = corpus
    train = build(prefix, binary_head=False, masked_lm_prob=0.0)[0]
    s = train[0]
    n = int(s["padding_mask"].sum())
    assert (s["text"][:n] == IDS["sep_id"]).sum() == 1 and not s["types"].any() and s["is_random"] == 0
    one_sentence_docs = str(tmp_path / "docs")
    write_sentences(one_sentence_docs, [[np.arange(10, 30)] for _ in range(20)])
    with pytest.raises(DatasetError, match="--split-sentences"):
        build(one_sentence_docs)


def test_no_eligible_document_error_names_the_data_file_and_split(tmp_path):
    # Regression: document-level data given to BERT raised an error naming neither the file nor the split.
    prefix = str(tmp_path / "gpt_text_document")
    write_sentences(prefix, [[np.arange(10, 30)] for _ in range(20)])
    with pytest.raises(DatasetError, match=r"gpt_text_document \(train split, documents 0\.\.\d+\): no document"):
        build(prefix)
