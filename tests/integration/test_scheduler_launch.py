"""Two processes started the way `srun` starts them (no RANK/WORLD_SIZE/LOCAL_RANK, only the scheduler's variables)
train as ONE two-rank job, not as two single-process runs on device 0 writing the same --save; and an incomplete
multi-process launch stops with one error line. (The Open MPI / MPICH variables are mapped by the same code:
tests/unit/test_launcher_env.py.)"""
from __future__ import annotations

import socket
import subprocess
import sys

from conftest import REPO, subprocess_env

def srun_variables(rank: int) -> dict[str, str]:
    """What `srun -n 2` on one node gives task `rank`."""
    return {"SLURM_PROCID": str(rank), "SLURM_STEP_NUM_TASKS": "2", "SLURM_LOCALID": str(rank), "SLURM_STEP_NUM_NODES": "1",
            "SLURM_JOB_ID": "42", "SLURM_JOB_NODELIST": "localhost"}


def free_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def test_srun_variables_make_one_two_rank_job(make_argv, tmp_path):
    argv = make_argv(train_iters=3, micro_batch_size=2, global_batch_size=8, save=tmp_path / "ckpt", eval_iters=0)
    port = free_port()  # given, as a job script would, so concurrent test runs do not collide on 29500
    procs = []
    for rank in range(2):
        env = dict(subprocess_env(), MASTER_PORT=port, **srun_variables(rank))
        procs.append(subprocess.Popen([sys.executable, str(REPO / "pretrain_gpt.py"), *argv], cwd=REPO, env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outs = [p.communicate(timeout=240) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    rank0 = outs[0][0]
    assert "micro 2 x 2 micro-batches x 2 ranks" in rank0, rank0[-3000:]  # one job: 8 = 2 x 2 x 2
    assert "consumed samples:           24" in rank0
    assert " iteration " not in outs[1][0]  # rank 1 logs nothing of its own: it is not a run of its own
    assert (tmp_path / "ckpt" / "latest").read_text() == "global_step3"


def test_incomplete_launch_is_one_error_line(make_argv):
    env = dict(subprocess_env(), SLURM_PROCID="1", SLURM_STEP_NUM_TASKS="4", SLURM_LOCALID="1")  # 4 tasks, no master
    proc = subprocess.run([sys.executable, str(REPO / "pretrain_gpt.py"), *make_argv(train_iters=1)], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: SLURM srun: 4 processes were launched but the address of rank 0 is unknown: set "
                      "MASTER_ADDR (the host of rank 0) and MASTER_PORT"], proc.stderr
