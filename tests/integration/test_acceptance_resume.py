"""Acceptance: a real `python pretrain_gpt.py` process is SIGKILLed and resumed with --load; the resumed run must
reproduce an uninterrupted run exactly, step for step (issue 3, "How it will be checked").

Three kills-and-resumes of real subprocesses (fp32, dropout on, so the RNG states must be restored too):

1. run B is killed DURING its second save: a wrapper stalls torch.save once it has written a file of the
   iteration-8 checkpoint (a "slow disk"), and the test SIGKILLs B there. ``latest`` and
   ``latest_checkpointed_iteration.txt`` must still name iteration 4, whose model states must load with
   ``torch.load(weights_only=True)``; the next save must clear the leftover.
2. B is resumed and SIGKILLed again between checkpoints (after iteration 10 is logged, i.e. after its save at 8).
3. B is resumed once more and runs to the end.

Every training log line of the resumed processes (iteration, consumed samples/tokens, learning rate, loss, grad
norm) must equal the uninterrupted run A's line for the same iteration, as must the final validation loss. The
log line prints losses with 7 significant digits, so the float32 losses are also compared bit-exactly through
TensorBoard.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from conftest import REPO, gpt_argv, subprocess_env

TRAIN_ITERS = 12
SAVE_INTERVAL = 4
FLAGS = dict(num_layers=2, hidden_size=64, num_attention_heads=4, seq_length=64, max_position_embeddings=64,
             micro_batch_size=4, global_batch_size=8, train_iters=TRAIN_ITERS, lr=1e-3, min_lr=1e-5,
             lr_warmup_iters=2, attention_dropout=0.1, hidden_dropout=0.1, eval_interval=6, eval_iters=2,
             save_interval=SAVE_INTERVAL, log_interval=1)

# Runs a script like `python`, but torch.save stalls after writing into a directory named $SLOW_SAVE_PREFIX*.
SLOW_SAVE_WRAPPER = '''
import os, runpy, sys, time
import torch
_real_save = torch.save
def _slow_save(obj, f, *args, **kwargs):
    _real_save(obj, f, *args, **kwargs)
    if os.path.basename(os.path.dirname(str(f))).startswith(os.environ["SLOW_SAVE_PREFIX"]):
        open(os.environ["SLOW_SAVE_MARKER"], "w").close()
        time.sleep(600)
torch.save = _slow_save
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
'''

LOG_LINE = re.compile(r"^ iteration\s+(\d+)/\s*\d+ \|.*$", re.M)
TIMING_FIELDS = re.compile(r"(elapsed time per iteration \(ms\)|tokens per second|TFLOPs): [0-9.]+")
VALIDATION_END = re.compile(r"validation loss at the end of training \(iteration (\d+)\) \| lm loss value: (\S+)")


def _log_lines(text: str) -> dict[int, str]:
    """iteration -> its training log line without the wall-clock fields."""
    return {int(m.group(1)): TIMING_FIELDS.sub(r"\1: -", m.group(0)) for m in LOG_LINE.finditer(text)}


def _tensorboard_losses(tb_dir: Path) -> dict[int, float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tb_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {e.step: e.value for e in acc.Scalars("lm-loss-training/lm loss")}


class Run:
    """One pretrain_gpt.py subprocess with its stdout+stderr in a log file."""

    def __init__(self, argv: list[str], log: Path, *, wrapper: Path | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.log = log
        cmd = [sys.executable] + ([str(wrapper)] if wrapper else []) + [str(REPO / "pretrain_gpt.py")] + argv
        with open(log, "w") as out:
            self.proc = subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                                         env={**subprocess_env(), **(env or {})}, start_new_session=True)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ok(self, timeout: float = 120) -> str:
        assert self.proc.wait(timeout=timeout) == 0, self.text()[-4000:]
        return self.text()

    def wait_for(self, done, what: str, timeout: float = 120, poll: float = 0.01) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            assert self.proc.poll() is None, f"process ended before {what}:\n{self.text()[-4000:]}"
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(poll)

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


def test_sigkilled_run_resumes_exactly(gpt_data_prefix: str, tmp_path: Path) -> None:
    def argv(save: Path, tb: Path) -> list[str]:
        return gpt_argv(gpt_data_prefix, **FLAGS, save=save, load=save, tensorboard_dir=tb)

    ckpt = tmp_path / "ckpt"
    wrapper = tmp_path / "slow_save.py"
    wrapper.write_text(SLOW_SAVE_WRAPPER)
    marker = tmp_path / "stalled-in-save"
    runs: list[Run] = []
    try:
        # A (uninterrupted) and B (stalls in its save at iteration 8) side by side
        a = Run(argv(tmp_path / "ckpt_a", tmp_path / "tb_a"), tmp_path / "a.log")
        b1 = Run(argv(ckpt, tmp_path / "tb_b1"), tmp_path / "b1.log", wrapper=wrapper,
                 env={"SLOW_SAVE_PREFIX": "global_step8", "SLOW_SAVE_MARKER": str(marker)})
        runs += [a, b1]
        b1.wait_for(marker.exists, "the save at iteration 8")
        b1.kill()  # SIGKILL in the middle of the save
        assert (ckpt / "latest").read_text() == "global_step4"
        assert (ckpt / "latest_checkpointed_iteration.txt").read_text() == "4"
        states = sorted((ckpt / "global_step4").glob("*model_states.pt"))
        assert states, sorted(os.listdir(ckpt / "global_step4"))
        client = torch.load(states[0], map_location="cpu", weights_only=True)
        assert client["iteration"] == 4 and client["train_state"]["consumed_train_samples"] == 32
        assert len(client["rng_state"]) == 1 and "module" in client

        full = a.wait_ok()
        full_lines, full_tb = _log_lines(full), _tensorboard_losses(tmp_path / "tb_a")
        assert sorted(full_lines) == sorted(full_tb) == list(range(1, TRAIN_ITERS + 1))

        # B resumed from global_step4, killed between checkpoints once iteration 10 is logged (after its save at 8)
        b2 = Run(argv(ckpt, tmp_path / "tb_b2"), tmp_path / "b2.log")
        runs.append(b2)
        b2.wait_for(lambda: 10 in _log_lines(b2.text()), "iteration 10")
        b2.kill()
        assert sorted(os.listdir(ckpt)) == ["global_step4", "global_step8", "latest",
                                            "latest_checkpointed_iteration.txt"]  # leftover of the kill removed
        assert (ckpt / "latest").read_text() == "global_step8"
        assert (ckpt / "latest_checkpointed_iteration.txt").read_text() == "8"
        b2_lines = _log_lines(b2.text())
        assert min(b2_lines) == 5 and max(b2_lines) >= 10

        # B resumed from global_step8, to the end
        b3 = Run(argv(ckpt, tmp_path / "tb_b3"), tmp_path / "b3.log")
        runs.append(b3)
        resumed = b3.wait_ok()
        b3_lines, b3_tb = _log_lines(resumed), _tensorboard_losses(tmp_path / "tb_b3")
        assert sorted(b3_lines) == sorted(b3_tb) == list(range(9, TRAIN_ITERS + 1))
    finally:
        for run in runs:
            run.kill()

    for lines in (b2_lines, b3_lines):
        for it, line in lines.items():
            assert line == full_lines[it], f"iteration {it} differs after resume:\n{line}\n{full_lines[it]}"
    for it, loss in b3_tb.items():  # float32 bit-exact
        assert loss == full_tb[it], (it, loss, full_tb[it])
    assert VALIDATION_END.findall(resumed) == VALIDATION_END.findall(full) != []
    assert (ckpt / "latest").read_text() == f"global_step{TRAIN_ITERS}"
    assert sorted(p.name for p in ckpt.glob("global_step*")) == [f"global_step{i}" for i in (12, 4, 8)]
