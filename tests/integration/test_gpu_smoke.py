"""scripts/gpu_smoke.sh: its CPU self-test end to end (every CPU check passes, GPU-only rows say why they are
skipped), the failure path (exit 1), bad usage (exit 2), the inf-gradient hook, and the real run where CUDA exists."""
from __future__ import annotations

import subprocess

import pytest
import torch

from conftest import REPO, _load_tool, subprocess_env

smoke = _load_tool("gpu_smoke")


def run_script(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    env = subprocess_env()
    env.pop("DS_ACCELERATOR", None)  # the script picks the accelerator itself
    return subprocess.run(["bash", str(REPO / "scripts" / "gpu_smoke.sh"), *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def table_rows(stdout: str) -> dict[str, tuple[str, str]]:
    """{check title: (result, detail)} from the summary table."""
    rows = {}
    for line in stdout.splitlines():
        parts = [p.strip() for p in line.split("|")]
        if len(parts) == 4 and parts[1] in ("pass", "FAIL", "skip"):
            rows[parts[0]] = (parts[1], parts[3])
    return rows


def test_cpu_selftest_passes_every_cpu_check(tmp_path):
    proc = run_script("--cpu-selftest", "--workdir", str(tmp_path / "smoke"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = table_rows(proc.stdout)
    assert len(rows) == 1 + len(smoke.CHECKS), proc.stdout
    for title in ("fp16 CL+LTD, forced overflow skipped", "flash attention on the causal path",
                  "document masks: FlexAttention = dense", "bf16 curriculum, 2 GPUs (torchrun)"):
        assert rows[title] == ("skip", "skipped: no GPU"), rows[title]
    passed = {title for title, (result, _) in rows.items() if result == "pass"}
    assert passed == {"tokenized corpus", "bf16 CL+LTD, 1 CPU process", "resume exact (bf16 CL+LTD)",
                      "ZeRO-3 + LTD checkpoint -> eval_gpt", "bench/train_throughput.py",
                      "bench/random_ltd_speedup.py"}, rows
    assert "MFU" in rows["bench/train_throughput.py"][1]
    assert "all checks passed" in proc.stdout


def test_a_failed_check_fails_the_run(tmp_path, capsys):
    runner = smoke.Smoke(tmp_path, cpu=True, timeout=60)
    assert runner.check("fine", lambda: "ok")
    assert not runner.check("broken", lambda: (_ for _ in ()).throw(smoke.SmokeError("losses differ")))
    assert not runner.check("gpu only", lambda: "never runs", skip="no GPU")
    assert runner.table() == 1
    out = capsys.readouterr().out
    assert "broken" in out and "FAIL" in out and "losses differ" in out and "1 failed: broken" in out
    assert table_rows(out)["gpu only"] == ("skip", "skipped: no GPU")


def test_bad_usage_is_exit_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        smoke.main(["--cpu-selftest", "--only", "bf16,warp"])
    assert exit_info.value.code == 2 and "unknown check(s) warp" in capsys.readouterr().err
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit) as exit_info:
            smoke.main([])
        assert exit_info.value.code == 2 and "--cpu-selftest" in capsys.readouterr().err


def test_overflow_hook_turns_one_gradient_inf():
    """The fp16 check's hook: inf in the first micro-batch of the chosen step, nowhere else."""
    import dataclasses
    from types import SimpleNamespace

    from megatron.config import TransformerConfig
    from megatron.model import GPTModel
    from megatron.specs.gpt import GPT_SPEC

    cfg = TransformerConfig(num_layers=2, hidden_size=16, num_attention_heads=2, padded_vocab_size=32,
                            max_position_embeddings=8)
    wrapped = smoke.overflow_spec(dataclasses.replace(GPT_SPEC, build_model=lambda config: GPTModel(cfg)), step=2)
    model = wrapped.build_model(SimpleNamespace(training=SimpleNamespace(num_micro_batches=3)))
    ids = torch.randint(0, 32, (2, 8))
    finite = []
    for _ in range(6):  # two steps of three micro-batches
        model.zero_grad()
        model(ids, labels=ids).mean().backward()
        finite.append(bool(torch.isfinite(model.encoder.final_layernorm.weight.grad).all()))
    assert finite == [True, True, True, False, True, True]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (the real smoke test)")
def test_gpu_smoke_on_the_gpus_present(tmp_path):
    proc = run_script("--workdir", str(tmp_path / "smoke"), timeout=1800)
    print(proc.stdout[-5000:])
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-3000:]

