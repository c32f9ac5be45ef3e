"""The token-id scan runs on one rank per node (LOCAL_RANK 0); the node's other ranks take its verdict."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

import megatron.data.validation as validation
from megatron.config import ConfigError
from megatron.data.indexed_dataset import MMapIndexedDatasetBuilder


def make_data(tmp_path: Path, max_id: int) -> str:
    prefix = str(tmp_path / f"toy{max_id}")
    builder = MMapIndexedDatasetBuilder(prefix + ".bin", dtype=np.uint16)
    for _ in range(5):
        builder.add_item(np.random.default_rng(0).integers(0, max_id, size=40))
        builder.end_document()
    builder.finalize(prefix + ".idx")
    return prefix


@pytest.fixture
def node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A 4-process launch; verdicts in a private temp dir; counts the scans this process runs."""
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setattr(validation.tempfile, "tempdir", str(tmp_path / "node-tmp"))
    (tmp_path / "node-tmp").mkdir()
    scans: list[int] = []
    real = validation._scan_token_ids
    monkeypatch.setattr(validation, "_scan_token_ids", lambda *a: scans.append(1) or real(*a))
    return scans


def test_other_local_ranks_wait_for_local_rank_0(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 node: list[int]) -> None:
    prefix = make_data(tmp_path, 100)
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(validation, "VERDICT_WAIT_SECONDS", 0.3)
    with pytest.raises(ConfigError, match="local rank 0 did not report"):
        validation.check_token_ids([prefix], 128)
    assert node == [], "a rank other than local rank 0 never scans"

    def local_rank_0() -> None:  # arrives later than the waiting rank, as on a real node
        time.sleep(0.2)
        validation._write_verdict(validation.verdict_path([prefix], 128, 4 << 30), None)

    monkeypatch.setattr(validation, "VERDICT_WAIT_SECONDS", 30.0)
    thread = threading.Thread(target=local_rank_0)
    thread.start()
    validation.check_token_ids([prefix], 128)  # returns once the verdict is there
    thread.join()
    assert node == []


def test_local_rank_0_scans_and_its_error_reaches_the_others(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               node: list[int]) -> None:
    prefix = make_data(tmp_path, 300)
    monkeypatch.setenv("LOCAL_RANK", "0")
    with pytest.raises(ConfigError, match="outside the padded vocabulary") as first:
        validation.check_token_ids([prefix], 128)
    assert node == [1]
    monkeypatch.setenv("LOCAL_RANK", "3")
    with pytest.raises(ConfigError) as other:
        validation.check_token_ids([prefix], 128)
    assert str(other.value) == str(first.value) and node == [1]
    monkeypatch.setenv("LOCAL_RANK", "0")
    validation.check_token_ids([prefix], 512)  # another vocabulary is another verdict
    monkeypatch.setenv("LOCAL_RANK", "2")
    validation.check_token_ids([prefix], 512)
    assert node == [1, 1]


def test_single_process_scans_and_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 node: list[int]) -> None:
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("LOCAL_RANK", "0")
    validation.check_token_ids([make_data(tmp_path, 100)], 128)
    assert node == [1] and not list((tmp_path / "node-tmp").iterdir())


def test_a_later_launch_never_takes_an_earlier_launchs_verdict(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               node: list[int]) -> None:
    prefix = make_data(tmp_path, 100)
    monkeypatch.setenv("MASTER_PORT", "29500")
    first = validation.verdict_path([prefix], 128, 4 << 30)
    validation._write_verdict(first, "an earlier run's transient failure")
    monkeypatch.setenv("MASTER_PORT", "29511")  # the next launch (new rendezvous)
    second = validation.verdict_path([prefix], 128, 4 << 30)
    assert second != first
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(validation, "VERDICT_WAIT_SECONDS", 0.3)
    with pytest.raises(ConfigError, match="did not report"):  # waits for THIS launch's rank 0, not the old file
        validation.check_token_ids([prefix], 128)


def test_day_old_verdicts_are_removed_by_the_next_writer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        node: list[int]) -> None:
    import os

    prefix = make_data(tmp_path, 100)
    monkeypatch.setenv("MASTER_PORT", "1")
    old = validation.verdict_path([prefix], 128, 4 << 30)
    validation._write_verdict(old, None)
    os.utime(old, (time.time() - 2 * validation.STALE_VERDICT_SECONDS,) * 2)
    monkeypatch.setenv("MASTER_PORT", "2")
    recent = validation.verdict_path([prefix], 128, 4 << 30)
    validation._write_verdict(recent, None)
    assert not os.path.exists(old) and os.path.exists(recent)
