"""Which process am I? RANK/WORLD_SIZE/LOCAL_RANK/MASTER_ADDR/MASTER_PORT from whatever started the process.

First match wins (``resolve_launch_env``):

1. ``RANK`` and ``WORLD_SIZE`` already set: torchrun, the ``deepspeed`` launcher (and its MPICH/Intel MPI helper).
2. An MPI or SLURM launch without them: Open MPI (``OMPI_COMM_WORLD_RANK/SIZE/LOCAL_RANK``), MVAPICH
   (``MV2_COMM_WORLD_*``), MPICH/Intel MPI hydra (``PMI_RANK``/``PMI_SIZE``, ``MPI_LOCALRANKID``) and SLURM
   ``srun`` (``SLURM_PROCID``, ``SLURM_STEP_NUM_TASKS``, ``SLURM_LOCALID``; a batch script's own SLURM_PROCID=0 is
   not a launch), copied to
   RANK/WORLD_SIZE/LOCAL_RANK. This is what DeepSpeed's openmpi/mpich/mvapich/slurm runners and a plain ``srun`` or
   ``mpirun`` give a process.
3. None of these: a world of one on a free local port (a plain ``python pretrain_gpt.py``).

A missing ``MASTER_ADDR`` of a multi-process launch is 127.0.0.1 when every process runs on one node, else the first
host of the SLURM node list, else DeepSpeed's own MPI discovery (mpi4py, as ``deepspeed.init_distributed`` would do)
finds it. A missing ``MASTER_PORT`` is 29500 (under SLURM 29500 + job id % 1000, so that two jobs sharing a node do
not collide). A multi-process launch whose rank, world size, local rank or rendezvous address cannot be determined
is one ConfigError naming the variables to set, instead of every process training alone on device 0 and all of
them writing the same --save.
"""
from __future__ import annotations

import importlib.util
import os
import re
import socket
from dataclasses import dataclass
from typing import Callable, MutableMapping

from megatron.config import ConfigError

DEFAULT_PORT = 29500
"""torch.distributed's and DeepSpeed's default rendezvous port."""
LAUNCH_KEYS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class LauncherVars:
    """The environment variables one kind of launcher sets for every process it starts."""

    name: str
    """Launcher named in messages."""
    rank: tuple[str, ...]
    """Global rank (first present wins)."""
    size: tuple[str, ...]
    """Number of processes."""
    local_rank: tuple[str, ...]
    """Index of the process on its node."""
    local_size: tuple[str, ...] = ()
    """Processes on this node (all on one node when it equals the world size)."""
    num_nodes: tuple[str, ...] = ()
    """Number of nodes (all on one node when 1)."""
    needs_both: bool = False
    """Only a rank AND a size variable mean "started by this launcher" (SLURM: an allocation's shell carries
    SLURM_NTASKS, and a batch script also carries SLURM_PROCID=0 of the batch step; only ``srun`` tasks carry
    SLURM_STEP_NUM_TASKS, the size of their own step)."""


LAUNCHERS = (  # MPI before SLURM: `mpirun` inside an allocation also carries the batch step's SLURM variables
    LauncherVars("Open MPI", ("OMPI_COMM_WORLD_RANK",), ("OMPI_COMM_WORLD_SIZE",), ("OMPI_COMM_WORLD_LOCAL_RANK",),
                 ("OMPI_COMM_WORLD_LOCAL_SIZE",)),
    LauncherVars("MVAPICH", ("MV2_COMM_WORLD_RANK",), ("MV2_COMM_WORLD_SIZE",), ("MV2_COMM_WORLD_LOCAL_RANK",),
                 ("MV2_COMM_WORLD_LOCAL_SIZE",)),
    # (not PMIX_RANK: `srun --mpi=pmix` sets it without a size; SLURM's own variables below describe that launch)
    LauncherVars("MPICH/Intel MPI (PMI)", ("PMI_RANK",), ("PMI_SIZE",),
                 ("MPI_LOCALRANKID", "PALS_LOCAL_RANKID"), ("MPI_LOCALNRANKS", "PALS_LOCAL_SIZE")),
    LauncherVars("SLURM srun", ("SLURM_PROCID",), ("SLURM_STEP_NUM_TASKS",),
                 ("SLURM_LOCALID",), (), ("SLURM_STEP_NUM_NODES",), needs_both=True),
)
SLURM_NODELISTS = ("SLURM_STEP_NODELIST", "SLURM_JOB_NODELIST", "SLURM_NODELIST")


def _first(env: MutableMapping[str, str], names: tuple[str, ...]) -> tuple[str, str] | None:
    """(name, value) of the first of `names` set in `env`."""
    for name in names:
        if env.get(name, "").strip():
            return name, env[name].strip()
    return None


def _int(name: str, value: str, minimum: int = 0) -> int:
    try:
        number = int(value)
    except ValueError:
        number = minimum - 1
    if number < minimum:
        raise ConfigError(f"environment variable {name}={value!r}: expected an integer >= {minimum}")
    return number


def first_host(nodelist: str) -> str:
    """The first host of a SLURM node list: ``gpu[003-010,12],login1`` -> ``gpu003``; ``a[1-2]-ib`` -> ``a1-ib``."""
    depth, end = 0, len(nodelist)
    for i, ch in enumerate(nodelist):  # the first top-level comma ends the first entry
        depth += ch == "["
        depth -= ch == "]"
        if ch == "," and depth == 0:
            end = i
            break
    entry = nodelist[:end].strip()
    # every bracket group -> the first value of its first range
    return re.sub(r"\[([^\]]*)\]", lambda m: re.split(r"[-,]", m.group(1), maxsplit=1)[0].strip(), entry)


def _free_port() -> str:
    with socket.socket() as s:  # a free port, so concurrent single-process runs do not collide
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def _one_node(env: MutableMapping[str, str], launcher: LauncherVars | None, world: int) -> bool | None:
    """True/False when the launcher says whether all `world` processes share this node; None when it does not."""
    if launcher is None:
        return None
    local = _first(env, launcher.local_size)
    if local is not None:
        return _int(*local, minimum=1) == world
    nodes = _first(env, launcher.num_nodes)
    if nodes is not None:
        return _int(*nodes, minimum=1) == 1
    return None


def _detect(env: MutableMapping[str, str]) -> LauncherVars | None:
    """The launcher whose rank or size variables are present (MPI first), or None."""
    for launcher in LAUNCHERS:
        rank, size = _first(env, launcher.rank), _first(env, launcher.size)
        if (rank is not None and size is not None) or (not launcher.needs_both and (rank or size) is not None):
            return launcher
    return None


def _mpi_discovery_available() -> bool:
    return importlib.util.find_spec("mpi4py") is not None


def _deepspeed_mpi_discovery(port: int) -> None:
    """DeepSpeed's own discovery (mpi4py): sets RANK/WORLD_SIZE/LOCAL_RANK/MASTER_ADDR/MASTER_PORT in os.environ."""
    from deepspeed.comm.comm import mpi_discovery

    mpi_discovery(distributed_port=port, verbose=False)


def resolve_launch_env(env: MutableMapping[str, str] | None = None, *,
                       mpi_discovery: Callable[[int], None] | None = None) -> str:
    """Fill RANK/WORLD_SIZE/LOCAL_RANK/MASTER_ADDR/MASTER_PORT in `env` (os.environ by default); returns the
    launcher's name ("single process" for a world of one). ConfigError when a multi-process launch is detected but
    this process's place in it cannot be determined."""
    env = os.environ if env is None else env
    launcher = _detect(env)
    if "RANK" in env and "WORLD_SIZE" in env:
        name = "RANK/WORLD_SIZE"
        rank, world = _int("RANK", env["RANK"]), _int("WORLD_SIZE", env["WORLD_SIZE"], minimum=1)
        local = _first(env, ("LOCAL_RANK",) + (launcher.local_rank if launcher else ()))
    elif "RANK" in env or "WORLD_SIZE" in env:
        given, missing = ("RANK", "WORLD_SIZE") if "RANK" in env else ("WORLD_SIZE", "RANK")
        raise ConfigError(f"environment variable {given}={env[given]} is set but {missing} is not: set both (a "
                          "launcher such as torchrun or deepspeed sets RANK, WORLD_SIZE and LOCAL_RANK)")
    elif launcher is not None:
        name = launcher.name
        rank_var, size_var = _first(env, launcher.rank), _first(env, launcher.size)
        if rank_var is None or size_var is None:
            have = rank_var or size_var
            assert have is not None
            lacking = "/".join(launcher.size if size_var is None else launcher.rank)
            raise ConfigError(f"a {launcher.name} launch was detected ({have[0]}={have[1]}) but {lacking} is not set, "
                              "so this process's rank and the number of processes are unknown; set RANK and "
                              "WORLD_SIZE (and LOCAL_RANK, MASTER_ADDR, MASTER_PORT)")
        rank, world = _int(*rank_var), _int(*size_var, minimum=1)
        local = _first(env, ("LOCAL_RANK",) + launcher.local_rank)
    else:
        name, rank, world, local = "single process", 0, 1, None
    if rank >= world:
        raise ConfigError(f"rank {rank} is not below the world size {world} ({name}): check the launcher's variables")
    if world == 1:
        env.setdefault("LOCAL_RANK", "0")
        env["RANK"], env["WORLD_SIZE"] = str(rank), "1"
        env.setdefault("MASTER_ADDR", "127.0.0.1")
        env.setdefault("MASTER_PORT", _free_port())
        return name
    one_node = _one_node(env, launcher, world)
    port = DEFAULT_PORT
    job = env.get("SLURM_JOB_ID", "").strip()
    if job.isdigit():
        port = DEFAULT_PORT + int(job) % 1000
    if local is None:
        if one_node is not True:
            raise ConfigError(f"{name}: {world} processes, but LOCAL_RANK (this process's index on its node) is not "
                              "set and cannot be derived; set LOCAL_RANK")
        local = ("RANK", str(rank))
    local_rank = _int(*local)
    if "MASTER_ADDR" not in env:
        nodelist = _first(env, SLURM_NODELISTS) if launcher is not None and launcher.name.startswith("SLURM") else None
        if one_node:
            env["MASTER_ADDR"] = "127.0.0.1"
        elif nodelist is not None:
            env["MASTER_ADDR"] = first_host(nodelist[1])
        elif launcher is not None and not launcher.name.startswith("SLURM") and _mpi_discovery_available():
            given = env.get("MASTER_PORT")
            (mpi_discovery or _deepspeed_mpi_discovery)(_int("MASTER_PORT", given, 1) if given else port)
            return f"{name} (DeepSpeed MPI discovery)"
        else:
            raise ConfigError(f"{name}: {world} processes were launched but the address of rank 0 is unknown: set "
                              "MASTER_ADDR (the host of rank 0) and MASTER_PORT"
                              + ("" if launcher is None or launcher.name.startswith("SLURM") else
                                 ", or install mpi4py for DeepSpeed's MPI discovery"))
    env["RANK"], env["WORLD_SIZE"] = str(rank), str(world)
    env["LOCAL_RANK"] = str(local_rank)
    env.setdefault("MASTER_PORT", str(port))
    return name
