"""Suite-wide test isolation."""
from __future__ import annotations

import sys

import pytest


@pytest.fixture(autouse=True, scope="module")
def _no_leftover_process_group():
    """Tear down a process group a test module left behind (through DeepSpeed, which caches its groups), so later
    tests that fork workers forming their own group start clean."""
    yield
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return
    if "deepspeed" in sys.modules:
        import deepspeed.comm

        deepspeed.comm.destroy_process_group()
    else:
        dist.destroy_process_group()
