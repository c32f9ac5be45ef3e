"""MMIDIDX format: byte layout from the spec, round trips, merge, validation of corrupt files."""
from __future__ import annotations

import os
import pickle
import struct

import numpy as np
import pytest
import torch

from megatron.data import indexed_dataset as ix
from megatron.data.indexed_dataset import IndexedDatasetError, MMapIndexedDataset, MMapIndexedDatasetBuilder

MEGATRON_CODES = {1: np.uint8, 2: np.int8, 3: np.int16, 4: np.int32, 5: np.int64, 6: np.float64, 7: np.float32, 8: np.uint16}

# three documents: [a], [b, c], [d]; item sizes 3, 0, 2, 4
ITEMS = [[5, 1, 7], [], [60000, 2], [9, 9, 9, 65535]]
DOC_IDX = [0, 1, 3, 4]


def write_by_hand(prefix: str, items: list[list[int]], doc_idx: list[int], dtype: type, dtype_code: int) -> None:
    """Write a .bin/.idx pair straight from spec §1.1 with struct/numpy (no project code)."""
    sizes = [len(x) for x in items]
    itemsize = np.dtype(dtype).itemsize
    pointers, pos = [], 0
    for s in sizes:
        pointers.append(pos)
        pos += s * itemsize
    with open(prefix + ".idx", "wb") as f:
        f.write(b"MMIDIDX\x00\x00")
        f.write(struct.pack("<Q", 1))
        f.write(struct.pack("<B", dtype_code))
        f.write(struct.pack("<Q", len(sizes)))
        f.write(struct.pack("<Q", len(doc_idx)))
        f.write(struct.pack(f"<{len(sizes)}i", *sizes))
        f.write(struct.pack(f"<{len(pointers)}q", *pointers))
        f.write(struct.pack(f"<{len(doc_idx)}q", *doc_idx))
    with open(prefix + ".bin", "wb") as f:
        for x in items:
            f.write(np.asarray(x, dtype=np.dtype(dtype).newbyteorder("<")).tobytes())


def build(prefix: str, items, doc_idx, dtype) -> None:
    """Write items with the builder, closing documents where doc_idx says."""
    ends = set(doc_idx[1:])
    with MMapIndexedDatasetBuilder(prefix + ".bin", dtype=dtype) as b:
        for i, x in enumerate(items):
            b.add_item(np.asarray(x, dtype=dtype))
            if i + 1 in ends:
                b.end_document()
        b.finalize(prefix + ".idx")


def test_dtype_table_matches_megatron():
    assert {k: np.dtype(v) for k, v in MEGATRON_CODES.items()} == ix.DTYPES
    assert ix.code(np.uint16) == 8 and ix.code(np.float32) == 7 and ix.code(np.dtype("float64")) == 6
    assert ix.best_fitting_dtype(50257) == np.uint16
    assert ix.best_fitting_dtype(65500) == np.int32
    assert ix.best_fitting_dtype(None) == np.int32
    with pytest.raises(ValueError, match="no code"):
        ix.code(np.uint32)


def test_hand_written_file_is_read_back(tmp_path):
    prefix = str(tmp_path / "hand")
    write_by_hand(prefix, ITEMS, DOC_IDX, np.uint16, 8)
    ds = MMapIndexedDataset(prefix)
    assert len(ds) == 4 and ds.dtype == np.uint16
    assert ds.sizes.dtype == np.int32 and ds.sizes.tolist() == [3, 0, 2, 4]
    assert ds.pointers.dtype == np.int64 and ds.pointers.tolist() == [0, 6, 6, 10]
    assert ds.doc_idx.dtype == np.int64 and ds.doc_idx.tolist() == DOC_IDX
    for i, x in enumerate(ITEMS):
        assert ds[i].tolist() == x
    assert ds[-1].tolist() == ITEMS[-1]


def test_builder_bytes_equal_hand_written(tmp_path):
    hand, built = str(tmp_path / "hand"), str(tmp_path / "built")
    write_by_hand(hand, ITEMS, DOC_IDX, np.uint16, 8)
    build(built, ITEMS, DOC_IDX, np.uint16)
    for ext in (".idx", ".bin"):
        assert open(hand + ext, "rb").read() == open(built + ext, "rb").read()
    header = open(built + ".idx", "rb").read(34)
    assert header[:9] == b"MMIDIDX\x00\x00" and struct.unpack("<QBQQ", header[9:]) == (1, 8, 4, 4)


@pytest.mark.parametrize("dtype_code", sorted(MEGATRON_CODES))
def test_round_trip_each_dtype(tmp_path, dtype_code):
    dtype = np.dtype(MEGATRON_CODES[dtype_code])
    rng = np.random.default_rng(dtype_code)
    items = [rng.integers(0, 100, size=int(rng.integers(0, 9))).astype(dtype) for _ in range(30)]
    if dtype.kind == "f":
        items = [x + dtype.type(0.25) for x in items]
    prefix = str(tmp_path / f"d{dtype_code}")
    with MMapIndexedDatasetBuilder(prefix + ".bin", dtype=dtype) as b:
        b.add_items(items[:10])
        b.end_document()
        for x in items[10:]:
            b.add_item(torch.from_numpy(x.copy()) if dtype_code in (1, 5, 6) else x)
        b.end_document()
        b.finalize(prefix + ".idx")
    raw = open(prefix + ".idx", "rb").read()
    assert raw[17] == dtype_code
    hand = str(tmp_path / "hand")
    write_by_hand(hand, [x.tolist() for x in items], [0, 10, 30], dtype, dtype_code)
    assert open(hand + ".bin", "rb").read() == open(prefix + ".bin", "rb").read()
    assert open(hand + ".idx", "rb").read() == raw
    ds = ix.make_dataset(prefix, impl="infer")
    assert ds.dtype == dtype and len(ds) == 30 and ds.doc_idx.tolist() == [0, 10, 30]
    for i, x in enumerate(items):
        np.testing.assert_array_equal(ds[i], x)
        assert ds[i].dtype == dtype


def test_get_with_offset_and_length(tmp_path):
    prefix = str(tmp_path / "g")
    build(prefix, ITEMS, DOC_IDX, np.int32)
    ds = MMapIndexedDataset(prefix, skip_warmup=False)
    assert ds.get(3).tolist() == [9, 9, 9, 65535]
    assert ds.get(3, offset=1).tolist() == [9, 9, 65535]
    assert ds.get(3, offset=1, length=2).tolist() == [9, 9]
    assert ds.get(0, offset=2, length=1).tolist() == [7]
    assert ds.get(3, offset=4).tolist() == []
    with pytest.raises(IndexError, match="outside item 3"):
        ds.get(3, offset=2, length=3)
    with pytest.raises(IndexError, match="out of range"):
        ds.get(4)


def test_slices_are_split_contiguous_reads(tmp_path):
    prefix = str(tmp_path / "s")
    build(prefix, ITEMS, DOC_IDX, np.int64)
    ds = MMapIndexedDataset(prefix)
    assert [x.tolist() for x in ds[0:4]] == ITEMS
    assert [x.tolist() for x in ds[1:3]] == ITEMS[1:3]
    assert [x.tolist() for x in ds[-2:]] == ITEMS[-2:]
    empty = ds[2:2]  # upstream: a list holding one empty array
    assert isinstance(empty, list) and len(empty) == 1 and empty[0].size == 0 and empty[0].dtype == ds.dtype
    with pytest.raises(ValueError, match="contiguous"):
        ds[::2]


def test_pickle_reopens(tmp_path):
    prefix = str(tmp_path / "p")
    build(prefix, ITEMS, DOC_IDX, np.uint16)
    ds = pickle.loads(pickle.dumps(MMapIndexedDataset(prefix)))
    assert ds[2].tolist() == ITEMS[2] and ds.doc_idx.tolist() == DOC_IDX


def test_add_doc_and_add_docs(tmp_path):
    prefix = str(tmp_path / "docs")
    with MMapIndexedDatasetBuilder(prefix + ".bin", dtype=np.uint16) as b:
        b.add_doc([1, 2, 3, 4, 5], [2, 3])
        b.add_docs(np.arange(10, 16), np.array([1, 2, 3]), np.array([2, 1]))
        with pytest.raises(ValueError, match="do not add up"):
            b.add_doc([1, 2], [3])
        b.finalize(prefix + ".idx")
    ds = MMapIndexedDataset(prefix)
    assert ds.sizes.tolist() == [2, 3, 1, 2, 3]
    assert ds.doc_idx.tolist() == [0, 2, 4, 5]
    assert ds[4].tolist() == [13, 14, 15]


def test_builder_refuses_values_that_do_not_fit(tmp_path):
    with MMapIndexedDatasetBuilder(str(tmp_path / "o.bin"), dtype=np.uint16) as b:
        with pytest.raises(ix.DtypeOverflowError, match=r"65536.*uint16"):
            b.add_item(np.array([1, 65536]))
        with pytest.raises(ix.DtypeOverflowError, match="uint16"):
            b.add_item([-1])
        with pytest.raises(ix.DtypeOverflowError, match="non-integer"):
            b.add_item(np.array([1.5]))
        b.add_item(np.array([65535], dtype=np.int64))
        b.finalize(str(tmp_path / "o.idx"))
    assert MMapIndexedDataset(str(tmp_path / "o"))[0].tolist() == [65535]


def test_merge(tmp_path):
    a, b, out = (str(tmp_path / n) for n in ("a", "b", "out"))
    build(a, ITEMS, DOC_IDX, np.uint16)
    items_b = [[1], [2, 3], [4, 5, 6]]
    build(b, items_b, [0, 2, 3], np.uint16)
    with MMapIndexedDatasetBuilder(out + ".bin", dtype=np.uint16) as m:
        m.add_item(np.array([42], dtype=np.uint16))
        m.end_document()
        m.merge_file_(a)
        m.merge_file_(b)
        m.finalize(out + ".idx")
    ds = MMapIndexedDataset(out)
    assert ds.sizes.tolist() == [1, 3, 0, 2, 4, 1, 2, 3]
    assert ds.doc_idx.tolist() == [0, 1, 2, 4, 5, 7, 8]
    assert [x.tolist() for x in ds[0:8]] == [[42]] + ITEMS + items_b
    assert open(out + ".bin", "rb").read() == (
        np.array([42], np.uint16).tobytes() + open(a + ".bin", "rb").read() + open(b + ".bin", "rb").read()
    )
    with MMapIndexedDatasetBuilder(str(tmp_path / "x.bin"), dtype=np.int32) as m:
        with pytest.raises(IndexedDatasetError, match=r"a\.idx.*uint16.*int32"):
            m.merge_file_(a)
    assert not os.path.exists(tmp_path / "x.bin")


@pytest.mark.parametrize(
    "lo,hi,expected",
    [
        (0, 0, np.uint8), (0, 255, np.uint8), (0, 256, np.uint16), (3, 65535, np.uint16), (0, 65536, np.uint32),
        (0, 2**32 - 1, np.uint32), (0, 2**32, np.uint64), (-1, 127, np.int8), (-128, 5, np.int8),
        (-129, 0, np.int16), (-1, 128, np.int16), (-1, 32768, np.int32), (-(2**31), 2**31 - 1, np.int32),
        (-1, 2**31, np.int64), (-(2**63), 0, np.int64),
    ],
)
def test_find_fit_int_dtype(lo, hi, expected):
    assert ix.find_fit_int_dtype(lo, hi) == np.dtype(expected)


def test_find_fit_int_dtype_errors():
    with pytest.raises(ValueError):
        ix.find_fit_int_dtype(5, 1)
    with pytest.raises(ValueError):
        ix.find_fit_int_dtype(-1, 2**64)


# ---------------------------------------------------------------------------------- corruption


def _corrupt(tmp_path, mutate) -> str:
    prefix = str(tmp_path / "bad")
    write_by_hand(prefix, ITEMS, DOC_IDX, np.uint16, 8)
    idx = bytearray(open(prefix + ".idx", "rb").read())
    bin_ = bytearray(open(prefix + ".bin", "rb").read())
    idx, bin_ = mutate(idx, bin_)
    open(prefix + ".idx", "wb").write(bytes(idx))
    open(prefix + ".bin", "wb").write(bytes(bin_))
    return prefix


def _set(buf: bytearray, offset: int, fmt: str, value) -> bytearray:
    struct.pack_into(fmt, buf, offset, value)
    return buf


CORRUPTIONS = {
    "bad magic": (lambda i, b: (b"XXIDIDX\x00\x00" + i[9:], b), r"bad\.idx: bad magic"),
    "legacy magic": (lambda i, b: (b"TNTIDX\x00\x00" + i[8:], b), r"bad\.idx: legacy .*preprocess_data"),
    "bad version": (lambda i, b: (_set(i, 9, "<Q", 2), b), r"bad\.idx: unsupported version 2"),
    "unknown code": (lambda i, b: (_set(i, 17, "<B", 9), b), r"bad\.idx: unknown dtype code 9"),
    "truncated header": (lambda i, b: (i[:20], b), r"bad\.idx: truncated header"),
    "truncated idx": (lambda i, b: (i[:-8], b), r"bad\.idx: truncated"),
    "trailing idx": (lambda i, b: (i + b"\0", b), r"bad\.idx: has trailing bytes"),
    "N too large": (lambda i, b: (_set(i, 18, "<Q", 5), b), r"bad\.idx: truncated.*N=5"),
    "truncated bin": (lambda i, b: (i, b[:-2]), r"bad\.bin: truncated"),
    "size overruns bin": (lambda i, b: (_set(i, 34 + 12, "<i", 5), b), r"bad\.bin: truncated"),
    "pointers overrun": (lambda i, b: (_set(i, 34 + 16 + 24, "<q", 1000), b), r"bad\.idx: pointers\[3\] = 1000"),
    "negative size": (lambda i, b: (_set(i, 34 + 4, "<i", -1), b), r"bad\.idx: item 1 has negative size"),
    "doc_idx start": (lambda i, b: (_set(i, 34 + 48, "<q", 1), b), r"bad\.idx: doc_idx must start with 0"),
    "doc_idx decreasing": (lambda i, b: (_set(i, 34 + 48 + 16, "<q", 0), b), r"bad\.idx: doc_idx is not non-decreasing"),
    "doc_idx beyond N": (lambda i, b: (_set(i, 34 + 48 + 24, "<q", 5), b), r"bad\.idx: doc_idx last entry 5 exceeds"),
}


@pytest.mark.parametrize("case", sorted(CORRUPTIONS))
def test_corrupt_files_raise_clear_error(tmp_path, case):
    mutate, pattern = CORRUPTIONS[case]
    prefix = _corrupt(tmp_path, mutate)
    with pytest.raises(IndexedDatasetError, match=pattern):
        MMapIndexedDataset(prefix)


def test_missing_files(tmp_path):
    with pytest.raises(IndexedDatasetError, match=r"nothing\.idx: index file not found"):
        MMapIndexedDataset(str(tmp_path / "nothing"))
    prefix = str(tmp_path / "nobin")
    write_by_hand(prefix, ITEMS, DOC_IDX, np.uint16, 8)
    os.remove(prefix + ".bin")
    with pytest.raises(IndexedDatasetError, match=r"nobin\.bin: data file not found"):
        MMapIndexedDataset(prefix)
    assert not ix.dataset_exists(prefix)


def test_legacy_format_via_infer(tmp_path):
    prefix = _corrupt(tmp_path, CORRUPTIONS["legacy magic"][0])
    with pytest.raises(IndexedDatasetError, match="legacy"):
        ix.make_dataset(prefix, impl="infer")
    with pytest.raises(ValueError, match="lazy"):
        ix.make_dataset(prefix, impl="lazy")


@pytest.mark.parametrize("ds_code,ds_dtype", [(8, np.uint64), (6, np.uint16)])
def test_deepspeed_table_file_is_detected(tmp_path, ds_code, ds_dtype):
    prefix = str(tmp_path / "ds")
    items = [[1, 2, 3], [4], [5, 6]]
    write_by_hand(prefix, items, [0, 3], ds_dtype, ds_code)  # as DeepSpeed's writer would
    with pytest.raises(IndexedDatasetError, match=r"ds\.idx: .*DeepSpeed's dtype table.*dtype_table='deepspeed'"):
        MMapIndexedDataset(prefix)
    ds = MMapIndexedDataset(prefix, dtype_table="deepspeed")
    assert ds.dtype == ds_dtype and [x.tolist() for x in ds[0:3]] == items
    # and the reverse: a Megatron file opened with DeepSpeed's table
    meg = str(tmp_path / "meg")
    build(meg, items, [0, 3], np.uint16)
    with pytest.raises(IndexedDatasetError, match=r"meg\.idx: .*Megatron's dtype table.*dtype_table='megatron'"):
        MMapIndexedDataset(meg, dtype_table="deepspeed")


def test_code_7_follows_selected_table(tmp_path):
    prefix = str(tmp_path / "c7")
    write_by_hand(prefix, [[1, 2]], [0, 1], np.uint32, 7)
    assert MMapIndexedDataset(prefix).dtype == np.float32  # same itemsize: cannot be told apart
    assert MMapIndexedDataset(prefix, dtype_table="deepspeed")[0].tolist() == [1, 2]


def test_interrupted_builder_leaves_nothing(tmp_path):
    prefix = str(tmp_path / "crash")
    with pytest.raises(RuntimeError, match="boom"):
        with MMapIndexedDatasetBuilder(prefix + ".bin", dtype=np.uint16) as b:
            b.add_item(np.arange(10))
            b.end_document()
            raise RuntimeError("boom")
    assert os.listdir(tmp_path) == []
    # no finalize: nothing published either
    with MMapIndexedDatasetBuilder(prefix + ".bin", dtype=np.uint16) as b:
        b.add_item(np.arange(3))
    assert os.listdir(tmp_path) == []


def test_finalize_publishes_bin_then_idx_and_replaces_old(tmp_path):
    prefix = str(tmp_path / "r")
    build(prefix, ITEMS, DOC_IDX, np.uint16)
    b = MMapIndexedDatasetBuilder(prefix + ".bin", dtype=np.uint16)
    b.add_item([7, 7])
    b.end_document()
    temps = [f for f in os.listdir(tmp_path) if f not in ("r.bin", "r.idx")]
    assert len(temps) == 1 and temps[0].startswith("r.bin.") and temps[0].endswith(".tmp")
    assert MMapIndexedDataset(prefix)[0].tolist() == ITEMS[0]  # old files untouched until finalize
    b.finalize(prefix + ".idx")
    assert sorted(os.listdir(tmp_path)) == ["r.bin", "r.idx"]
    assert MMapIndexedDataset(prefix)[0:1][0].tolist() == [7, 7]


def test_inspect_dataset_hint_names_its_own_flag(tmp_path, capsys):
    """tools/inspect_dataset.py turns the library's Python hint into its own --dtype-table flag."""
    import importlib.util
    import os

    prefix = str(tmp_path / "ds")
    write_by_hand(prefix, [[1, 2, 3], [4]], [0, 2], np.uint64, 8)  # DeepSpeed's table: code 8 = uint64
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    spec = importlib.util.spec_from_file_location("_tool_inspect_dataset", os.path.join(root, "tools",
                                                                                          "inspect_dataset.py"))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    assert tool.main([prefix]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Read it with --dtype-table deepspeed" in err[0] and "MMapIndexedDataset(" not in err[0]
    assert tool.main([prefix, "--dtype-table", "deepspeed"]) == 0
