"""Checkpoints through the DeepSpeed engine, in DeepSpeed's and Megatron's layout, saved atomically.

Layout under --save: ``global_step{N}/`` (the engine's files; our state rides in its client_state),
``latest`` (the tag, read by DeepSpeed) and ``latest_checkpointed_iteration.txt`` (Megatron's tracker).
A save writes into ``global_step{N}.tmp``, renames it to ``global_step{N}`` and only then rewrites the two
tracker files (temp file + os.replace), so a process killed mid-save leaves ``latest`` pointing at the
previous, complete checkpoint. Leftover ``*.tmp`` directories are removed by the next save.
The model-states files (weights and our client state: tensors and plain values only) are loaded with
``torch.load(weights_only=True)``; DeepSpeed's ZeRO optimizer files keep DeepSpeed's own loader.
"""
from __future__ import annotations

import glob
import logging
import os
import shutil
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
    """Every rank's RNG state, indexed by rank (collective)."""
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
    old = final + OLD_SUFFIX
    if os.path.exists(final):  # re-saving the same iteration: keep the old copy until the new one is in place
        os.rename(final, old)
    os.rename(os.path.join(save_dir, tmp_tag), final)
    _fsync_dir(save_dir)
    atomic_write_text(os.path.join(save_dir, LATEST_FILE), tag)
    atomic_write_text(os.path.join(save_dir, TRACKER_FILE), str(iteration))
    _fsync_dir(save_dir)
    if os.path.exists(old):
        shutil.rmtree(old, ignore_errors=True)


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
    engine.save_checkpoint(save_dir, tag=tmp_tag, client_state=client_state(state, scheduler, data_eff, config, rng,
                                                                           model_family),
                           save_latest=False)
    _barrier()
    if _rank() == 0:
        _publish(save_dir, tmp_tag, tag, state.iteration)
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
    if not finetune:  # refuse another model/tokenizer/data layout before the engine loads anything
        stored = read_client(load_dir, tag)
        if stored is not None and stored.get("model_family") in (None, model_family):  # family: checked below
            check_resume(stored, config, f"{load_dir}/{tag}")
    _weights_only_model_states(engine)
    try:
        path, client = engine.load_checkpoint(load_dir, tag=tag,
                                              load_optimizer_states=not (ck.no_load_optim or finetune),
                                              load_lr_scheduler_states=False, load_module_only=finetune)
    except ConfigError:
        raise
    except Exception as e:  # noqa: BLE001 - any engine failure here is reported as one line, with its type
        # DeepSpeed raises RuntimeError/KeyError/AttributeError/ZeRORuntimeException when the checkpoint does not fit this run (model shape, precision, ZeRO stage
        # or data-parallel size); say so in one line instead of a traceback from deep inside the engine.
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
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
