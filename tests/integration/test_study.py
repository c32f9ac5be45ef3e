"""The study command end to end on --tiny (a one-value LR sweep of ~50 steps, then two cases of ~100 steps each, 1 MB
of the bundled corpus): killed during the last case's training, run again, it resumes that run from its checkpoint
without redoing the finished ones and writes the report with every column, the plots and the LR-sweep section."""
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
SETTINGS = ["--set", "budget_tokens=24576", "--set", "checkpoints=4", "--lr-sweep", "0.002"]


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
    assert "1/3 lrsweep_0.002: training already done" in log
    assert "2/3 baseline_100: training already done" in log
    assert "data: corpus" not in log  # the prepared data are reused
    resumed = re.search(r"3/3 cl_ltd_100: training .*resuming from global_step(\d+)", log)
    done = json.loads((study["dir"] / "runs" / "cl_ltd_100" / "done.json").read_text())
    assert resumed and int(resumed.group(1)) < done["train"]["steps"]  # killed mid-run, continued from there
    assert study["base_done"].stat().st_mtime_ns == study["base_stamp"]  # the finished case was not redone
    assert done["train"]["tokens"] >= done["plan"]["train_tokens"]
    assert done["train"]["steps"] == done["plan"]["est_steps"]  # the simulated schedule matches the real run
    assert done["train"]["processes"] == 2  # process_seconds sums the killed and the resumed process
    timing = json.loads((study["dir"] / "timing.json").read_text())
    assert len(timing["commands"]) == 2 and all(v > 0 for v in timing["commands"].values())


def test_report_has_every_column_and_the_plots(study: dict) -> None:
    report = study["dir"] / "report"
    md = (report / "data_efficiency_study.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| case | data | tokens | samples read | steps"))
    for column in ("samples read", "wall-clock (s)", "layer-tokens", "held-out loss", "held-out ppl", "word ppl",
                   "last-word acc", "choice acc_norm", "vs seed noise"):
        assert column in header
    rows = [line for line in md.splitlines() if line.startswith("| ") and "`cl_ltd_100`" in line]
    assert rows and "—" not in rows[0]  # every value of the table row was measured
    assert "## Data saving" in md and "## Conclusion" in md and "## Choice of the peak LR" in md
    main_table = md.split("## Results", 1)[1].split("## Data saving", 1)[0]
    assert "lrsweep" not in main_table and "lrsweep" not in md.split("## Data saving", 1)[1].split("## Conclusion")[0]
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
    assert [s["lr"] for s in data["lr_sweep"]["runs"]] == [0.002] and data["lr_sweep"]["best_lr"] == 0.002
    assert any("base_lr = 0.002 equals the sweep's best" in line for line in data["conclusion"])
    assert data["study_seconds_measured"] and data["study_seconds"] > 0
    assert ltd["sequences_read"] == ltd["train"]["steps"] * 8 and ltd["tokens_read"] > ltd["train"]["tokens"]
