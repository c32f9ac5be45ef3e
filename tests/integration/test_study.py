"""The study command end to end on --tiny (two cases, ~100 steps each, 1 MB of the bundled corpus): killed during
the second case's training, run again, it resumes that run from its checkpoint without redoing the first case
and writes the report with every column and the plots."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, subprocess_env

CASES = ["baseline_100", "cl_ltd_100"]
# 96 steps of 8 x 32 tokens with a checkpoint every 24: a window of a second or more to kill the second case's
# training between two checkpoints
SETTINGS = ["--set", "budget_tokens=24576", "--set", "checkpoints=4"]


def _study(study_dir: Path, log: Path) -> subprocess.Popen:
    out = open(log, "w")
    return subprocess.Popen([sys.executable, str(REPO / "tools" / "data_efficiency_study.py"), "--tiny",
                             "--study-dir", str(study_dir), "--cases", *CASES, *SETTINGS], cwd=REPO, stdout=out,
                            stderr=subprocess.STDOUT, env=subprocess_env(), start_new_session=True)


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("study")
    study_dir = root / "study"
    first = _study(study_dir, root / "first.log")
    ckpt_latest = study_dir / "runs" / "cl_ltd_100" / "checkpoint" / "latest"
    deadline = time.time() + 240
    while not ckpt_latest.exists() and first.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    os.killpg(first.pid, signal.SIGKILL)  # the study and its pretrain_gpt.py child, mid-run
    first.wait()
    assert ckpt_latest.exists(), (root / "first.log").read_text()[-3000:]
    base_done = study_dir / "runs" / "baseline_100" / "done.json"
    killed_done = json.loads(base_done.read_text())
    assert {"train", "eval", "zeroshot"} <= set(killed_done)
    stamp = base_done.stat().st_mtime_ns
    second = _study(study_dir, root / "second.log")
    assert second.wait(timeout=300) == 0, (root / "second.log").read_text()[-3000:]
    return {"dir": study_dir, "log": (root / "second.log").read_text(), "base_done": base_done,
            "base_stamp": stamp, "killed_done": killed_done}


def test_resume_skips_finished_work_and_continues_the_killed_run(study: dict) -> None:
    log = study["log"]
    assert "1/2 baseline_100: training already done" in log
    assert "data: corpus" not in log  # the prepared data are reused
    resumed = re.search(r"2/2 cl_ltd_100: training .*resuming from global_step(\d+)", log)
    done = json.loads((study["dir"] / "runs" / "cl_ltd_100" / "done.json").read_text())
    assert resumed and int(resumed.group(1)) < done["train"]["steps"]  # killed mid-run, continued from there
    assert study["base_done"].stat().st_mtime_ns == study["base_stamp"]  # the finished case was not redone
    assert done["train"]["tokens"] >= done["plan"]["train_tokens"]
    assert done["train"]["steps"] == done["plan"]["est_steps"]  # the simulated schedule matches the real run


def test_report_has_every_column_and_the_plots(study: dict) -> None:
    report = study["dir"] / "report"
    md = (report / "data_efficiency_study.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| case | data | tokens | steps"))
    for column in ("wall-clock (s)", "layer-tokens", "held-out loss", "held-out ppl", "word ppl", "last-word acc",
                   "choice acc_norm", "vs seed band"):
        assert column in header
    rows = [line for line in md.splitlines() if line.startswith("| ") and "`cl_ltd_100`" in line]
    assert rows and "—" not in rows[0]  # every value of the table row was measured
    assert "## Data saving" in md and "## Conclusion" in md
    for png in ("data_efficiency_study_loss.png", "data_efficiency_study_schedules.png"):
        assert (report / png).stat().st_size > 10_000 and f"]({png})" in md
    data = json.loads((report / "data_efficiency_study.json").read_text())
    runs = data["runs"]
    assert set(runs) == set(CASES)
    ltd = runs["cl_ltd_100"]
    assert len(ltd["validation"]) >= 4 and ltd["zeroshot"]["n_choice"] > 0
    assert {"seqlen", "voc", "reserved"} <= set(ltd["schedule"])
    # random-LTD drops tokens in the middle layer: fewer layer-tokens than a full run of the same steps
    assert ltd["train"]["layer_tokens"] < ltd["train"]["steps"] * 8 * 32 * 3
    assert data["conclusion"] and data["target_valid_loss"] == runs["baseline_100"]["validation"][-1]["loss"]
