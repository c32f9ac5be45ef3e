"""tools/merge_datasets.py: --input DIR and --inputs, doc_idx offsets, bytes, dtype and input errors."""
from __future__ import annotations

import importlib.util
import os

import numpy as np
import pytest

from megatron.data.indexed_dataset import MMapIndexedDataset, MMapIndexedDatasetBuilder

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
_spec = importlib.util.spec_from_file_location("_tool_merge_datasets", os.path.join(ROOT, "tools", "merge_datasets.py"))
tool = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tool)


def make(prefix, docs: list[list[list[int]]], dtype=np.uint16) -> None:
    """Write documents (lists of items) with the builder."""
    with MMapIndexedDatasetBuilder(str(prefix) + ".bin", dtype=dtype) as b:
        for doc in docs:
            for item in doc:
                b.add_item(np.asarray(item, dtype=dtype))
            b.end_document()
        b.finalize(str(prefix) + ".idx")


SHARDS = {
    "shard_b": [[[4, 5]], [[6], [7, 8, 9]]],
    "shard_a": [[[1, 2, 3], [10]]],
    "shard_c": [[[11]]],
}


@pytest.fixture
def shard_dir(tmp_path):
    d = tmp_path / "shards"
    d.mkdir()
    for name, docs in SHARDS.items():
        make(d / name, docs)
    return d


def _items(ds):
    return [ds[i].tolist() for i in range(len(ds))]


def test_merge_directory_sorted(tmp_path, shard_dir, capsys):
    out = str(tmp_path / "merged")
    assert tool.main(["--input", str(shard_dir), "--output-prefix", out]) == 0
    ds = MMapIndexedDataset(out)
    assert _items(ds) == [[1, 2, 3], [10], [4, 5], [6], [7, 8, 9], [11]]
    assert ds.sizes.tolist() == [3, 1, 2, 1, 3, 1]
    assert ds.doc_idx.tolist() == [0, 2, 3, 5, 6]
    assert ds.dtype == np.uint16
    expected = b"".join(open(shard_dir / f"{n}.bin", "rb").read() for n in ("shard_a", "shard_b", "shard_c"))
    assert open(out + ".bin", "rb").read() == expected
    assert "merged 3 datasets" in capsys.readouterr().out


def test_merge_explicit_order(tmp_path, shard_dir):
    out = str(tmp_path / "m2")
    assert tool.main(["--inputs", str(shard_dir / "shard_c"), str(shard_dir / "shard_b"), "--output-prefix", out]) == 0
    ds = MMapIndexedDataset(out)
    assert _items(ds) == [[11], [4, 5], [6], [7, 8, 9]]
    assert ds.doc_idx.tolist() == [0, 1, 2, 4]


def test_incomplete_prefix_skipped_and_output_in_dir_excluded(shard_dir, capsys):
    (shard_dir / "partial.bin").write_bytes(b"\0\0")
    (shard_dir / "shard_a.bin.12345.tmp").write_bytes(b"junk")
    out = str(shard_dir / "all")
    assert tool.main(["--input", str(shard_dir), "--output-prefix", out]) == 0
    assert "skipping incomplete dataset" in capsys.readouterr().err
    assert len(MMapIndexedDataset(out)) == 6
    # running again must not merge the previous output into itself
    assert tool.main(["--input", str(shard_dir), "--output-prefix", out]) == 0
    assert len(MMapIndexedDataset(out)) == 6


def test_dtype_mismatch_is_a_clear_error(tmp_path, shard_dir, capsys):
    make(shard_dir / "shard_d", [[[1, 2]]], dtype=np.int32)
    out = tmp_path / "out"
    assert tool.main(["--input", str(shard_dir), "--output-prefix", str(out / "m")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "shard_d.idx: dtype int32 differs from uint16" in err and "shard_a.idx" in err
    assert not out.exists() or os.listdir(out) == []


def test_input_errors(tmp_path, shard_dir, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert tool.main(["--input", str(empty), "--output-prefix", str(tmp_path / "x")]) == 2
    assert "no complete .bin/.idx dataset found" in capsys.readouterr().err
    assert tool.main(["--input", str(tmp_path / "nodir"), "--output-prefix", str(tmp_path / "x")]) == 2
    assert "not a directory" in capsys.readouterr().err
    assert tool.main(["--inputs", str(shard_dir / "missing"), "--output-prefix", str(tmp_path / "x")]) == 2
    assert "missing.idx: index file not found" in capsys.readouterr().err
    a = str(shard_dir / "shard_a")
    assert tool.main(["--inputs", a, "--output-prefix", a]) == 2
    assert "is also an input" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "x.bin")
