"""Shared helpers of the pretraining datasets: --split and --data-path parsing, index-map files.

Index maps (GPT doc/sample/shuffle, BERT samples mapping) are ``.npy`` files. They are built once, on
rank 0, written atomically (temporary name in the same directory, then ``os.replace``), and loaded
memory-mapped by every rank after a barrier. A cached map is reused only when a cheap consistency
check passes; a map pinned by a flag (``--train-*-idx-path``) must exist and be consistent.
"""
from __future__ import annotations

import logging
import math
import os
import tempfile
from typing import Callable, Mapping, Sequence

import numpy as np

logger = logging.getLogger(__name__)

# A validator returns None when the loaded arrays are usable, else a one-line reason.
Validator = Callable[[Mapping[str, np.ndarray]], "str | None"]


class DatasetError(ValueError):
    """Bad dataset input: the message names the flag/file and what was expected."""


# ----------------------------------------------------------------------------------------------
# --split
# ----------------------------------------------------------------------------------------------


def get_train_valid_test_split_(splits_string: str, size: int) -> list[int]:
    """Document boundaries [0, a, b, size] of the train/valid/test splits for ``--split`` (e.g. "949,50,1")."""
    text = str(splits_string).strip()
    sep = "," if "," in text else ("/" if "/" in text else None)
    parts = text.split(sep) if sep else [text]
    try:
        splits = [float(p) for p in parts]
    except ValueError:
        raise DatasetError(
            f"--split {splits_string!r}: expected up to three non-negative numbers separated by ',' or '/' "
            "(e.g. 949,50,1)"
        ) from None
    if len(splits) > 3 or any(not math.isfinite(s) or s < 0 for s in splits) or sum(splits) <= 0:
        raise DatasetError(
            f"--split {splits_string!r}: expected up to three non-negative numbers with a positive sum "
            "(e.g. 949,50,1)"
        )
    splits = (splits + [0.0, 0.0])[:3]
    total = sum(splits)
    bounds = [0]
    for s in splits:
        bounds.append(bounds[-1] + int(round(s / total * float(size))))
    # Rounding can overshoot or undershoot the size: shift every boundary after the first (Megatron's rule).
    diff = bounds[-1] - size
    bounds = [bounds[0]] + [b - diff for b in bounds[1:]]
    return [max(0, b) for b in bounds]


# ----------------------------------------------------------------------------------------------
# --data-path
# ----------------------------------------------------------------------------------------------


def parse_data_path(data_path: Sequence[str]) -> tuple[list[str], list[float]]:
    """Split ``--data-path`` into (prefixes, normalised weights): one prefix, or "w1 p1 w2 p2 ..." pairs."""
    items = [str(x).strip() for x in data_path]
    if not items:
        raise DatasetError("--data-path: no dataset prefix given")
    if len(items) == 1:
        return [items[0]], [1.0]
    if len(items) % 2:
        raise DatasetError(
            f"--data-path {' '.join(items)!r}: with several datasets give weight/prefix pairs, "
            "e.g. '0.3 A 0.7 B' (got an odd number of values)"
        )
    prefixes, weights = [], []
    for w, p in zip(items[0::2], items[1::2]):
        try:
            weight = float(w)
        except ValueError:
            raise DatasetError(
                f"--data-path: expected a weight before prefix {p!r}, got {w!r} (format: '0.3 A 0.7 B')"
            ) from None
        if not math.isfinite(weight) or weight < 0:
            raise DatasetError(f"--data-path: weight {w!r} of {p!r} must be a non-negative number")
        prefixes.append(p)
        weights.append(weight)
    total = sum(weights)
    if total <= 0:
        raise DatasetError(f"--data-path {' '.join(items)!r}: the weights must have a positive sum")
    return prefixes, [w / total for w in weights]


def get_datasets_weights_and_num_samples(
    data_prefix: Sequence[str], train_valid_test_num_samples: Sequence[int]
) -> tuple[list[str], list[float], list[list[int]]]:
    """Prefixes, normalised weights and per-dataset sample counts (scaled by 1.005 so a blend never runs dry)."""
    prefixes, weights = parse_data_path(data_prefix)
    per_dataset = [[int(math.ceil(n * w * 1.005)) for n in train_valid_test_num_samples] for w in weights]
    return prefixes, weights, per_dataset


# ----------------------------------------------------------------------------------------------
# Distributed helpers (everything works without torch.distributed)
# ----------------------------------------------------------------------------------------------


def _dist():
    """The torch.distributed module when a process group is initialised, else None."""
    try:
        import torch.distributed as dist
    except ImportError:  # pragma: no cover - torch is a hard dependency
        return None
    return dist if dist.is_available() and dist.is_initialized() else None


def get_rank() -> int:
    """Global rank (0 without torch.distributed)."""
    dist = _dist()
    return dist.get_rank() if dist else 0


def barrier() -> None:
    """torch.distributed barrier when a process group exists; no-op otherwise."""
    dist = _dist()
    if dist:
        dist.barrier()


# ----------------------------------------------------------------------------------------------
# .npy files
# ----------------------------------------------------------------------------------------------


def save_npy_atomic(path: str, array: np.ndarray) -> None:
    """Write ``array`` to ``path`` (.npy) through a temporary file in the same directory and os.replace."""
    directory = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    except OSError as exc:  # e.g. read-only data directory: a user problem, not a crash
        raise DatasetError(
            f"{path}: cannot write index map ({exc.strerror or exc}); pass --data-cache-path with a writable directory"
        ) from None
    try:
        with os.fdopen(fd, "wb") as f:
            np.save(f, np.asarray(array), allow_pickle=False)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_npy(path: str) -> np.ndarray:
    """Memory-map a .npy index map (no pickles); unreadable files raise DatasetError."""
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{path}: cannot read index map ({exc})") from None


def _load_all(paths: Mapping[str, str]) -> dict[str, np.ndarray] | None:
    """Load every file, or None when one is missing or unreadable."""
    if not all(os.path.isfile(p) for p in paths.values()):
        return None
    try:
        return {k: load_npy(p) for k, p in paths.items()}
    except DatasetError as exc:
        logger.warning("%s; rebuilding", exc)
        return None


def load_or_build_index_maps(
    paths: Mapping[str, str],
    build: Callable[[], Mapping[str, np.ndarray]],
    validate: Validator,
    *,
    pinned: Mapping[str, str] | None = None,
) -> dict[str, np.ndarray]:
    """Return the index-map arrays named by ``paths``: cached if consistent, else built by rank 0 and saved.

    ``pinned`` maps a key of ``paths`` to the flag that forced that file (e.g. "--train-doc-idx-path"):
    such files are never built; a missing or inconsistent one raises DatasetError naming the flag.
    """
    pinned = dict(pinned or {})
    if pinned:
        for key, flag in pinned.items():
            if not os.path.isfile(paths[key]):
                raise DatasetError(f"{flag} {paths[key]}: file not found")
        arrays = {k: load_npy(p) for k, p in paths.items()}
        problem = validate(arrays)
        if problem:
            flags = ", ".join(f"{flag} {paths[k]}" for k, flag in pinned.items())
            raise DatasetError(f"{flags}: index map does not match this dataset: {problem}")
        return arrays

    if get_rank() == 0:
        arrays = _load_all(paths)
        problem = validate(arrays) if arrays is not None else "missing"
        if problem:
            if arrays is not None:
                logger.warning("cached index maps %s are inconsistent (%s); rebuilding", ", ".join(paths.values()), problem)
            built = {k: np.asarray(v) for k, v in build().items()}
            for key, path in paths.items():
                save_npy_atomic(path, built[key])
            logger.info("saved index maps: %s", ", ".join(paths.values()))
    barrier()
    arrays = {k: load_npy(p) for k, p in paths.items()}
    problem = validate(arrays)
    if problem:
        raise DatasetError(f"index map {list(paths.values())[0]} is inconsistent after building: {problem}")
    return arrays


def index_map_prefix(data_prefix: str, index_cache_dir: str | None) -> str:
    """Path prefix of the cached index maps: next to the data, or in ``index_cache_dir``."""
    if index_cache_dir:
        return os.path.join(index_cache_dir, os.path.basename(data_prefix))
    return data_prefix


def strided_view(array: np.ndarray, max_items: int = 1 << 20) -> np.ndarray:
    """At most ``max_items`` evenly strided entries (plus the last) for cheap bounds checks."""
    n = array.shape[0]
    if n <= max_items:
        return np.asarray(array)
    step = -(-n // max_items)
    return np.concatenate([np.asarray(array[::step]), np.asarray(array[-1:])])
