"""What makes a checkpoint "the same run": the flags that define the model, tokenizer and data layout.

The rule, written once (``IDENTITY_FLAGS`` + ``identity_of`` + ``differences``):

* Resuming (``--load`` without ``--finetune``) refuses a checkpoint whose stored identity differs from this run's
  in any entry of ``IDENTITY_FLAGS``; the error names the flag, the checkpoint's value and this run's.
* ``--save`` into a directory that already holds a checkpoint is refused unless ``--load`` is that same directory
  (a resume) or ``--overwrite-save`` is given. The message names the first differing flag when the checkpoint is of
  another model, or says that it is this model's and saving would move ``latest`` backwards.
* ``tools/eval_gpt.py``: a tokenizer override that differs from the checkpoint's needs ``--allow-tokenizer-override``
  (``tokenizer_differences``).

Flags that legitimately change on resume are NOT in the table: run length (--train-iters/-samples/-tokens), LR and
weight-decay schedule (taken from the checkpoint unless --override-opt_param-scheduler), optimizer
hyper-parameters, dropout, --micro-batch-size (only splits the same global batch), precision and ZeRO stage (the
engine or --no-load-optim decides), save/load paths and intervals, logging/eval/TensorBoard settings, exit
conditions, --data-cache-path and --num-workers. ``--global-batch-size`` keeps the sample order (the loader
continues at the consumed-samples count) but regroups it into steps: allowed with a warning, refused with
curriculum learning, whose per-step difficulty schedule and sampler state assume the stored batch size.

Checkpoints store ``run_identity`` (this module's dict, with content hashes of the tokenizer files, the padded
vocabulary size and the data files' sizes) beside their args snapshot. For checkpoints written before it existed the
identity is rebuilt from the args snapshot alone (``files=False``): file contents and sizes are then not compared,
and data files are compared by name only, since they may have moved.
"""
from __future__ import annotations

import functools
import hashlib
import logging
import os
from typing import Any, Callable, Mapping

import torch

from megatron.config import ConfigError, RunConfig

logger = logging.getLogger("megatron.training")

MODEL_STATES_FILES = ("mp_rank_00_model_states.pt", "zero_pp_rank_0_mp_rank_00_model_states.pt")
IDENTITY_KEY = "run_identity"


def _rope(a: Mapping[str, Any]) -> bool:
    return bool(a.get("use_rotary_position_embeddings")) or a.get("position_embedding_type") in ("rope", "rotary")


def _data_names(a: Mapping[str, Any]) -> list[str] | None:
    """--data-path as weights + file names (directories left out: data may move between machines)."""
    paths = a.get("data_path")
    return None if paths is None else [os.path.basename(os.path.normpath(str(p))) for p in paths]


IDENTITY_FLAGS: dict[str, tuple[str, Callable[[Mapping[str, Any]], Any]]] = {
    # flag dest: (what it defines, its effective value from the args snapshot)
    "num_layers": ("model", lambda a: a.get("num_layers")),
    "hidden_size": ("model", lambda a: a.get("hidden_size")),
    "ffn_hidden_size": ("model", lambda a: a.get("ffn_hidden_size") or (4 * a["hidden_size"]
                                                                       if a.get("hidden_size") else None)),
    "num_attention_heads": ("model", lambda a: a.get("num_attention_heads")),
    "max_position_embeddings": ("model", lambda a: a.get("max_position_embeddings") or a.get("seq_length")),
    "position_embedding_type": ("model", lambda a: "rope" if _rope(a) else "learned_absolute"),
    "rope_theta": ("model", lambda a: a.get("rope_theta") if _rope(a) else None),
    "make_vocab_size_divisible_by": ("model", lambda a: a.get("make_vocab_size_divisible_by")),
    "layernorm_epsilon": ("model", lambda a: a.get("layernorm_epsilon")),
    "tokenizer_type": ("tokenizer", lambda a: a.get("tokenizer_type")),
    "vocab_extra_ids": ("tokenizer", lambda a: a.get("vocab_extra_ids") or 0),
    "seq_length": ("data", lambda a: a.get("seq_length")),
    "data_path": ("data", _data_names),
    "split": ("data", lambda a: None if a.get("split") is None else str(a["split"]).replace(" ", "")),
    "seed": ("data", lambda a: a.get("seed")),
    "train_data_exact_num_epochs": ("data", lambda a: a.get("train_data_exact_num_epochs")),
}
"""Flags compared on resume and on --save into an existing checkpoint directory."""

FILE_FLAGS = ("vocab_file", "merge_file", "tokenizer_model")
"""Tokenizer files, compared by a hash of their contents (``identity_of(..., files=True)``)."""

DERIVED = ("padded_vocab_size", "data_files")
"""Entries computed from the built run, stored only in new checkpoints: padded vocab size, data file sizes."""


@functools.lru_cache(maxsize=32)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return "sha256:" + digest.hexdigest()[:16]


def file_hash(path: str | None) -> str | None:
    """Content hash of a tokenizer file (None when unset or unreadable); memoised by path, size and mtime."""
    if not path:
        return None
    try:
        st = os.stat(path)
        return _sha256(os.path.abspath(path), st.st_size, st.st_mtime_ns)
    except OSError:
        return None


def _data_sizes(paths: list[Any] | None) -> list[int | None] | None:
    if paths is None:
        return None
    sizes: list[int | None] = []
    for p in paths:
        try:
            sizes.append(os.path.getsize(f"{p}.bin"))
        except (OSError, TypeError):
            sizes.append(None)  # a blend weight, or a file not found here
    return sizes


def identity_of(args: Mapping[str, Any], *, padded_vocab_size: int | None = None, files: bool = True
                ) -> dict[str, Any]:
    """The run identity of an args snapshot (+ the derived entries when ``files``)."""
    out = {flag: norm(args) for flag, (_, norm) in IDENTITY_FLAGS.items()}
    if files:
        for flag in FILE_FLAGS:
            out[flag] = file_hash(args.get(flag))
        out["data_files"] = _data_sizes(args.get("data_path"))
        if padded_vocab_size is not None:
            out["padded_vocab_size"] = int(padded_vocab_size)
    return out


def config_identity(config: RunConfig) -> dict[str, Any]:
    """This run's identity (what checkpoints store under ``run_identity``)."""
    return identity_of(config.args_snapshot, padded_vocab_size=config.model.padded_vocab_size)


def stored_identity(client: Mapping[str, Any]) -> dict[str, Any]:
    """A checkpoint's identity: the stored one, else rebuilt from its args snapshot (no file entries)."""
    if isinstance(client.get(IDENTITY_KEY), Mapping):
        return dict(client[IDENTITY_KEY])
    return identity_of(client.get("args") or {}, files=False)


def differences(stored: Mapping[str, Any], current: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    """(flag, checkpoint value, this run's value) for every identity entry present in both that differs.

    A file hash or data-file size that is unknown on one side (file unset or not found there) is not compared.
    """
    out = []
    for flag in (*IDENTITY_FLAGS, *FILE_FLAGS, *DERIVED):
        if flag not in stored or flag not in current:
            continue
        a, b = stored[flag], current[flag]
        if flag in FILE_FLAGS and (a is None or b is None):
            continue
        if flag == "data_files":
            if not isinstance(a, (list, tuple)) or not isinstance(b, (list, tuple)) or len(a) != len(b):
                continue  # another number of data files: --data-path itself differs
            if all(x is None or y is None or x == y for x, y in zip(a, b)):
                continue
            a, b = list(a), list(b)
        if isinstance(a, tuple):
            a = list(a)
        if isinstance(b, tuple):
            b = list(b)
        if a != b:
            out.append((flag, a, b))
    return out


def describe(flag: str, stored: Any, current: Any) -> str:
    """`--num-attention-heads: checkpoint 2, this run 4` (file entries say what was compared)."""
    name = {"vocab_file": "--vocab-file contents", "merge_file": "--merge-file contents",
            "tokenizer_model": "--tokenizer-model contents", "padded_vocab_size": "padded vocabulary size",
            "data_files": "--data-path file sizes (.bin)"}.get(flag, "--" + flag.replace("_", "-"))
    return f"{name}: checkpoint {stored!r}, this run {current!r}"


def read_client(checkpoint_dir: str, tag: str) -> dict[str, Any] | None:
    """Rank 0's model-states file of ``checkpoint_dir/tag`` (memory-mapped; None when absent or unreadable)."""
    for name in MODEL_STATES_FILES:
        path = os.path.join(checkpoint_dir, tag, name)
        if os.path.isfile(path):
            try:
                client = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except Exception:  # noqa: BLE001 - corrupt files are reported by the loader that needs them
                return None
            return client if isinstance(client, dict) else None
    return None


def check_resume(client: Mapping[str, Any], config: RunConfig, where: str) -> None:
    """Refuse resuming a checkpoint (its client state) whose identity differs from this run's (ConfigError)."""
    diffs = differences(stored_identity(client), config_identity(config))
    if diffs:
        flag, a, b = diffs[0]
        more = f" (and {len(diffs) - 1} more: {', '.join(d[0] for d in diffs[1:])})" if len(diffs) > 1 else ""
        raise ConfigError(f"--load {where}: the checkpoint is of another model/tokenizer/data layout: "
                          f"{describe(flag, a, b)}{more}. Resume with the checkpoint's flags, or use --finetune "
                          "to start a new run from its weights")
    stored_gbs = (client.get("args") or {}).get("global_batch_size")
    gbs = config.training.global_batch_size
    if stored_gbs is not None and stored_gbs != gbs:
        if config.args_snapshot.get("data_efficiency_curriculum_learning"):
            raise ConfigError(f"--load {where}: --global-batch-size: checkpoint {stored_gbs}, this run {gbs}; "
                              "curriculum learning cannot change the batch size on resume")
        logger.warning("--load %s: --global-batch-size changes from %s to %d: the sample order continues, "
                       "grouped into different steps", where, stored_gbs, gbs)


def tokenizer_differences(client: Mapping[str, Any], overrides: Mapping[str, Any]) -> list[str]:
    """eval tools: the tokenizer flags in ``overrides`` that differ from the checkpoint's (described).

    Files are compared by content (the hash stored in the checkpoint, else the checkpoint's file if it is here);
    by path only when neither is available.
    """
    stored_args = client.get("args") or {}
    identity = client.get(IDENTITY_KEY) if isinstance(client.get(IDENTITY_KEY), Mapping) else {}
    out = []
    new_type = overrides.get("tokenizer_type")
    if new_type is not None and new_type != stored_args.get("tokenizer_type"):
        out.append(describe("tokenizer_type", stored_args.get("tokenizer_type"), new_type))
    for flag in FILE_FLAGS:
        new, old = overrides.get(flag), stored_args.get(flag)
        if new is None or (old is not None and os.path.abspath(str(old)) == os.path.abspath(str(new))):
            continue
        old_hash, new_hash = identity.get(flag) or file_hash(old), file_hash(new)
        if old_hash is not None and new_hash is not None:
            if old_hash != new_hash:
                out.append(f"--{flag.replace('_', '-')}: checkpoint {old!r} ({old_hash}), this run {new!r} "
                           f"({new_hash})")
        else:
            out.append(f"--{flag.replace('_', '-')}: checkpoint {old!r}, this run {new!r}")
    return out
