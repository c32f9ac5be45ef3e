"""--exit-signal-handler with 2 data-parallel ranks under torchrun (issue 13): SIGTERM sent to the whole job, as a
scheduler does (the launcher and both ranks), stops both ranks after the SAME step, saves once, each rank exits
143, and ``--load`` resumes to the log lines of an uninterrupted 2-rank run.

The launcher forwards the signal to every rank, and the test sends one more copy to the ranks a moment later (a
slower launcher): copies of the first signal must not kill a rank before its save. ZeRO-1 makes each rank write
its own optimizer shard, so both shards in the one saved step show that both ranks saved that step.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import REPO, gpt_argv, subprocess_env
from test_signal_exit import SIGNAL_LINE, _log_lines

TRAIN_ITERS = 40  # a window of seconds for the signal on a loaded machine (sent at iteration 3)

# Runs pretrain_gpt.py as a torchrun worker; records this rank's pid at start and exit status at the end.
RANK_WRAPPER = '''
import os, runpy, sys
out = os.environ["RANK_RECORD_DIR"]
rank = os.environ["RANK"]
with open(os.path.join(out, f"pid{rank}"), "w") as f:
    f.write(str(os.getpid()))
sys.argv = sys.argv[1:]
code = 1
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
    code = 0
except SystemExit as e:
    code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    raise
finally:
    with open(os.path.join(out, f"exit{rank}"), "w") as f:
        f.write(str(code))
'''


class Launch:
    """``torchrun --nproc_per_node 2`` of pretrain_gpt.py (own process group), output in a log file."""

    def __init__(self, argv: list[str], directory: Path) -> None:
        directory.mkdir()
        self.dir, self.log = directory, directory / "out.log"
        wrapper = directory / "rank.py"
        wrapper.write_text(RANK_WRAPPER)
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(wrapper),
               str(REPO / "pretrain_gpt.py"), *argv]
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                         env={**subprocess_env(), "RANK_RECORD_DIR": str(directory)})

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for_iteration(self, iteration: int, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while not any(i >= iteration for i in _log_lines(self.text())):
            assert self.proc.poll() is None, f"ended before iteration {iteration}:\n{self.text()[-4000:]}"
            assert time.monotonic() < deadline, f"timed out waiting for iteration {iteration}"
            time.sleep(0.005)

    def rank_record(self, name: str) -> list[int | None]:
        """``pid`` or ``exit`` status of ranks 0 and 1 (None: not written, e.g. the rank was killed)."""
        paths = [self.dir / f"{name}{rank}" for rank in (0, 1)]
        return [int(path.read_text()) if path.exists() else None for path in paths]

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


def test_sigterm_to_the_job_stops_both_ranks_on_one_step_and_resumes(gpt_data_prefix: str, tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt"

    def argv(**flags: object) -> list[str]:
        return gpt_argv(gpt_data_prefix, train_iters=TRAIN_ITERS, log_interval=1, zero_stage=1, micro_batch_size=2,
                        global_batch_size=8, **flags)

    runs: list[Launch] = []
    try:
        full = Launch(argv(), tmp_path / "full")
        term = Launch(argv(save=ckpt), tmp_path / "term")
        runs += [full, term]
        term.wait_for_iteration(3)
        os.killpg(term.proc.pid, signal.SIGTERM)  # the scheduler: launcher and both ranks
        time.sleep(0.03)
        for pid in term.rank_record("pid"):  # one more copy to each rank, after its handler ran, before its save
            assert pid is not None
            os.kill(pid, signal.SIGTERM)
        term.proc.wait(timeout=180)  # torchrun itself exits 1 after a signal (its own convention)
        text = term.text()
        assert term.rank_record("exit") == [143, 143], text[-4000:]  # None: killed before saving
        lines = SIGNAL_LINE.findall(text)
        assert len(lines) == 1, text[-4000:]
        name, stopped, directory, status = lines[0]
        stopped_at = int(stopped)
        assert (name, directory, int(status)) == ("SIGTERM", str(ckpt), 143)
        assert 3 <= stopped_at < TRAIN_ITERS and max(_log_lines(text)) == stopped_at
        assert (ckpt / "latest").read_text() == f"global_step{stopped_at}"
        assert sorted(p.name for p in ckpt.glob("global_step*")) == [f"global_step{stopped_at}"]  # saved once
        shards = sorted(p.name for p in (ckpt / f"global_step{stopped_at}").glob("*optim_states.pt"))
        assert [re.sub(r"_mp_rank.*", "", s) for s in shards] == ["zero_pp_rank_0", "zero_pp_rank_1"]

        assert full.proc.wait(timeout=300) == 0, full.text()[-4000:]
        full_lines = _log_lines(full.text())
        assert sorted(full_lines) == list(range(1, TRAIN_ITERS + 1))
        resumed = Launch(argv(save=ckpt, load=ckpt), tmp_path / "resumed")
        runs.append(resumed)
        assert resumed.proc.wait(timeout=300) == 0, resumed.text()[-4000:]
    finally:
        for run in runs:
            run.kill()
    before, after = _log_lines(text), _log_lines(resumed.text())
    assert sorted(after) == list(range(stopped_at + 1, TRAIN_ITERS + 1))
    for it, line in {**before, **after}.items():  # iteration, samples, tokens, lr, lm loss, grad norm
        assert line == full_lines[it], f"iteration {it} differs:\n{line}\n{full_lines[it]}"
