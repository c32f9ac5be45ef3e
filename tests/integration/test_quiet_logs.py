"""Quieter logs (issue 13, item 12): the training log line summarises the curriculum's cluster builds since the
previous line (each build on its own is a debug message only); a configuration error stops before the argument
dump; the package keeps DeepSpeed's JIT op cache per virtual environment when TORCH_EXTENSIONS_DIR is unset."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

from conftest import REPO, subprocess_env
from test_data_efficiency_training import SEQ, Run, analyzed, argv_for, ds_config, metric, paced  # noqa: F401

LINE = re.compile(r"^ iteration\s+(\d+)/.*$", re.M)


def test_log_line_summarises_cluster_builds(analyzed, tmp_path, capsys):  # noqa: F811 - the imported fixture
    # voc percentile, fixed_root 2 from 1 to 100 over 6 steps: 41, 58, 71, 81, 91, 100 -> a new cluster every step
    path = ds_config(tmp_path, metrics={"voc": metric("voc", 1, 100, 6, every=1, root=2.0, data=analyzed)})
    js = json.loads(open(path).read())
    js["data_efficiency"]["data_sampling"]["num_workers"] = 2  # the sampler runs ahead of training
    open(path, "w").write(json.dumps(js))
    Run(argv_for(analyzed, path, cl=True, train_iters=6, log_interval=2))
    out = capsys.readouterr().out
    lines = {int(m.group(1)): m.group(0) for m in LINE.finditer(out)}
    assert sorted(lines) == [2, 4, 6]
    summaries = {it: re.findall(r"clusters: [^|]*", line) for it, line in lines.items()}
    voc = [paced(k, 1, 100, 6, 1, root=2.0) for k in range(1, 7)]
    assert voc == [41, 58, 71, 81, 91, 100]
    assert summaries == {it: [f"clusters: 2 built (difficulty voc {voc[it - 2]}->{voc[it - 1]}) "]
                         for it in (2, 4, 6)}, out[-3000:]
    assert "new cluster" not in out and "no cluster added" not in out


def test_configuration_error_comes_before_the_argument_dump(analyzed, tmp_path):  # noqa: F811
    js = ds_config(tmp_path, metrics={"seqlen_truncate": metric("seqlen_truncate", 8, 2 * SEQ, 4)})
    proc = subprocess.run([sys.executable, str(REPO / "pretrain_gpt.py"), *argv_for(analyzed, js, cl=True)],
                          cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=120)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and len(errors) == 1 and "max_difficulty: is 64 but --seq-length is 32" in errors[0]
    assert "arguments" not in proc.stdout, proc.stdout[-2000:]


def test_torch_extensions_dir_defaults_to_the_venv():
    probe = ("import os, sys, megatron\n"
             "from torch.utils.cpp_extension import _get_build_directory\n"
             "print(os.environ.get('TORCH_EXTENSIONS_DIR')); print(sys.prefix)\n"
             "print(_get_build_directory('op', False))")
    env = {k: v for k, v in subprocess_env().items() if k != "TORCH_EXTENSIONS_DIR"}
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=120, check=True).stdout.split("\n")
    if sys.prefix != sys.base_prefix:  # a venv (as the README sets up): its own cache, used by torch's JIT builds
        assert out[0] == os.path.join(out[1], "torch_extensions") and out[2].startswith(out[0]), out
    else:  # no venv: torch's default (~/.cache/torch_extensions)
        assert out[0] == "None", out
    set_env = dict(env, TORCH_EXTENSIONS_DIR="/somewhere/else")
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, env=set_env, capture_output=True, text=True,
                         timeout=120, check=True).stdout.split("\n")
    assert out[0] == "/somewhere/else"  # a variable the user set wins
