"""Checkpoints through the DeepSpeed engine, in DeepSpeed's and Megatron's layout, saved atomically.

Layout under --save: ``global_step{N}/`` (the engine's files; our state rides in its client_state),
``latest`` (the tag, read by DeepSpeed) and ``latest_checkpointed_iteration.txt`` (Megatron's tracker).
A save writes into ``global_step{N}.tmp``, renames it to ``global_step{N}`` and only then rewrites the two
tracker files (temp file + os.replace), so a process killed mid-save leaves ``latest`` pointing at the
previous, complete checkpoint. Leftover ``*.tmp`` directories are removed by the next save.
The model-states files (weights and our client state: tensors and plain values only) are loaded with
``torch.load(weights_only=True)``; DeepSpeed's ZeRO optimizer files keep DeepSpeed's own loader.

Failures are one ConfigError line each: before the engine loads anything, a missing, empty or unreadable file of
the tag (model states, ZeRO shards) is named together with the newest complete earlier step and the
``--load-tag`` that resumes it, and a tensor whose shape differs from this model's is named with both shapes.
``check_save_writable`` refuses an unwritable --save at start-up; a save that fails for lack of space (or any other
OS error) removes its temp dir, leaves the previous checkpoint and ``latest`` as they were and says so.
"""
from __future__ import annotations

import errno
import glob
import logging
import os
import re
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from typing import Any

import torch

from megatron.config import ConfigError, RunConfig
from megatron.training.data_efficiency_hooks import DataEfficiency
from megatron.training.rng import get_rng_state
from megatron.training.run_identity import (IDENTITY_KEY, check_resume, config_identity, describe, differences,
                                            read_client, stored_identity)
from megatron.training.state import TrainState

logger = logging.getLogger("megatron.training")

LATEST_FILE = "latest"
TRACKER_FILE = "latest_checkpointed_iteration.txt"
TMP_SUFFIX = ".tmp"
OLD_SUFFIX = ".old" + TMP_SUFFIX
CHECKPOINT_VERSION = 3.0


def checkpoint_tag(iteration: int) -> str:
    """DeepSpeed's tag for an iteration: global_step{N}."""
    return f"global_step{iteration}"


def atomic_write_text(path: str, text: str) -> None:
    """Write `text` to `path` atomically (temp file in the same directory + fsync + os.replace)."""
    tmp = f"{path}.{os.getpid()}{TMP_SUFFIX}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _rank() -> int:
    return torch.distributed.get_rank() if torch.distributed.is_initialized() else 0


def _world() -> int:
    return torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1


def _barrier() -> None:
    if torch.distributed.is_initialized() and _world() > 1:
        torch.distributed.barrier()


def _gather_rng_states() -> list[dict[str, Any]]:
    """Every rank's RNG state, indexed by rank (collective); CUDA: each rank's current device only (rng.py)."""
    mine = get_rng_state()
    if _world() == 1:
        return [mine]
    states: list[Any] = [None] * _world()
    torch.distributed.all_gather_object(states, mine)
    return states


def remove_stale_temp_dirs(save_dir: str) -> list[str]:
    """Delete leftovers of interrupted saves (``*.tmp`` dirs and files) in `save_dir`; returns what was removed."""
    removed = []
    for path in sorted(glob.glob(os.path.join(glob.escape(save_dir), "*" + TMP_SUFFIX))):
        if os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            try:
                os.remove(path)
            except OSError:
                continue
        removed.append(path)
    return removed


def client_state(state: TrainState, scheduler: Any, data_eff: DataEfficiency, config: RunConfig,
                 rng_states: list[dict[str, Any]] | None, model_family: str) -> dict[str, Any]:
    """What we add to the engine's checkpoint: plain tensors/numbers/strings/lists/dicts only."""
    out: dict[str, Any] = {
        "checkpoint_version": CHECKPOINT_VERSION,
        "model_family": model_family,
        "iteration": state.iteration,
        "train_state": state.state_dict(),
        "opt_param_scheduler": scheduler.state_dict(),
        "data_efficiency": data_eff.state_dict(),
        "args": config.args_snapshot,
        IDENTITY_KEY: config_identity(config),
    }
    if rng_states is not None:
        out["rng_state"] = rng_states
    return out


def _publish(save_dir: str, tmp_tag: str, tag: str, iteration: int) -> None:
    """Rank 0: move the finished temp dir into place, then repoint `latest` and the Megatron tracker."""
    final = os.path.join(save_dir, tag)
    tmp = os.path.join(save_dir, tmp_tag)
    old = final + OLD_SUFFIX
    latest = os.path.join(save_dir, LATEST_FILE)
    previous = None
    if os.path.isfile(latest):
        with open(latest, encoding="utf-8") as f:
            previous = f.read()
    moved_old = moved_new = wrote_latest = False
    try:
        if os.path.exists(final):  # re-saving the same iteration: keep the old copy until the new one is in place
            os.rename(final, old)
            moved_old = True
        os.rename(tmp, final)
        moved_new = True
        _fsync_dir(save_dir)
        atomic_write_text(latest, tag)
        wrote_latest = True
        atomic_write_text(os.path.join(save_dir, TRACKER_FILE), str(iteration))
        _fsync_dir(save_dir)
    except OSError:  # undo: the previous checkpoint and `latest` stay as they were (the caller removes the temp dir)
        try:
            if wrote_latest:  # `latest` names the new checkpoint: point it back first, or keep the new one in place
                if previous is None:
                    os.remove(latest)
                else:
                    atomic_write_text(latest, previous)
            if moved_new:
                os.rename(final, tmp)
            if moved_old:
                os.rename(old, final)
        except OSError:
            pass
        for leftover in glob.glob(os.path.join(glob.escape(save_dir), f"*.{os.getpid()}{TMP_SUFFIX}")):
            try:
                os.remove(leftover)
            except OSError:
                pass
        raise
    if os.path.exists(old):
        shutil.rmtree(old, ignore_errors=True)


_NO_SPACE = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))


def _save_failed(save_dir: str, tmp_tag: str, error: BaseException) -> None:
    """A save that could not be written: remove its temp dir and raise one ConfigError line (`latest` untouched).

    Disk full (ENOSPC/EDQUOT; torch reports it as a RuntimeError "file write failed") says "no space left on
    device"; other OS errors name their cause. Any other RuntimeError is not ours to explain: re-raised.
    """
    tmp = os.path.join(save_dir, tmp_tag)
    shutil.rmtree(tmp, ignore_errors=True)
    text = str(error).strip()
    if isinstance(error, OSError):
        no_space = error.errno in _NO_SPACE
        cause = error.strerror or (text.splitlines()[0] if text else type(error).__name__)
    else:
        if not re.search(r"write failed|No space left|ENOSPC", text, re.IGNORECASE):
            raise error
        try:
            no_space = "no space left" in text.lower() or shutil.disk_usage(save_dir).free < (1 << 20)
        except OSError:
            no_space = False
        cause = "writing a file failed"
    where = os.path.join(save_dir, tmp_tag[:-len(TMP_SUFFIX)])
    if no_space:
        raise ConfigError(f"--save {save_dir}: no space left on device while saving {where}; the partial save was "
                          f"removed and `{LATEST_FILE}` still names the previous checkpoint. Free space (or choose "
                          "another --save) and resume with --load") from None
    raise ConfigError(f"--save {save_dir}: could not save {where} ({cause}); the partial save was removed and "
                      f"`{LATEST_FILE}` still names the previous checkpoint") from None


def check_save_writable(config: RunConfig) -> None:
    """At start-up: --save must be a directory we can create files in (ConfigError naming the path otherwise)."""
    save = config.checkpoint.save
    if not save:
        return
    try:
        os.makedirs(save, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test.", suffix=TMP_SUFFIX, dir=save)
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        if isinstance(e, (FileExistsError, NotADirectoryError)) or (os.path.exists(save) and not os.path.isdir(save)):
            cause = "a path component is a regular file, not a directory"
        else:
            cause = e.strerror or type(e).__name__
        raise ConfigError(f"--save {save}: not a writable directory ({cause}); checkpoints could not be saved. "
                          "Choose a directory you can write to") from None


def save_checkpoint(engine: Any, scheduler: Any, state: TrainState, data_eff: DataEfficiency,
                    config: RunConfig, *, model_family: str) -> str:
    """Save atomically into --save as global_step{iteration}; collective (every rank must call). Returns the path."""
    save_dir = config.checkpoint.save
    if not save_dir:
        raise ConfigError("save_checkpoint needs --save")
    tag = checkpoint_tag(state.iteration)
    tmp_tag = tag + TMP_SUFFIX
    if _rank() == 0:
        os.makedirs(save_dir, exist_ok=True)
        for path in remove_stale_temp_dirs(save_dir):
            logger.info("removed leftover of an interrupted save: %s", path)
    _barrier()
    rng = None if config.checkpoint.no_save_rng else _gather_rng_states()
    try:
        engine.save_checkpoint(save_dir, tag=tmp_tag,
                               client_state=client_state(state, scheduler, data_eff, config, rng, model_family),
                               save_latest=False)
    except (OSError, RuntimeError) as e:
        _save_failed(save_dir, tmp_tag, e)
    _barrier()
    if _rank() == 0:
        try:
            _publish(save_dir, tmp_tag, tag, state.iteration)
        except OSError as e:
            _save_failed(save_dir, tmp_tag, e)
    _barrier()
    logger.info("saved checkpoint at iteration %d to %s", state.iteration, os.path.join(save_dir, tag))
    return os.path.join(save_dir, tag)


def _weights_only_model_states(engine: Any) -> None:
    """Make the engine load its ``*model_states.pt`` files (weights + our client state) with weights_only=True.

    Those files hold only tensors and plain values; DeepSpeed's ZeRO optimizer-state files pickle DeepSpeed
    objects, so they keep DeepSpeed's own loader.
    """
    from deepspeed.runtime.checkpoint_engine import TorchCheckpointEngine

    current = getattr(engine, "checkpoint_engine", None)
    if type(current) is not TorchCheckpointEngine:
        return

    class _WeightsOnlyModelStates(TorchCheckpointEngine):
        def load(self, path: str, map_location: Any = None) -> Any:
            if os.path.basename(str(path)).endswith("model_states.pt"):
                return torch.load(path, map_location=map_location, weights_only=True)
            return super().load(path, map_location=map_location)

    current.__class__ = _WeightsOnlyModelStates


def read_latest_tag(load_dir: str) -> str | None:
    """The tag to resume from: `latest`, else Megatron's tracker file, else None."""
    latest = os.path.join(load_dir, LATEST_FILE)
    if os.path.isfile(latest):
        with open(latest, encoding="utf-8") as f:
            tag = f.read().strip()
        if tag:
            return tag
    tracker = os.path.join(load_dir, TRACKER_FILE)
    if os.path.isfile(tracker):
        with open(tracker, encoding="utf-8") as f:
            text = f.read().strip()
        if text.isdigit():
            return checkpoint_tag(int(text))
        raise ConfigError(f"--load {load_dir}: {TRACKER_FILE} holds {text!r}, expected an iteration number")
    return None


_STEP_RE = re.compile(r"^global_step(\d+)$")


def _strip_unsafe_advice(text: str) -> str:
    """Drop the sentences of a torch message that advise ``weights_only=False`` (never safe advice to pass on)."""
    kept = [part for part in re.split(r"(?<=[.!?])\s+", text) if "weights_only" not in part]
    return " ".join(kept).strip()


def _zero_stage(engine: Any) -> int:
    try:
        return int(engine.zero_optimization_stage())
    except Exception:  # noqa: BLE001 - a test double or an engine without ZeRO
        return 0


def _model_states_name(engine: Any) -> str:
    if _zero_stage(engine) >= 3:
        return f"zero_pp_rank_{_rank()}_mp_rank_00_model_states.pt"
    return "mp_rank_00_model_states.pt"


def _load_header(path: str) -> tuple[Any, str | None]:
    """(the file's contents memory-mapped, None) or (None, why it cannot be read). Cheap: nothing is copied."""
    if not os.path.isfile(path):
        return None, "is missing"
    if os.path.getsize(path) == 0:
        return None, "is empty"
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True), None
    except Exception as e:  # noqa: BLE001 - corrupt/truncated: reported, never with torch's weights_only advice
        first = _strip_unsafe_advice(str(e).strip().splitlines()[0] if str(e).strip() else "")
        return None, f"cannot be read (truncated or corrupt: {type(e).__name__}{': ' + first[:200] if first else ''})"


def _shard_problem(path: str) -> str | None:
    """Why a ZeRO optimizer shard is unusable (missing, empty, not a complete torch zip archive), or None."""
    if not os.path.isfile(path):
        return "is missing"
    if os.path.getsize(path) == 0:
        return "is empty"
    try:
        with zipfile.ZipFile(path) as archive:
            archive.namelist()
    except (zipfile.BadZipFile, OSError) as e:
        return f"cannot be read (truncated or corrupt: {e})"
    return None


def _optim_shard_names(directory: str, dp_world_size: int, bf16: bool) -> list[str]:
    """DeepSpeed's ZeRO optimizer shards of each data-parallel rank (either naming it accepts; the first when none)."""
    names = []
    for r in range(dp_world_size):
        candidates = [f"{prefix}zero_pp_rank_{r}_mp_rank_00{sep}optim_states.pt"
                      for prefix in (("bf16_", "") if bf16 else ("", "bf16_")) for sep in ("_", "")]
        found = next((c for c in candidates if os.path.isfile(os.path.join(directory, c))), candidates[0])
        names.append(found)
    return names


def _tag_problem(load_dir: str, tag: str, states_name: str, zero_stage: int, load_optim: bool,
                 bf16: bool) -> tuple[Any, tuple[str, str] | None]:
    """(model-states contents, None) when `tag` looks complete, else (None, (file, why))."""
    directory = os.path.join(load_dir, tag)
    path = os.path.join(directory, states_name)
    states, why = _load_header(path)
    if why is not None:
        return None, (path, why)
    if zero_stage > 0 and load_optim and isinstance(states, dict):
        dp = states.get("dp_world_size")
        for name in _optim_shard_names(directory, int(dp) if isinstance(dp, int) and dp > 0 else _world(), bf16):
            problem = _shard_problem(os.path.join(directory, name))
            if problem is not None:
                return None, (os.path.join(directory, name), problem)
    return states, None


def _newest_complete_before(load_dir: str, tag: str, check: Any) -> str | None:
    """The newest ``global_stepN`` in `load_dir` older than `tag` that `check(tag)` finds complete."""
    m = _STEP_RE.match(tag.removesuffix(OLD_SUFFIX))
    limit = int(m.group(1)) if m else None
    steps = []
    for name in os.listdir(load_dir):
        mm = _STEP_RE.match(name)
        if mm and os.path.isdir(os.path.join(load_dir, name)) and (limit is None or int(mm.group(1)) < limit):
            steps.append(int(mm.group(1)))
    for step in sorted(steps, reverse=True):
        if check(checkpoint_tag(step)) is None:
            return checkpoint_tag(step)
    return None


def _incomplete_message(load_dir: str, tag: str, path: str, why: str, check: Any) -> str:
    earlier = _newest_complete_before(load_dir, tag, check)
    way_out = (f"the newest complete earlier checkpoint is {earlier}: resume from it with --load-tag {earlier}"
               if earlier else f"there is no complete earlier checkpoint in {load_dir}")
    return f"--load {load_dir}/{tag}: the checkpoint is incomplete or corrupt: {path} {why}; {way_out}"


def _check_complete(engine: Any, load_dir: str, tag: str, load_optim: bool) -> Any:
    """Before the engine: refuse a checkpoint with a missing/unreadable file (ConfigError naming it and the
    newest complete earlier step). Returns the model-states file's contents (memory-mapped)."""
    states, problem = _tag_problem(load_dir, tag, *_completeness(engine, load_optim))
    if problem is not None:
        raise ConfigError(_incomplete_message(load_dir, tag, *problem, _checker(engine, load_dir, load_optim)))
    return states


def _completeness(engine: Any, load_optim: bool) -> tuple[str, int, bool, bool]:
    try:
        bf16 = bool(engine.bfloat16_enabled())
    except Exception:  # noqa: BLE001 - a test double
        bf16 = False
    return _model_states_name(engine), _zero_stage(engine), load_optim, bf16


def _checker(engine: Any, load_dir: str, load_optim: bool) -> Any:
    """tag -> None when complete, else (file, why)."""
    args = _completeness(engine, load_optim)
    return lambda tag: _tag_problem(load_dir, tag, *args)[1]


def _unreadable_file(load_dir: str, tag: str) -> tuple[str, str] | None:
    """After an engine failure: the first ``*.pt`` file of the tag that is empty or not a complete archive."""
    directory = os.path.join(load_dir, tag)
    for path in sorted(glob.glob(os.path.join(glob.escape(directory), "*.pt"))):
        problem = _shard_problem(path)
        if problem is not None:
            return path, problem
    return None


def _check_shapes(engine: Any, model_states: dict[str, Any], where: str) -> None:
    """Name the first tensor whose shape differs between the checkpoint and this model (not for ZeRO-3 shards)."""
    if _zero_stage(engine) >= 3:
        return
    stored = model_states.get("module")
    module = getattr(engine, "module", None)
    if not isinstance(stored, dict) or module is None:
        return
    for name, tensor in module.state_dict().items():
        saved = stored.get(name)
        if isinstance(saved, torch.Tensor) and isinstance(tensor, torch.Tensor) and saved.shape != tensor.shape:
            raise ConfigError(
                f"--load {where}: the checkpoint does not fit this run (tensor {name} has shape "
                f"{list(saved.shape)} in the checkpoint and {list(tensor.shape)} in this model). Model flags "
                "(--num-layers, --hidden-size, --num-attention-heads, --seq-length, vocab) must match the checkpoint")


@dataclass
class LoadedCheckpoint:
    """What load_checkpoint restored."""

    path: str
    """Directory of the loaded tag."""
    iteration: int
    """Iteration the run resumes after (0 with --finetune)."""
    rng_state: dict[str, Any] | None
    """This rank's RNG state, to apply once the data iterators exist (None: not restored)."""


def load_checkpoint(engine: Any, scheduler: Any, state: TrainState, data_eff: DataEfficiency,
                    config: RunConfig, *, model_family: str) -> LoadedCheckpoint | None:
    """Resume from --load (collective). Restores model, optimizer, scheduler, TrainState, data-efficiency state.

    Without --finetune, a checkpoint whose model/tokenizer/data flags differ from this run's is refused
    (``megatron.training.run_identity``). A checkpoint of another model family is refused unless --finetune;
    checkpoints written before the family was recorded are not checked (the engine refuses weights that do not fit).
    RNG states are returned, not applied, so that building data loaders afterwards cannot disturb them.
    Returns None when --load holds no checkpoint (fresh start) unless --exit-on-missing-checkpoint.
    """
    ck = config.checkpoint
    load_dir = ck.load
    assert load_dir is not None
    tag = ck.load_tag or (read_latest_tag(load_dir) if os.path.isdir(load_dir) else None)
    if tag is None:
        if ck.exit_on_missing_checkpoint:
            raise ConfigError(f"--load {load_dir}: no checkpoint found (no `{LATEST_FILE}` file) and "
                              "--exit-on-missing-checkpoint is set")
        logger.warning("--load %s: no checkpoint found, starting from scratch", load_dir)
        return None
    if not os.path.isdir(os.path.join(load_dir, tag)):
        if os.path.isdir(os.path.join(load_dir, tag + OLD_SUFFIX)):  # killed between the two renames
            tag = tag + OLD_SUFFIX
        else:
            raise ConfigError(f"--load {load_dir}: checkpoint directory {tag} (named by `{LATEST_FILE}` or "
                              "--load-tag) does not exist")
    finetune = ck.finetune
    load_optim = not (ck.no_load_optim or finetune)
    model_states = _check_complete(engine, load_dir, tag, load_optim)  # incomplete/corrupt: name file + way out
    if not finetune:  # refuse another model/tokenizer/data layout before the engine loads anything
        stored = model_states if isinstance(model_states, dict) else None
        if stored is not None and stored.get("model_family") in (None, model_family):  # family: checked below
            check_resume(stored, config, f"{load_dir}/{tag}")
    if isinstance(model_states, dict):
        _check_shapes(engine, model_states, f"{load_dir}/{tag}")
    _weights_only_model_states(engine)
    try:
        path, client = engine.load_checkpoint(load_dir, tag=tag, load_optimizer_states=load_optim,
                                              load_lr_scheduler_states=False, load_module_only=finetune)
    except ConfigError:
        raise
    except Exception as e:  # noqa: BLE001 - any engine failure here is reported as one line, with its type
        bad = _unreadable_file(load_dir, tag)  # a shard torch cannot read: an incomplete checkpoint, not a mismatch
        if bad is not None:
            raise ConfigError(_incomplete_message(load_dir, tag, bad[0], bad[1],
                                                  _checker(engine, load_dir, load_optim))) from None
        # DeepSpeed raises RuntimeError/KeyError/AttributeError/ZeRORuntimeException when the checkpoint does not
        # fit this run (precision, ZeRO stage or data-parallel size); one line instead of a deep traceback.
        first = _strip_unsafe_advice(str(e).strip().splitlines()[0] if str(e).strip() else "") or type(e).__name__
        raise ConfigError(
            f"--load {load_dir}/{tag}: the checkpoint does not fit this run ({type(e).__name__}: {first[:300]}). "
            "Model flags (--num-layers, --hidden-size, --num-attention-heads, --seq-length, vocab) must match the "
            "checkpoint; if only precision, --zero-stage or the number of processes changed, add --no-load-optim"
        ) from None
    if path is None or client is None:
        raise ConfigError(f"--load {load_dir}: DeepSpeed could not load checkpoint {tag}")
    stored_family = client.get("model_family")
    if stored_family is not None and stored_family != model_family and not finetune:
        raise ConfigError(f"--load {load_dir}/{tag}: a {stored_family} checkpoint cannot resume a {model_family} run "
                          "(use --finetune to load the weights only)")
    if finetune:
        logger.info("loaded model weights from %s for finetuning (iteration reset to 0)", path)
        return LoadedCheckpoint(path=os.path.join(load_dir, tag), iteration=0, rng_state=None)
    if "train_state" not in client:
        raise ConfigError(f"--load {load_dir}/{tag}: not written by this framework (no train_state in the client "
                          "state); use --finetune to load the weights only")
    state.load_state_dict(client["train_state"])
    scheduler.load_state_dict(client["opt_param_scheduler"])
    data_eff.load_state_dict(client.get("data_efficiency") or {})
    rng = None
    saved_rng = client.get("rng_state")
    if not ck.no_load_rng and saved_rng:
        if len(saved_rng) != _world():
            logger.warning("checkpoint has RNG states of %d ranks, this run has %d; using rank 0's",
                           len(saved_rng), _world())
        rng = saved_rng[_rank()] if len(saved_rng) == _world() else saved_rng[0]
    logger.info("loaded checkpoint %s at iteration %d (consumed samples %d, tokens %d)", path, state.iteration,
                state.consumed_train_samples, state.consumed_train_tokens)
    return LoadedCheckpoint(path=os.path.join(load_dir, tag), iteration=state.iteration, rng_state=rng)


def _same_dir(a: str, b: str) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)


def check_save_dir(config: RunConfig, model_family: str) -> None:
    """At start-up: refuse --save into a directory holding a checkpoint this run would not resume (ConfigError).

    Allowed: no checkpoint there, --load is that directory (a resume, checked by ``check_resume``), or
    --overwrite-save. Otherwise saving would overwrite some steps, move ``latest`` backwards and leave the other
    run's later steps beside ours, so it is an error (not a warning: a warning scrolls away while hours of work
    are written over), for another model and for this same model alike.
    """
    ck = config.checkpoint
    save = ck.save
    if not save or not os.path.isdir(save):
        return
    try:
        tag = read_latest_tag(save)
    except ConfigError:
        tag = "?"
    if tag is None or (ck.load and _same_dir(ck.load, save)):
        return
    if getattr(ck, "overwrite_save", False):
        logger.warning("--save %s holds checkpoint %s of another run; writing into it (--overwrite-save)", save, tag)
        return
    client = read_client(save, tag) if tag != "?" else None
    way_out = f"save elsewhere, add --load {save} to resume it, or pass --overwrite-save to write into it anyway"
    if client is not None:
        family = client.get("model_family")  # None: written before families were recorded
        if family is not None and family != model_family:
            raise ConfigError(f"--save {save} holds another run's checkpoint ({tag}, a {family} model, this run "
                              f"trains {model_family}); {way_out}")
        diffs = differences(stored_identity(client), config_identity(config))
        if diffs:
            raise ConfigError(f"--save {save} holds another run's checkpoint ({tag}) of a different model: "
                              f"{describe(*diffs[0])}; {way_out}")
    raise ConfigError(f"--save {save} already holds checkpoint {tag} (`latest`) and this run does not resume it "
                      f"(--load {ck.load or 'not given'}): saving would move `latest` backwards and mix two runs' "
                      f"steps; {way_out}")
