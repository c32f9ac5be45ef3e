"""Megatron's MMapIndexedDataset API as upstream scripts call it: size(i), get/set_doc_idx, the nested Index (and its
writer), empty slices, and a .bin with trailing bytes read with a warning."""
from __future__ import annotations

import logging

import numpy as np
import pytest

from megatron.data import indexed_dataset as ix
from megatron.data.indexed_dataset import MMapIndexedDataset, MMapIndexedDatasetBuilder

ITEMS = [[1, 2, 3], [4], [5, 6], [7, 8, 9, 10]]
DOC_IDX = [0, 2, 4]


def build(prefix: str, dtype=np.uint16) -> MMapIndexedDataset:
    builder = MMapIndexedDatasetBuilder(ix.data_file_path(prefix), dtype=dtype)
    for i, item in enumerate(ITEMS):
        builder.add_item(np.array(item))
        if i + 1 in DOC_IDX[1:]:
            builder.end_document()
    builder.finalize(ix.index_file_path(prefix))
    return MMapIndexedDataset(prefix)


def test_size_and_doc_idx_accessors(tmp_path):
    ds = build(str(tmp_path / "a"))
    assert [int(ds.size(i)) for i in range(len(ds))] == [3, 1, 2, 4]
    assert ds.size(np.array([0, 3])).tolist() == [3, 4]
    assert ds.get_doc_idx().tolist() == DOC_IDX
    ds.set_doc_idx(np.array([0, 1, 4]))  # what upstream's BERT mapping does around a document range
    assert ds.get_doc_idx().tolist() == [0, 1, 4] and ds.doc_idx.tolist() == [0, 1, 4]
    assert MMapIndexedDataset(str(tmp_path / "a")).doc_idx.tolist() == DOC_IDX  # the file is untouched


def test_nested_index_reads_and_writes_the_idx(tmp_path):
    prefix = str(tmp_path / "b")
    ds = build(prefix, np.int32)
    index = MMapIndexedDataset.Index(ix.index_file_path(prefix))
    assert len(index) == 4 and index.dtype == np.int32
    assert index.sizes.tolist() == [3, 1, 2, 4] and index.doc_idx.tolist() == DOC_IDX
    assert [(int(p), int(n)) for p, n in (index[i] for i in range(4))] == [(0, 3), (12, 1), (16, 2), (24, 4)]
    written = str(tmp_path / "w.idx")
    with MMapIndexedDataset.Index.writer(written, np.int32) as writer:
        writer.write([3, 1, 2, 4], DOC_IDX)
    assert open(written, "rb").read() == open(ix.index_file_path(prefix), "rb").read()
    assert isinstance(ds._index, MMapIndexedDataset.Index)


def test_index_writer_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "x.idx"
    with pytest.raises(RuntimeError):
        with MMapIndexedDataset.Index.writer(str(target), np.uint16) as writer:
            writer.write([1], [0, 1])
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


def test_slices_follow_upstream(tmp_path):
    ds = build(str(tmp_path / "c"), np.int64)
    for empty in (ds[1:1], ds[0:0], ds[3:1], ds[-1:-1]):
        assert isinstance(empty, list) and len(empty) == 1
        assert empty[0].size == 0 and empty[0].dtype == np.int64
    assert [x.tolist() for x in ds[1:3]] == ITEMS[1:3]
    assert [x.tolist() for x in ds[2:100]] == ITEMS[2:]
    with pytest.raises(IndexError, match="starts at its end"):  # upstream fails here too (pointers[len])
        ds[4:4]


def test_bin_with_trailing_bytes_is_read_with_a_warning(tmp_path, caplog):
    prefix = str(tmp_path / "t")
    build(prefix)
    with open(ix.data_file_path(prefix), "ab") as f:
        f.write(b"\x01\x02\x03")
    with caplog.at_level(logging.WARNING, logger="megatron.data.indexed_dataset"):
        ds = MMapIndexedDataset(prefix)
    assert [ds[i].tolist() for i in range(len(ds))] == ITEMS
    assert "has 3 trailing bytes" in caplog.text and "t.bin" in caplog.text
    # merging copies only the bytes the index describes
    out = str(tmp_path / "merged")
    with MMapIndexedDatasetBuilder(ix.data_file_path(out), dtype=np.uint16) as builder:
        builder.merge_file_(prefix)
        builder.finalize(ix.index_file_path(out))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="megatron.data.indexed_dataset"):
        merged = MMapIndexedDataset(out)
    assert [merged[i].tolist() for i in range(len(merged))] == ITEMS and "trailing" not in caplog.text


def test_short_bin_is_still_an_error(tmp_path):
    prefix = str(tmp_path / "s")
    build(prefix)
    data = open(ix.data_file_path(prefix), "rb").read()
    open(ix.data_file_path(prefix), "wb").write(data[:-2])
    with pytest.raises(ix.IndexedDatasetError, match=r"s\.bin: truncated"):
        MMapIndexedDataset(prefix)
