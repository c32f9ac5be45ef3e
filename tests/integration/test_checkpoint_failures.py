"""Checkpoint and save failures give one clear line: incomplete/corrupt checkpoints name the file and the
--load-tag of the newest complete earlier step, shape mismatches name the tensor, an unwritable --save is refused
at start-up, a full disk during a save leaves the previous checkpoint and `latest` as they were (issue 13, 6-7)."""
from __future__ import annotations

import errno
import os
import re
import shutil

import pytest
import torch

from megatron.cli import pretrain_from_argv, run_cli
from megatron.specs.gpt import GPT_SPEC
from megatron.training import checkpointing

STATES = "mp_rank_00_model_states.pt"


def run(argv: list[str]):
    return pretrain_from_argv(GPT_SPEC, argv)


@pytest.fixture
def two_steps(make_argv, tmp_path):
    """A --save directory holding global_step2 and global_step4 (`latest`)."""
    ck = tmp_path / "ck"
    run(make_argv(train_iters=4, save=ck, save_interval=2))
    assert (ck / "latest").read_text() == "global_step4"
    return ck


def resume_error(make_argv, ck, **flags) -> str:
    with pytest.raises(ValueError) as info:
        run(make_argv(train_iters=4, load=ck, save=ck, **flags))
    message = str(info.value)
    assert "\n" not in message
    return message


def test_missing_model_states_names_file_and_previous_step(make_argv, two_steps):
    missing = two_steps / "global_step4" / STATES
    missing.unlink()
    message = resume_error(make_argv, two_steps)
    assert str(missing) in message and "is missing" in message, message
    assert "--load-tag global_step2" in message and "does not fit" not in message, message
    # the advice works
    resumed = run(make_argv(train_iters=4, load=two_steps, save=two_steps, load_tag="global_step2"))
    assert resumed.iterations == [3, 4] and (two_steps / "latest").read_text() == "global_step4"
    assert (two_steps / "global_step4" / STATES).is_file()


def test_truncated_model_states_names_file_without_unsafe_advice(make_argv, two_steps):
    path = two_steps / "global_step4" / STATES
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    message = resume_error(make_argv, two_steps)
    assert str(path) in message and "cannot be read" in message, message
    assert "--load-tag global_step2" in message, message
    assert "weights_only" not in message, message


def test_no_complete_earlier_step_is_said(make_argv, two_steps):
    (two_steps / "global_step2" / STATES).write_bytes(b"")
    (two_steps / "global_step4" / STATES).unlink()
    message = resume_error(make_argv, two_steps)
    assert "no complete earlier checkpoint" in message and "--load-tag" not in message, message


def test_shape_mismatch_names_tensor_and_both_shapes(make_argv, two_steps, tmp_path):
    ck = tmp_path / "edited"
    shutil.copytree(two_steps, ck)
    path = ck / "global_step4" / STATES
    states = torch.load(path, weights_only=True)
    name = next(k for k, v in states["module"].items() if isinstance(v, torch.Tensor) and v.dim() == 2)
    shape = list(states["module"][name].shape)
    states["module"][name] = torch.zeros(shape[0] + 1, shape[1])  # args (run identity) unchanged
    torch.save(states, path)
    message = resume_error(make_argv, ck)
    assert f"tensor {name} has shape {[shape[0] + 1, shape[1]]} in the checkpoint and {shape} in this model" \
        in message, message


def _no_model_built(monkeypatch):
    import megatron.training.engine as engine_module

    def fail(*_a, **_k):
        raise AssertionError("the model was built before --save was checked")

    monkeypatch.setattr(engine_module, "setup_model_and_optimizer", fail)


def test_save_under_a_regular_file_is_refused_at_start_up(make_argv, tmp_path, monkeypatch, capsys):
    _no_model_built(monkeypatch)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    save = blocker / "ck"
    with pytest.raises(SystemExit) as info:
        run_cli(lambda: run(make_argv(train_iters=4, save=save)))
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: --save {save}: not a writable directory"), err


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_save_is_refused_at_start_up(make_argv, tmp_path, monkeypatch):
    _no_model_built(monkeypatch)
    save = tmp_path / "ro"
    save.mkdir()
    save.chmod(0o500)
    try:
        with pytest.raises(ValueError, match=rf"^--save {re.escape(str(save))}: not a writable directory \(Permission denied\)"):
            run(make_argv(train_iters=4, save=save))
    finally:
        save.chmod(0o700)


def _check_disk_full(message: str, ck) -> None:
    assert "\n" not in message and f"--save {ck}: no space left on device" in message, message
    assert (ck / "latest").read_text() == "global_step2"
    assert (ck / "latest_checkpointed_iteration.txt").read_text() == "2"
    assert sorted(os.listdir(ck)) == ["global_step2", "latest", "latest_checkpointed_iteration.txt"]


def test_disk_full_in_engine_save(make_argv, tmp_path, monkeypatch, capsys):
    from deepspeed.runtime.engine import DeepSpeedEngine

    real = DeepSpeedEngine.save_checkpoint
    calls = []

    def save_checkpoint(self, save_dir, tag=None, **kwargs):
        calls.append(tag)
        if len(calls) == 1:
            return real(self, save_dir, tag=tag, **kwargs)
        os.makedirs(os.path.join(save_dir, tag), exist_ok=True)  # a partial save
        with open(os.path.join(save_dir, tag, STATES), "wb") as f:
            f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(DeepSpeedEngine, "save_checkpoint", save_checkpoint)
    ck = tmp_path / "ck"
    with pytest.raises(SystemExit) as info:
        run_cli(lambda: run(make_argv(train_iters=4, save=ck, save_interval=2)))
    assert info.value.code == 2 and calls == ["global_step2.tmp", "global_step4.tmp"]
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    _check_disk_full(err[0][len("error: "):], ck)


def test_disk_full_while_publishing(make_argv, tmp_path, monkeypatch):
    real = checkpointing.atomic_write_text
    calls = []

    def atomic_write_text(path, text):
        calls.append(text)
        if text == "global_step4":
            with open(f"{path}.{os.getpid()}.tmp", "w") as f:  # the temp file of the failed write
                f.write("glob")
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, text)

    monkeypatch.setattr(checkpointing, "atomic_write_text", atomic_write_text)
    ck = tmp_path / "ck"
    with pytest.raises(ValueError) as info:
        run(make_argv(train_iters=4, save=ck, save_interval=2))
    assert "global_step4" in calls
    _check_disk_full(str(info.value), ck)


def test_missing_zero_shard_names_it(make_argv, tmp_path):
    ck = tmp_path / "ck"
    flags = dict(zero_stage=1, bf16=True)
    run(make_argv(train_iters=4, save=ck, save_interval=2, **flags))
    shards = sorted((ck / "global_step4").glob("*optim_states.pt"))
    assert shards
    shards[0].unlink()
    message = resume_error(make_argv, ck, **flags)
    assert str(shards[0]) in message and "is missing" in message and "--load-tag global_step2" in message, message


def test_disk_full_writing_the_tracker_restores_latest(make_argv, tmp_path, monkeypatch):
    real = checkpointing.atomic_write_text

    def atomic_write_text(path, text):
        if text == "4":
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, text)

    monkeypatch.setattr(checkpointing, "atomic_write_text", atomic_write_text)
    ck = tmp_path / "ck"
    with pytest.raises(ValueError) as info:
        run(make_argv(train_iters=4, save=ck, save_interval=2))
    _check_disk_full(str(info.value), ck)
