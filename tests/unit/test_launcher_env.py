"""Launcher discovery: torchrun/deepspeed, Open MPI, MPICH (PMI), SLURM srun and a plain process, from env vars only.

Every case works on a plain dict (nothing touches os.environ); the initializer's use of it is checked with
monkeypatched os.environ and a fake accelerator.
"""
from __future__ import annotations

import os

import pytest

from megatron.config import ConfigError
from megatron.training import launcher
from megatron.training.launcher import first_host, resolve_launch_env

KEYS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def launch(env: dict[str, str], **kwargs) -> dict[str, str]:
    resolve_launch_env(env, **kwargs)
    return {k: env[k] for k in KEYS}


def test_plain_process_is_a_world_of_one():
    out = launch({})
    assert (out["RANK"], out["WORLD_SIZE"], out["LOCAL_RANK"], out["MASTER_ADDR"]) == ("0", "1", "0", "127.0.0.1")
    assert 0 < int(out["MASTER_PORT"]) < 65536


def test_torchrun_and_deepspeed_variables_win_over_the_scheduler():
    env = {"RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "MASTER_ADDR": "n0", "MASTER_PORT": "1234",
           "SLURM_PROCID": "0", "SLURM_NTASKS": "2", "SLURM_LOCALID": "0"}  # torchrun inside an srun step
    assert launch(env) == {"RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "MASTER_ADDR": "n0",
                           "MASTER_PORT": "1234"}


def test_open_mpi_single_node():
    env = {"OMPI_COMM_WORLD_RANK": "3", "OMPI_COMM_WORLD_SIZE": "4", "OMPI_COMM_WORLD_LOCAL_RANK": "3",
           "OMPI_COMM_WORLD_LOCAL_SIZE": "4"}
    assert launch(env) == {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "3", "MASTER_ADDR": "127.0.0.1",
                           "MASTER_PORT": "29500"}


def test_open_mpi_multi_node_uses_deepspeed_discovery_or_stops(monkeypatch):
    env = {"OMPI_COMM_WORLD_RANK": "9", "OMPI_COMM_WORLD_SIZE": "16", "OMPI_COMM_WORLD_LOCAL_RANK": "1",
           "OMPI_COMM_WORLD_LOCAL_SIZE": "8"}
    called = []

    def fake_discovery(port: int) -> None:  # what deepspeed.comm.mpi_discovery does, via mpi4py
        called.append(port)
        env.update(RANK="9", WORLD_SIZE="16", LOCAL_RANK="1", MASTER_ADDR="10.0.0.1", MASTER_PORT=str(port))

    monkeypatch.setattr(launcher, "_mpi_discovery_available", lambda: True)
    assert launch(dict(env, MASTER_ADDR="head"))["MASTER_ADDR"] == "head"  # given: no discovery
    assert called == []
    assert launch(env, mpi_discovery=fake_discovery)["MASTER_ADDR"] == "10.0.0.1" and called == [29500]

    monkeypatch.setattr(launcher, "_mpi_discovery_available", lambda: False)
    env = {k: v for k, v in env.items() if k.startswith("OMPI")}
    with pytest.raises(ConfigError, match=r"Open MPI: 16 processes were launched but the address of rank 0 is "
                                          r"unknown: set MASTER_ADDR .*or install mpi4py"):
        resolve_launch_env(env)


def test_mpich_pmi_variables():
    env = {"PMI_RANK": "1", "PMI_SIZE": "2", "MPI_LOCALRANKID": "1", "MPI_LOCALNRANKS": "2"}
    assert launch(env) == {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "MASTER_ADDR": "127.0.0.1",
                           "MASTER_PORT": "29500"}


def test_slurm_srun_multi_node_takes_first_host_and_a_job_port():
    env = {"SLURM_PROCID": "6", "SLURM_STEP_NUM_TASKS": "8", "SLURM_LOCALID": "2", "SLURM_STEP_NUM_NODES": "2",
           "SLURM_JOB_NODELIST": "gpu[017-018]", "SLURM_JOB_ID": "123456"}
    assert launch(env) == {"RANK": "6", "WORLD_SIZE": "8", "LOCAL_RANK": "2", "MASTER_ADDR": "gpu017",
                           "MASTER_PORT": str(29500 + 456)}
    step = {"SLURM_PROCID": "1", "SLURM_STEP_NUM_TASKS": "2", "SLURM_NTASKS": "16", "SLURM_LOCALID": "1",
            "SLURM_STEP_NUM_NODES": "1"}  # a 2-task step of a 16-task job: the step's count is the world
    out = launch(step)
    assert (out["WORLD_SIZE"], out["MASTER_ADDR"]) == ("2", "127.0.0.1")


def test_slurm_without_a_derivable_master_addr_is_one_error():
    env = {"SLURM_PROCID": "1", "SLURM_STEP_NUM_TASKS": "4", "SLURM_LOCALID": "1"}
    with pytest.raises(ConfigError) as e:
        resolve_launch_env(env)
    message = str(e.value)
    assert message == ("SLURM srun: 4 processes were launched but the address of rank 0 is unknown: set MASTER_ADDR "
                       "(the host of rank 0) and MASTER_PORT")
    assert "RANK" not in env  # nothing half-set


@pytest.mark.parametrize("env,match", [
    ({"WORLD_SIZE": "4"}, "WORLD_SIZE=4 is set but RANK is not"),
    ({"RANK": "2"}, "RANK=2 is set but WORLD_SIZE is not"),
    ({"OMPI_COMM_WORLD_SIZE": "4"}, r"Open MPI launch was detected \(OMPI_COMM_WORLD_SIZE=4\) but "
                                    r"OMPI_COMM_WORLD_RANK is not set"),
    ({"PMI_SIZE": "2", "PMI_RANK": "x"}, r"PMI_RANK='x': expected an integer >= 0"),
    ({"RANK": "4", "WORLD_SIZE": "4"}, "rank 4 is not below the world size 4"),
    ({"RANK": "1", "WORLD_SIZE": "2", "MASTER_ADDR": "a"}, "LOCAL_RANK .* is not set and cannot be derived"),
])
def test_incomplete_multi_process_launch_is_one_error(env, match):
    with pytest.raises(ConfigError, match=match):
        resolve_launch_env(env)


def test_slurm_allocation_shell_without_srun_is_a_world_of_one():
    """salloc/sbatch shells carry SLURM_NTASKS but no SLURM_PROCID: one process, not a rank of many."""
    env = {"SLURM_NTASKS": "8", "SLURM_JOB_ID": "7", "SLURM_JOB_NODELIST": "n[1-2]"}
    out = launch(env)
    assert (out["RANK"], out["WORLD_SIZE"], out["MASTER_ADDR"]) == ("0", "1", "127.0.0.1")


@pytest.mark.parametrize("nodelist,host", [("node7", "node7"), ("gpu[003-010,12],login1", "gpu003"),
                                           ("a[1-2]-ib,b3", "a1-ib"), ("rack[2,4]-n[08-09]", "rack2-n08"),
                                           ("x1,x2", "x1")])
def test_first_host_of_a_slurm_nodelist(nodelist, host):
    assert first_host(nodelist) == host


def test_initializer_selects_the_local_device_modulo_visible_devices(monkeypatch):
    """srun --gpus-per-task=1: local rank 3 sees one device, which is device 0 for it."""
    import deepspeed
    import deepspeed.accelerator

    from megatron.training import initialize

    class FakeAccelerator:
        def __init__(self) -> None:
            self.device = None

        def device_name(self) -> str:
            return "cuda"

        def communication_backend_name(self) -> str:
            return "nccl"

        def device_count(self) -> int:
            return 1

        def set_device(self, index: int) -> None:
            self.device = index

    accel = FakeAccelerator()
    seen = {}
    for key in KEYS:  # set then delete: monkeypatch restores "absent" after the test
        monkeypatch.setenv(key, "unset")
        monkeypatch.delenv(key)
    for key, value in {"SLURM_PROCID": "3", "SLURM_STEP_NUM_TASKS": "4", "SLURM_LOCALID": "3", "SLURM_STEP_NUM_NODES": "1"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(deepspeed.accelerator, "get_accelerator", lambda: accel)
    monkeypatch.setattr(deepspeed, "init_distributed", lambda **kw: seen.update(kw))
    initialize.initialize_distributed("nccl", 5)
    assert accel.device == 0 and seen["dist_backend"] == "nccl"
    assert (os.environ["RANK"], os.environ["WORLD_SIZE"], os.environ["LOCAL_RANK"]) == ("3", "4", "3")


def test_srun_with_pmix_is_read_from_slurms_variables():
    env = {"PMIX_RANK": "1", "SLURM_PROCID": "1", "SLURM_STEP_NUM_TASKS": "2", "SLURM_LOCALID": "1", "SLURM_STEP_NUM_NODES": "1"}
    assert resolve_launch_env(env) == "SLURM srun" and (env["RANK"], env["WORLD_SIZE"]) == ("1", "2")


def test_slurm_batch_script_running_python_directly_is_a_world_of_one():
    """The batch step of `sbatch -n 8` carries SLURM_PROCID=0/SLURM_LOCALID=0 and SLURM_NTASKS=8, but no step size:
    a plain `python pretrain_gpt.py` there is one process (waiting for 7 ranks that never start would hang)."""
    env = {"SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NTASKS": "8", "SLURM_NNODES": "2", "SLURM_JOB_ID": "9",
           "SLURM_JOB_NODELIST": "n[1-2]"}
    out = launch(env)
    assert (out["RANK"], out["WORLD_SIZE"], out["MASTER_ADDR"]) == ("0", "1", "127.0.0.1")


def test_more_local_ranks_than_visible_devices_is_one_error(monkeypatch):
    """4 processes per node on 2 visible GPUs would silently share devices (NCCL later: 'Duplicate GPU')."""
    import deepspeed
    import deepspeed.accelerator

    from megatron.config import ConfigError
    from megatron.training import initialize

    class TwoGPUs:
        def device_name(self) -> str:
            return "cuda"

        def communication_backend_name(self) -> str:
            return "nccl"

        def device_count(self) -> int:
            return 2

        def set_device(self, index: int) -> None:
            raise AssertionError("must not pick a device")

    for key in KEYS:
        monkeypatch.setenv(key, "unset")
        monkeypatch.delenv(key)
    for key, value in {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "3", "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": "29500"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(deepspeed.accelerator, "get_accelerator", lambda: TwoGPUs())
    monkeypatch.setattr(deepspeed, "init_distributed", lambda **kw: None)
    with pytest.raises(ConfigError, match="local rank 3 but this process sees only 2 cuda devices"):
        initialize.initialize_distributed("nccl", 5)
