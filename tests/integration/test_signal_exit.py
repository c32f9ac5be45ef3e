"""--exit-signal-handler (issue 13, item 10): SIGTERM/SIGINT finish the current step, save, print one line and exit
with 128 + signal (143 SIGTERM, 130 SIGINT); ``--load`` then resumes to the same losses as an uninterrupted run.

Real ``python pretrain_gpt.py`` subprocesses: an uninterrupted run A, a run B sent SIGTERM after a few iterations
(then resumed), and a run C sent SIGINT to its whole process group, as Ctrl-C in a terminal does (with DataLoader
workers, which must ignore it). The handler itself (second signal, restoring the previous handlers) is checked
in-process.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, gpt_argv, subprocess_env

TRAIN_ITERS = 160  # a window of seconds for the signal even on a loaded machine (the poll may be descheduled)
LOG_LINE = re.compile(r"^ iteration\s+(\d+)/\s*\d+ \|.*$", re.M)
TIMING_FIELDS = re.compile(r"(elapsed time per iteration \(ms\)|tokens per second|TFLOPs): [0-9.]+")
SIGNAL_LINE = re.compile(r"^received (SIG\w+): saved checkpoint at iteration (\d+) to (.+); exiting with status "
                         r"(\d+)$", re.M)


def _log_lines(text: str) -> dict[int, str]:
    """iteration -> its training log line without the wall-clock fields."""
    return {int(m.group(1)): TIMING_FIELDS.sub(r"\1: -", m.group(0)) for m in LOG_LINE.finditer(text)}


class Run:
    """One pretrain_gpt.py subprocess (own process group) with its stdout+stderr in a log file."""

    def __init__(self, argv: list[str], log: Path) -> None:
        self.log = log
        with open(log, "w") as out:
            self.proc = subprocess.Popen([sys.executable, str(REPO / "pretrain_gpt.py")] + argv, cwd=REPO,
                                         stdout=out, stderr=subprocess.STDOUT, env=subprocess_env(),
                                         start_new_session=True)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait(self, timeout: float = 120) -> int:
        return self.proc.wait(timeout=timeout)

    def signal_after(self, iteration: int, sig: int, *, group: bool = False, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while not any(i >= iteration for i in _log_lines(self.text())):
            assert self.proc.poll() is None, f"process ended before iteration {iteration}:\n{self.text()[-4000:]}"
            assert time.monotonic() < deadline, f"timed out waiting for iteration {iteration}"
            time.sleep(0.005)
        if group:
            os.killpg(self.proc.pid, sig)
        else:
            self.proc.send_signal(sig)

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


def _stopped_by(run: Run, name: str, status: int, ckpt: Path) -> int:
    """Check the exit status, the one line and `latest`; returns the iteration saved."""
    code = run.wait()
    text = run.text()
    assert code == status, text[-4000:]
    assert "Traceback" not in text, text[-4000:]
    lines = SIGNAL_LINE.findall(text)
    assert len(lines) == 1, text[-4000:]
    got_name, iteration, directory, got_status = lines[0]
    assert (got_name, directory, int(got_status)) == (name, str(ckpt), status)
    iteration = int(iteration)
    assert 3 <= iteration < TRAIN_ITERS, "the signal should stop the run early"
    assert max(_log_lines(text)) == iteration  # the step in flight was finished, no further one started
    assert (ckpt / "latest").read_text() == f"global_step{iteration}"
    assert (ckpt / "latest_checkpointed_iteration.txt").read_text() == str(iteration)
    assert "validation loss at the end of training" not in text  # stops at once after the save
    return iteration


def test_sigterm_saves_and_resumes_exactly_sigint_too(gpt_data_prefix: str, tmp_path: Path) -> None:
    def argv(**flags: object) -> list[str]:
        return gpt_argv(gpt_data_prefix, train_iters=TRAIN_ITERS, log_interval=1, **flags)

    term_ckpt, int_ckpt = tmp_path / "term", tmp_path / "int"
    runs: list[Run] = []
    try:
        full = Run(argv(), tmp_path / "full.log")
        term = Run(argv(save=term_ckpt), tmp_path / "term.log")
        ctrl_c = Run(argv(save=int_ckpt, num_workers=2), tmp_path / "int.log")  # workers get Ctrl-C too
        runs += [full, term, ctrl_c]
        term.signal_after(3, signal.SIGTERM)
        ctrl_c.signal_after(3, signal.SIGINT, group=True)
        stopped_at = _stopped_by(term, "SIGTERM", 143, term_ckpt)
        _stopped_by(ctrl_c, "SIGINT", 130, int_ckpt)
        assert full.wait() == 0, full.text()[-4000:]
        full_lines = _log_lines(full.text())
        assert sorted(full_lines) == list(range(1, TRAIN_ITERS + 1))

        resumed = Run(argv(save=term_ckpt, load=term_ckpt), tmp_path / "resumed.log")
        runs.append(resumed)
        assert resumed.wait() == 0, resumed.text()[-4000:]
    finally:
        for run in runs:
            run.kill()
    before, after = _log_lines(term.text()), _log_lines(resumed.text())
    assert sorted(after) == list(range(stopped_at + 1, TRAIN_ITERS + 1))
    for it, line in {**before, **after}.items():  # iteration, samples, tokens, lr, lm loss, grad norm
        assert line == full_lines[it], f"iteration {it} differs:\n{line}\n{full_lines[it]}"
    assert (term_ckpt / "latest").read_text() == f"global_step{TRAIN_ITERS}"


@pytest.mark.skipif(not hasattr(signal, "SIGTERM"), reason="POSIX signals")
def test_handler_duplicate_second_signal_and_restore(monkeypatch: pytest.MonkeyPatch) -> None:
    from megatron.training import loop
    from megatron.training.loop import TrainResult, exit_signal_handler, signal_exit
    from megatron.training.state import TrainState

    before = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    with exit_signal_handler(False) as off:
        assert off is None and signal.getsignal(signal.SIGTERM) == before[signal.SIGTERM]
    with exit_signal_handler(True) as signals:
        assert signals is not None and signals.received is None
        os.kill(os.getpid(), signal.SIGINT)  # no KeyboardInterrupt: recorded for the loop
        time.sleep(0.01)
        assert signals.received == signal.SIGINT
        os.kill(os.getpid(), signal.SIGINT)  # the launcher's forwarded copy, milliseconds later: ignored
        time.sleep(0.01)
        assert signals.received == signal.SIGINT
        monkeypatch.setattr(loop, "DUPLICATE_WINDOW_S", 0.05)
        signals.escalate()  # the loop stops: from now on the next SIGTERM or SIGINT kills at once (OS default)
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
        assert signal.getsignal(signal.SIGINT) == signal.SIG_DFL
        result = TrainResult(state=TrainState(iteration=7))
        signal_exit(signals, result, "/ckpt")
    assert {sig: signal.getsignal(sig) for sig in before} == before
    assert (result.exit_reason, result.exit_signal, result.exit_status) == ("signal SIGINT", signal.SIGINT, 130)
    assert TrainResult(state=TrainState()).exit_status == 0


SECOND_SIGNAL = """
import os, signal, sys, time
from megatron.training import loop
loop.DUPLICATE_WINDOW_S = 0.2
with loop.exit_signal_handler(True) as signals:
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(0.01)
    os.kill(os.getpid(), signal.SIGTERM)  # a copy: ignored
    time.sleep(0.01)
    print("alive after the copy", signals.received, flush=True)
    time.sleep(0.3)
    os.kill(os.getpid(), signal.SIGTERM)  # a second signal after the window: the process dies at once
    time.sleep(5)
    print("still alive", flush=True)
"""


@pytest.mark.skipif(not hasattr(signal, "SIGTERM"), reason="POSIX signals")
def test_a_real_second_signal_kills_at_once() -> None:
    proc = subprocess.run([sys.executable, "-c", SECOND_SIGNAL], cwd=REPO, env=subprocess_env(), capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == -signal.SIGTERM, proc.stdout + proc.stderr
    assert proc.stdout.splitlines() == [f"alive after the copy {int(signal.SIGTERM)}"], proc.stdout


def test_flag_default_on_and_off() -> None:
    from megatron.arguments import parse_args

    assert parse_args([]).exit_signal_handler is True
    assert parse_args(["--no-exit-signal-handler"]).exit_signal_handler is False
