"""Curriculum learning + random-LTD on 2 data-parallel ranks equal 1 rank with the same global batch (issue 13,
item 11): random-LTD draws are keyed by the sample's global position in the global batch, not by the rank.

One run in this process (1 rank, micro-batch 4, 2 micro-batches per step) against a real ``torchrun`` with
2 gloo ranks (micro-batch 4 each, one micro-batch per step): same losses (to float32 reduction-order noise),
same curriculum lengths and reserved lengths, and tokens were really dropped on some of the compared steps.
"""
from __future__ import annotations

import re
import subprocess
import sys

import pytest

from conftest import REPO, subprocess_env
from test_data_efficiency_training import SEQ, Run, analyzed, argv_for, ds_config, ltd_block, metric  # noqa: F401

ITERS = 6
FIELDS = re.compile(r"lm loss: (\S+) \|.*curriculum seqlen: (\d+) \|.*random ltd reserved length: (\d+) \|")


def _fields(stdout: str) -> list[tuple[float, int, int]]:
    """(lm loss, curriculum seqlen, reserved length) of every training log line."""
    out = []
    for line in stdout.splitlines():
        match = FIELDS.search(line) if " iteration " in line else None
        if match:
            out.append((float(match.group(1)), int(match.group(2)), int(match.group(3))))
    return out


def test_two_ranks_cl_ltd_equal_one_rank(analyzed, tmp_path):  # noqa: F811 - the imported fixture
    # curriculum seqlen 16 -> 32 over 4 steps, r 8 -> 32 over 12 steps: r < seqlen (tokens dropped) every step
    js = ds_config(tmp_path, metrics={"voc": metric("voc", 1, 100, 4, every=1, root=2.0, data=analyzed),
                                      "seqlen_truncate": metric("seqlen_truncate", 16, SEQ, 4)},
                   ltd=ltd_block(4, [1, 2], 8, SEQ, 12))
    argv = argv_for(analyzed, js, cl=True, ltd=True, num_layers=4, train_iters=ITERS, micro_batch_size=4,
                    global_batch_size=8)
    one = Run(argv)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(REPO / "pretrain_gpt.py"), *argv]
    proc = subprocess.run(cmd, cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    two = _fields(proc.stdout)
    assert len(two) == ITERS, proc.stdout[-3000:]
    one_fields = one.result.losses
    assert [loss for loss, _, _ in two] == pytest.approx([s["lm loss"] for s in one_fields], abs=1e-5)
    lengths = [(cs, r) for _, cs, r in two]
    assert lengths == [(16, 8), (24, 8), (24, 8), (32, 8), (32, 16), (32, 16)]  # both schedules, per step
    assert all(r < cs for cs, r in lengths)  # every compared step dropped tokens in layers 1 and 2
