"""Checks of tokenized data files before a run uses them: prefixes, .bin/.idx presence, token ids vs the vocab.

Family specs (``megatron.specs``) call these from their ``validate_data``; errors are ConfigError lines naming
the flag and the file.

The token-id scan reads every .bin file (up to 4 GiB each). In a multi-process launch (WORLD_SIZE > 1) only local
rank 0 of each node reads them; the node's other ranks wait for its verdict, a small JSON file in the node's temp
directory named after the files' identity (path, size, mtime) and the vocabulary size, and raise the same error.
The check runs before torch.distributed exists, hence a file rather than a barrier.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from typing import Sequence

import numpy as np

from megatron.config import ConfigError

logger = logging.getLogger(__name__)

VERDICT_WAIT_SECONDS = 1800.0
"""How long a node's other ranks wait for local rank 0's token-id verdict before giving up."""


def data_prefixes(data_path: Sequence[str] | None) -> list[str]:
    """The file prefixes inside --data-path (which may interleave blending weights: W1 P1 W2 P2 ...)."""
    items = list(data_path or [])
    if len(items) <= 1:
        return items
    if len(items) % 2:
        raise ConfigError(f"--data-path: expected one prefix or WEIGHT PREFIX pairs, got {len(items)} values")
    for weight in items[0::2]:
        try:
            if float(weight) < 0:
                raise ValueError
        except ValueError:
            raise ConfigError(f"--data-path: {weight!r} is not a non-negative blending weight "
                              "(expected WEIGHT1 PREFIX1 WEIGHT2 PREFIX2 ...)") from None
    return items[1::2]


def check_data_files(prefixes: Sequence[str]) -> None:
    """ConfigError unless every prefix has a readable .bin and .idx file."""
    for prefix in prefixes:
        for ext in (".bin", ".idx"):
            path = prefix + ext
            if not os.path.isfile(path):
                raise ConfigError(f"--data-path {prefix}: {path} not found (give the prefix without .bin/.idx, "
                                  "as written by tools/preprocess_data.py)")
            if not os.access(path, os.R_OK):
                raise ConfigError(f"--data-path {prefix}: {path} is not readable")


def check_token_ids(prefixes: Sequence[str], padded_vocab_size: int,
                    max_scan_bytes: int = 4 << 30) -> None:
    """Raise ConfigError if any token id in the prefixes' .bin files is >= padded_vocab_size.

    Files up to `max_scan_bytes` are scanned whole; larger ones are scanned in 64 MiB windows spread
    over the file (a partial check, logged as such). With WORLD_SIZE > 1 only LOCAL_RANK 0 scans; the other
    ranks of its node take its verdict (see the module docstring).
    """
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    local_rank = int(os.environ.get("LOCAL_RANK", "0") or 0)
    if world <= 1:
        _scan_token_ids(prefixes, padded_vocab_size, max_scan_bytes)
        return
    path = verdict_path(prefixes, padded_vocab_size, max_scan_bytes)
    if local_rank == 0:
        try:
            _scan_token_ids(prefixes, padded_vocab_size, max_scan_bytes)
        except Exception as e:  # noqa: BLE001 - every failure is reported to the waiting ranks, then re-raised
            _write_verdict(path, f"{e}" if isinstance(e, ConfigError) else f"{type(e).__name__}: {e}")
            raise
        _write_verdict(path, None)
        return
    error = _wait_for_verdict(path, prefixes, VERDICT_WAIT_SECONDS)
    if error is not None:
        raise ConfigError(error)


LAUNCH_IDENTITY = ("MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID", "SLURM_JOB_ID", "SLURM_STEP_ID",
                   "OMPI_MCA_ess_base_jobid", "PMI_JOBID")
"""Environment variables that tell one launch from the next (the parent process id is added)."""
STALE_VERDICT_SECONDS = 86400.0
"""Verdict files of this user older than this are removed by the next local rank 0 that writes one."""


def verdict_path(prefixes: Sequence[str], padded_vocab_size: int, max_scan_bytes: int) -> str:
    """This node's verdict file for a token-id check of these files in THIS launch (unique to their path, size and
    mtime and to the launch: the per-node launcher process and the rendezvous/job ids), so that a waiting rank never
    takes an earlier run's verdict."""
    launch = [os.getppid()] + [os.environ.get(k, "") for k in LAUNCH_IDENTITY]
    identity: list[object] = [padded_vocab_size, max_scan_bytes, launch]
    for prefix in prefixes:
        for ext in (".bin", ".idx"):
            name = os.path.realpath(prefix + ext)
            stat = os.stat(name) if os.path.exists(name) else None
            identity.append([name, stat.st_size if stat else -1, stat.st_mtime_ns if stat else -1])
    digest = hashlib.sha256(json.dumps(identity).encode()).hexdigest()[:32]
    user = os.getuid() if hasattr(os, "getuid") else 0
    return os.path.join(tempfile.gettempdir(), f"megatron-token-check-{user}-{digest}.json")


def _write_verdict(path: str, error: str | None) -> None:
    """Write {"error": message or null} atomically (a waiting rank never reads half a file)."""
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump({"error": error}, f)
        os.replace(tmp, path)
    except OSError as e:  # the other ranks will time out with a message naming the file
        logger.warning("could not write the token-id check verdict %s: %s", path, e)
    _remove_stale_verdicts(path)


def _remove_stale_verdicts(keep: str) -> None:
    """Earlier launches' verdict files (they are never read again) once they are a day old."""
    directory, name = os.path.split(keep)
    prefix = name[: name.rindex("-") + 1]  # megatron-token-check-<uid>-
    now = time.time()
    try:
        entries = [e for e in os.scandir(directory) if e.name.startswith(prefix) and e.path != keep]
    except OSError:
        return
    for entry in entries:
        try:
            if now - entry.stat().st_mtime > STALE_VERDICT_SECONDS:
                os.remove(entry.path)
        except OSError:
            pass


def _wait_for_verdict(path: str, prefixes: Sequence[str], timeout: float) -> str | None:
    """Local rank 0's error message (None: the ids fit), waiting up to `timeout` seconds for it."""
    start = last_note = time.monotonic()
    while True:
        try:
            with open(path, encoding="utf-8") as f:
                return json.load(f).get("error")
        except (OSError, ValueError):
            pass
        now = time.monotonic()
        if now - start > timeout:
            raise ConfigError(f"--data-path {' '.join(prefixes)}: local rank 0 did not report its token-id check "
                              f"within {timeout:.0f} s (no {path}); did it fail to start?")
        if now - last_note > 60:
            logger.info("waiting for local rank 0 to check the token ids of %s", " ".join(prefixes))
            last_note = now
        time.sleep(0.05)


def _scan_token_ids(prefixes: Sequence[str], padded_vocab_size: int, max_scan_bytes: int) -> None:
    """The scan itself (check_token_ids without the one-rank-per-node logic)."""
    from tqdm import tqdm

    from megatron.data.indexed_dataset import MMapIndexedDataset

    chunk = 64 << 20

    for prefix in prefixes:
        dtype = np.dtype(MMapIndexedDataset(prefix).dtype)
        if dtype.kind == "f":
            raise ConfigError(f"--data-path {prefix}: token file holds floats ({dtype}), expected integer ids")
        if dtype.kind == "u" and np.iinfo(dtype).max < padded_vocab_size:
            continue  # no id of this dtype can reach the padded vocab size
        size = os.path.getsize(prefix + ".bin")
        if size == 0:
            continue
        data = np.memmap(prefix + ".bin", dtype=dtype, mode="r")
        per = max(1, chunk // dtype.itemsize)
        starts = list(range(0, len(data), per))
        if size > max_scan_bytes:
            keep = max(1, max_scan_bytes // chunk)
            starts = [starts[int(i)] for i in np.linspace(0, len(starts) - 1, keep)]
        bar = tqdm(starts, desc=f"checking token ids in {os.path.basename(prefix)}.bin", unit="chunk",
                   disable=len(starts) < 8, leave=False)
        for s in bar:
            window = np.asarray(data[s:s + per])
            top = int(window.max())
            if top >= padded_vocab_size or (dtype.kind == "i" and int(window.min()) < 0):
                bad = top if top >= padded_vocab_size else int(window.min())
                raise ConfigError(
                    f"--data-path {prefix}: token id {bad} is outside the padded vocabulary [0, {padded_vocab_size}) "
                    "(was the data preprocessed with a different tokenizer than --vocab-file/--tokenizer-model?)")
        del data
