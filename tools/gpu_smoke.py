"""GPU smoke test: the GPU paths of the framework end to end in a few minutes, one summary table, exit 1 on a failure.

    scripts/gpu_smoke.sh                    # on the GPUs present (CUDA_VISIBLE_DEVICES chooses)
    scripts/gpu_smoke.sh --cpu-selftest     # tiny, on the CPU: checks the script itself (CI runs this)
    python tools/gpu_smoke.py --workdir /tmp/smoke --keep

Checks (each one row of the table; a row that cannot run here says ``skipped: <why>``):

* fp16 CL + random-LTD, 1 GPU: ~30 steps with dynamic loss scaling; an inf is injected into one gradient at a chosen
  step (a hook this tool installs): the log must show that step skipped, and the learning rate must not advance.
* bf16 CL + random-LTD, 1 GPU (the CPU self-test trains this one in bf16 on the CPU).
* resume exact: the bf16 run restarted from its mid-run checkpoint gives the same losses.
* bf16 curriculum on 2 GPUs (``torchrun``; needs 2+ GPUs): the curriculum sampler's collective under NCCL.
* ZeRO-3 + random-LTD checkpoint evaluated by ``tools/eval_gpt.py``: its loss matches the run's final validation.
* flash attention: a bf16 GPT forward/backward inside ``sdpa_kernel(SDPBackend.FLASH_ATTENTION)`` (plain causal
  attention takes the ``is_causal`` flash path; any mask would fail there).
* document masks: FlexAttention block masks give the dense-mask results (``--reset-attention-mask``).
* ``bench/train_throughput.py`` and ``bench/random_ltd_speedup.py`` on the device (MFU against its matmul peak).

Training runs are child processes (``--child JOB.json``; the CPU self-test runs them and the evaluation in this
process, saving a torch import each, and overlaps the two benchmark processes with them) on a tokenized slice of
the bundled corpus; their logs stay in ``--workdir`` (kept with ``--keep`` or when a check fails).
"""
from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CORPUS = REPO / "data" / "corpus" / "python_docs.jsonl.gz"
VOCAB = REPO / "data" / "tokenizers" / "gpt2-bpe" / "vocab.json"
MERGES = REPO / "data" / "tokenizers" / "gpt2-bpe" / "merges.txt"


class SmokeError(RuntimeError):
    """A check failed; the message is the table's detail."""


@dataclass(frozen=True)
class Size:
    """Model and run size of one mode."""

    layers: int
    hidden: int
    heads: int
    seq: int
    micro_batch: int
    global_batch: int
    steps: int
    docs: int
    bench: tuple[str, ...]
    """Model flags of bench/train_throughput.py."""
    ltd_bench: tuple[str, ...]
    """Model flags of bench/random_ltd_speedup.py."""


GPU = Size(layers=4, hidden=256, heads=4, seq=256, micro_batch=4, global_batch=8, steps=30, docs=400,
           bench=("--num-layers", "12", "--hidden-size", "768", "--num-attention-heads", "12", "--seq-length", "1024",
                  "--micro-batch-size", "8", "--vocab-size", "50304", "--bf16", "--rounds", "2", "--steps", "5"),
           ltd_bench=("--num-layers", "12", "--hidden-size", "768", "--num-attention-heads", "12", "--seq-length",
                      "1024", "--micro-batch-size", "8", "--bf16", "--attention-dropout", "0", "--rounds", "6"))
CPU = Size(layers=3, hidden=32, heads=4, seq=32, micro_batch=2, global_batch=4, steps=6, docs=120,
           bench=("--num-layers", "2", "--hidden-size", "64", "--num-attention-heads", "4", "--seq-length", "64",
                  "--micro-batch-size", "2", "--vocab-size", "512", "--rounds", "1", "--steps", "2",
                  "--warmup-steps", "1"),
           ltd_bench=("--num-layers", "3", "--hidden-size", "32", "--num-attention-heads", "4", "--seq-length", "32",
                      "--micro-batch-size", "2", "--vocab-size", "256", "--warmup", "1", "--rounds", "2"))

INJECT_STEP = 5
"""Step whose gradient the fp16 check turns into inf (after the warm-up, so the LR moves every step around it)."""


CHECKS = (  # (key for --only, table title, Smoke method)
    ("fp16", "fp16 CL+LTD, forced overflow skipped", "fp16_overflow"),
    ("bf16", "bf16 CL+LTD, 1 GPU", "bf16_run"),
    ("resume", "resume exact (bf16 CL+LTD)", "resume"),
    ("2gpu", "bf16 curriculum, 2 GPUs (torchrun)", "two_gpus"),
    ("zero3", "ZeRO-3 + LTD checkpoint -> eval_gpt", "zero3_eval"),
    ("flash", "flash attention on the causal path", "flash"),
    ("flex", "document masks: FlexAttention = dense", "flex"),
    ("throughput", "bench/train_throughput.py", "bench_throughput"),
    ("ltd", "bench/random_ltd_speedup.py", "bench_ltd"),
)


@dataclass
class Row:
    """One line of the summary table."""

    name: str
    status: str
    detail: str
    seconds: float


# ------------------------------------------------------------------------------------------------ the child process


def overflow_spec(spec: Any, step: int) -> Any:
    """``spec`` whose model turns one gradient into inf in the first micro-batch of optimizer step ``step``."""
    import torch

    def build(config: Any) -> torch.nn.Module:
        model = spec.build_model(config)
        target = (step - 1) * config.training.num_micro_batches  # backward passes before that micro-batch
        calls = [0]

        def hook(grad: torch.Tensor) -> torch.Tensor:
            calls[0] += 1
            return torch.full_like(grad, float("inf")) if calls[0] - 1 == target else grad

        model.encoder.final_layernorm.weight.register_hook(hook)  # used once per forward: one call per backward
        return model

    return replace(spec, build_model=build)


def train_job(job: dict[str, Any]) -> Any:
    """Train as ``job`` says (argv, result path, optional inject step); rank 0 writes the result JSON."""
    from megatron.cli import pretrain_from_argv
    from megatron.specs.gpt import GPT_SPEC

    spec = GPT_SPEC if job.get("inject_inf_at") is None else overflow_spec(GPT_SPEC, int(job["inject_inf_at"]))
    result = pretrain_from_argv(spec, job["argv"])
    if int(os.environ.get("RANK", "0")) == 0:
        Path(job["result"]).write_text(json.dumps({
            "iterations": result.iterations, "losses": [d.get("lm loss") for d in result.losses],
            "lrs": result.lrs, "skipped": result.state.skipped_iterations,
            "evaluations": [[it, m] for it, m in result.evaluations], "exit_reason": result.exit_reason}))
    return result


def child(job_path: str) -> None:
    """The child process of a training check: ``train_job`` under the entry points' error handling."""
    from megatron.cli import run_cli

    job = json.loads(Path(job_path).read_text())
    run_cli(lambda: train_job(job))


# ------------------------------------------------------------------------------------------------ the driver


class Smoke:
    """Runs the checks of one mode (GPU or CPU self-test) in ``workdir``."""

    def __init__(self, workdir: Path, cpu: bool, timeout: int) -> None:
        import torch

        self.workdir, self.cpu, self.timeout = workdir, cpu, timeout
        self.in_process = cpu  # the CPU self-test trains and evaluates here: one torch import instead of five
        if cpu:
            torch.set_num_threads(1)  # tiny models: one thread is fastest and steady on a shared machine
        self.size = CPU if cpu else GPU
        self.gpus = 0 if cpu else torch.cuda.device_count()
        self.device = "cpu" if cpu else "cuda"
        self.rows: list[Row] = []
        self.data = ""
        self.results: dict[str, dict[str, Any]] = {}
        self.benches: dict[str, tuple[subprocess.Popen, Path, float]] = {}
        self.peak_flops = 0.0
        """The device's matmul peak (FLOP/s) as bench/train_throughput.py measured it."""

    # -- helpers

    def env(self) -> dict[str, str]:
        """Child environment: the repo importable, no launcher variables of ours, CPU accelerator in self-test."""
        env = dict(os.environ)
        env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
        for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
            env.pop(key, None)
        if self.cpu:
            env["DS_ACCELERATOR"] = "cpu"
            env["CUDA_VISIBLE_DEVICES"] = ""
            env.setdefault("OMP_NUM_THREADS", "1")
        return env

    def start(self, name: str, cmd: list[str]) -> tuple[subprocess.Popen, Path, float]:
        """Start ``cmd`` with its output in ``name``.log."""
        log = self.workdir / f"{name}.log"
        with open(log, "w") as out:
            proc = subprocess.Popen(cmd, cwd=REPO, env=self.env(), stdout=out, stderr=subprocess.STDOUT)
        return proc, log, time.monotonic()

    def finish(self, started: tuple[subprocess.Popen, Path, float]) -> str:
        """Wait for a started command; its output, or SmokeError with the log's last lines on failure."""
        proc, log, start = started
        try:
            proc.wait(timeout=max(1.0, self.timeout - (time.monotonic() - start)))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise SmokeError(f"timed out after {self.timeout} s (see {log})") from None
        text = log.read_text(errors="replace")
        if proc.returncode != 0:
            tail = [line for line in text.splitlines() if line.strip()][-3:]
            raise SmokeError(f"exit {proc.returncode}: {' / '.join(tail)[-300:]} (see {log})")
        return text

    def run(self, name: str, cmd: list[str]) -> str:
        """Run ``cmd`` to the end (``name``.log); its output, or SmokeError."""
        return self.finish(self.start(name, cmd))

    def in_this_process(self, name: str, fn: Callable[[], Any]) -> str:
        """Run ``fn`` here with stdout/stderr in ``name``.log (what a child would print); SmokeError on an error."""
        log = self.workdir / f"{name}.log"
        with open(log, "w") as out, contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            try:
                status = fn()
            except (ValueError, SystemExit) as e:  # UsageError/ConfigError: the one-line error a child would print
                raise SmokeError(f"error: {e} (see {log})") from None
        if isinstance(status, int) and status != 0:
            raise SmokeError(f"exit {status}: {log.read_text(errors='replace').strip()[-300:]} (see {log})")
        return log.read_text(errors="replace")

    def train(self, name: str, flags: dict[str, Any], *, nproc: int = 1, inject: int | None = None
              ) -> tuple[dict[str, Any], str]:
        """One training child (``nproc`` > 1: torchrun); returns (result JSON, log text)."""
        job = {"argv": self.argv(flags), "result": str(self.workdir / f"{name}.json"), "inject_inf_at": inject}
        path = self.workdir / f"{name}.job.json"
        path.write_text(json.dumps(job))
        if self.in_process and nproc == 1:
            log = self.in_this_process(name, lambda: train_job(job))
        else:
            launcher = [sys.executable] if nproc == 1 else [sys.executable, "-m", "torch.distributed.run",
                                                            "--standalone", "--nproc_per_node", str(nproc)]
            log = self.run(name, launcher + [str(Path(__file__).resolve()), "--child", str(path)])
        result = json.loads(Path(job["result"]).read_text())
        losses = result["losses"]
        if len(losses) != flags.get("train_iters", self.size.steps) - flags.get("_resumed_from", 0):
            raise SmokeError(f"{len(losses)} iterations ran ({result['exit_reason']})")
        if not all(v is not None and math.isfinite(v) for v in losses):
            raise SmokeError(f"non-finite loss: {losses}")
        self.results[name] = result
        return result, log

    def argv(self, flags: dict[str, Any]) -> list[str]:
        """pretrain_gpt flags: the mode's model size on the smoke corpus, plus ``flags`` (None/False drop a flag)."""
        z = self.size
        base: dict[str, Any] = {
            "num_layers": z.layers, "hidden_size": z.hidden, "num_attention_heads": z.heads, "seq_length": z.seq,
            "max_position_embeddings": z.seq, "micro_batch_size": z.micro_batch, "global_batch_size": z.global_batch,
            "train_iters": z.steps, "lr": 1e-3, "min_lr": 1e-4, "lr_decay_style": "cosine", "lr_warmup_iters": 2,
            "weight_decay": 0.01, "clip_grad": 1.0, "seed": 1234, "log_interval": 1, "eval_interval": 1000,
            "eval_iters": 2, "split": "949,50,1", "num_workers": 0, "attention_dropout": 0.0, "hidden_dropout": 0.1,
            "data_path": self.data, "vocab_file": str(VOCAB), "merge_file": str(MERGES), "no_pipeline_parallel": True}
        base.update({k: v for k, v in flags.items() if not k.startswith("_")})
        out: list[str] = []
        for key, value in base.items():
            if value is None or value is False:
                continue
            out.append("--deepspeed_config" if key == "deepspeed_config" else "--" + key.replace("_", "-"))
            if value is not True:
                out.append(str(value))
        return out

    def ds_json(self, name: str, *, cl: bool, ltd: bool) -> str:
        """A DeepSpeed JSON with a seqlen curriculum and/or random-LTD on the middle layers."""
        z = self.size
        de: dict[str, Any] = {"enabled": True, "seed": 1234}
        if cl:
            metric = {"index_to_sample_path": "dummy", "index_to_metric_path": "dummy", "difficulty_type": "value",
                      "clustering_type": "single_cluster", "min_difficulty": max(8, z.seq // 4),
                      "max_difficulty": z.seq, "schedule_type": "fixed_linear",
                      "schedule_config": {"total_curriculum_step": max(2, z.steps * 2 // 3), "difficulty_step": 8}}
            de["data_sampling"] = {"enabled": True, "num_workers": 0, "curriculum_learning": {
                "enabled": True, "data_cluster_path": str(self.workdir / f"{name}-clusters"),
                "curriculum_metrics": {"seqlen_truncate": metric}}}
        if ltd:
            ids = list(range(1, z.layers - 1))
            de["data_routing"] = {"enabled": True, "random_ltd": {
                "enabled": True, "total_layer_num": z.layers, "random_ltd_layer_num": len(ids),
                "random_ltd_layer_id": ids, "model_mask_name": "attention_mask", "model_type": "decoder",
                "hidden_state_order": "batch_seq_dim", "random_ltd_schedule": {
                    "min_value": max(8, z.seq // 4), "max_value": z.seq, "schedule_type": "fixed_linear",
                    "schedule_config": {"require_steps": z.steps, "seq_per_step": 8}}}}
        path = self.workdir / f"{name}.ds.json"
        path.write_text(json.dumps({"train_batch_size": z.global_batch,
                                    "train_micro_batch_size_per_gpu": z.micro_batch, "data_efficiency": de}))
        return str(path)

    def check(self, name: str, fn: Callable[[], str], skip: str | None = None) -> bool:
        """Run one check into the table; True if it passed."""
        start = time.perf_counter()
        if skip is not None:
            self.rows.append(Row(name, "skip", f"skipped: {skip}", 0.0))
            return False
        try:
            detail, status = fn(), "pass"
        except Exception as e:  # noqa: BLE001 - every failure becomes one table row
            detail, status = (str(e) if isinstance(e, SmokeError) else f"{type(e).__name__}: {e}"), "FAIL"
        self.rows.append(Row(name, status, detail, time.perf_counter() - start))
        print(f"[gpu_smoke] {status:4s} {name}: {detail}", flush=True)
        return status == "pass"

    # -- the checks

    def prepare_data(self) -> str:
        """Tokenize the first documents of the bundled corpus (GPT-2 BPE, EOD appended)."""
        jsonl = self.workdir / "docs.jsonl"
        with gzip.open(CORPUS, "rt", encoding="utf-8") as src, open(jsonl, "w", encoding="utf-8") as dst:
            for i, line in enumerate(src):
                if i >= self.size.docs:
                    break
                dst.write(line)
        prefix = self.workdir / "docs"
        self.run("preprocess", [sys.executable, str(REPO / "tools" / "preprocess_data.py"), "--input", str(jsonl),
                                "--output-prefix", str(prefix), "--tokenizer-type", "GPT2BPETokenizer",
                                "--vocab-file", str(VOCAB), "--merge-file", str(MERGES), "--append-eod",
                                "--no-progress"])
        self.data = f"{prefix}_text_document"
        return f"{self.size.docs} documents -> {Path(self.data).name}"

    def fp16_overflow(self) -> str:
        """fp16 CL + LTD with an inf gradient at INJECT_STEP: that step is skipped and the LR holds."""
        k = INJECT_STEP
        result, log = self.train("fp16", {"fp16": True, "initial_loss_scale": 4096, "zero_stage": 0,
                                          "deepspeed_config": self.ds_json("fp16", cl=True, ltd=True),
                                          "data_efficiency_curriculum_learning": True, "random_ltd": True},
                                 inject=k)
        lines = {int(m.group(1)): m.group(0) for m in re.finditer(r"iteration\s+(\d+)/\s*\d+ \|.*", log)}
        if "grad norm: skipped" not in lines.get(k, ""):
            raise SmokeError(f"iteration {k} (inf gradient) is not logged as skipped: {lines.get(k, 'no log line')}")
        lrs = result["lrs"]  # lrs[i]: learning rate applied at iteration i + 1
        if not lrs[k - 1] != lrs[k - 2]:
            raise SmokeError(f"the LR schedule does not move before the overflow ({lrs[:k + 1]}): the check is void")
        if lrs[k] != lrs[k - 1]:
            raise SmokeError(f"the LR advanced over the skipped step {k}: {lrs[k - 1]:.6g} -> {lrs[k]:.6g}")
        scale = [re.search(r"loss scale: ([0-9.e+]+)", lines.get(i, "")) for i in (k, k + 1)]
        scales = " -> ".join(m.group(1) if m else "?" for m in scale)
        return (f"step {k} skipped (loss scale {scales}), LR held at {lrs[k]:.3e}; {len(result['losses'])} steps, "
                f"{result['skipped']} skipped, loss {result['losses'][0]:.3f} -> {result['losses'][-1]:.3f}")

    def bf16_run(self) -> str:
        """bf16 CL + LTD at ZeRO-1, saving half-way and at the end (the resume check's reference)."""
        z = self.size
        result, _ = self.train("bf16", {"bf16": True, "zero_stage": 1, "save": self.workdir / "bf16-ckpt",
                                        "save_interval": z.steps // 2,
                                        "deepspeed_config": self.ds_json("bf16", cl=True, ltd=True),
                                        "data_efficiency_curriculum_learning": True, "random_ltd": True})
        losses = result["losses"]
        return f"{len(losses)} steps, {result['skipped']} skipped, loss {losses[0]:.3f} -> {losses[-1]:.3f}"

    def resume(self) -> str:
        """Restart the bf16 run from its half-way checkpoint: the same losses for the remaining steps."""
        z, half = self.size, self.size.steps // 2
        reference = self.results["bf16"]
        result, _ = self.train("resume", {"bf16": True, "zero_stage": 1, "load": self.workdir / "bf16-ckpt",
                                          "load_tag": f"global_step{half}", "save": self.workdir / "resume-ckpt",
                                          "deepspeed_config": self.ds_json("resume", cl=True, ltd=True),
                                          "data_efficiency_curriculum_learning": True, "random_ltd": True,
                                          "_resumed_from": half})
        if result["iterations"] != list(range(half + 1, z.steps + 1)):
            raise SmokeError(f"resumed iterations {result['iterations']}, expected {half + 1}..{z.steps}")
        ref = reference["losses"][half:]
        diffs = [abs(a - b) / max(abs(b), 1e-12) for a, b in zip(result["losses"], ref)]
        tolerance = 0.0 if self.cpu else 2e-3  # GPU backward kernels (flash, atomics) are not bitwise repeatable
        if diffs[0] > 1e-6 or max(diffs) > tolerance:
            raise SmokeError(f"losses differ after resume (max rel diff {max(diffs):.2e}; first step {diffs[0]:.2e}): "
                             f"{result['losses']} vs {ref}")
        return f"iterations {half + 1}..{z.steps} match (max rel diff {max(diffs):.1e}, first step {diffs[0]:.1e})"

    def two_gpus(self) -> str:
        """bf16 curriculum (no LTD) on 2 data-parallel GPUs through torchrun."""
        result, _ = self.train("2gpu", {"bf16": True, "zero_stage": 1,
                                        "deepspeed_config": self.ds_json("2gpu", cl=True, ltd=False),
                                        "data_efficiency_curriculum_learning": True}, nproc=2)
        losses = result["losses"]
        return f"{len(losses)} steps on 2 ranks, loss {losses[0]:.3f} -> {losses[-1]:.3f}"

    def zero3_eval(self) -> str:
        """ZeRO-3 + LTD run saved, then tools/eval_gpt.py on the checkpoint: the run's final validation loss."""
        save = self.workdir / "zero3-ckpt"
        result, _ = self.train("zero3", {"bf16": True, "zero_stage": 3, "save": save,
                                         "deepspeed_config": self.ds_json("zero3", cl=False, ltd=True),
                                         "random_ltd": True, "train_iters": max(3, self.size.steps // 3)})
        trained = result["evaluations"][-1][1]["lm loss"]
        out = self.workdir / "zero3-eval.json"
        eval_argv = ["--load", str(save), "--results-path", str(out), "--device", self.device]
        if self.in_process:  # what tools/eval_gpt.py runs, without a second torch import
            from megatron import evaluation

            self.in_this_process("zero3-eval", lambda: evaluation.main(eval_argv, prog="eval_gpt", family="gpt"))
        else:
            self.run("zero3-eval", [sys.executable, str(REPO / "tools" / "eval_gpt.py"), *eval_argv])
        evaluated = json.loads(out.read_text())["valid"]["lm loss"]
        if not math.isclose(evaluated, trained, rel_tol=1e-2):
            raise SmokeError(f"eval_gpt loss {evaluated:.5f} != the run's final validation loss {trained:.5f}")
        return f"eval_gpt valid loss {evaluated:.4f} = training's {trained:.4f} (bf16, {self.device})"

    def flash(self) -> str:
        """A bf16 GPT forward + backward with only the flash SDPA backend allowed."""
        import torch
        from torch.nn.attention import SDPBackend, sdpa_kernel

        from megatron.config import TransformerConfig
        from megatron.model import GPTModel

        cfg = TransformerConfig(num_layers=2, hidden_size=256, num_attention_heads=4, padded_vocab_size=1024,
                                max_position_embeddings=512, position_embedding_type="rope", attention_dropout=0.1)
        model = GPTModel(cfg).to("cuda", torch.bfloat16).train()
        ids = torch.randint(0, 1024, (4, 512), device="cuda")
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):  # raises "No available kernel" if flash cannot run
            loss = model(ids, labels=ids.roll(-1, 1)).mean()
            loss.backward()
        torch.cuda.synchronize()
        return f"causal attention ran on the flash kernel (fwd + bwd, bf16, dropout 0.1), loss {loss.item():.3f}"

    def flex(self) -> str:
        """Document masks on CUDA: FlexAttention block masks vs the dense bool mask, forward and gradients."""
        import torch

        from megatron.config import TransformerConfig
        from megatron.model import GPTModel, document_ids_from_eod, get_ltor_masks_and_position_ids

        cfg = TransformerConfig(num_layers=2, hidden_size=128, num_attention_heads=4, padded_vocab_size=512,
                                max_position_embeddings=256, position_embedding_type="rope", attention_dropout=0.0,
                                hidden_dropout=0.0)
        torch.manual_seed(0)
        model = GPTModel(cfg).cuda().train()
        ids = torch.randint(1, 512, (2, 256), device="cuda")
        ids[0, 40] = ids[0, 200] = ids[1, 100] = 0
        mask, _, pos = get_ltor_masks_and_position_ids(ids, 0, True, True, False)
        labels = ids.roll(-1, 1)
        flex = model(ids, pos, labels=labels, document_ids=document_ids_from_eod(ids, 0))
        flex.mean().backward()
        grads = [p.grad.clone() for p in model.parameters()]
        model.zero_grad()
        dense = model(ids, pos, mask, labels=labels)
        dense.mean().backward()
        loss_diff = float((flex - dense).abs().max())
        grad_diff = max(float((a - p.grad).abs().max()) for a, p in zip(grads, model.parameters()))
        if loss_diff > 1e-3 or grad_diff > 1e-3:
            raise SmokeError(f"FlexAttention differs from the dense mask: loss {loss_diff:.2e}, grads {grad_diff:.2e}")
        return f"FlexAttention = dense mask (fp32, max diff: loss {loss_diff:.1e}, grads {grad_diff:.1e})"

    def bench_command(self, key: str) -> list[str]:
        """The command line of a benchmark check ("throughput" or "ltd") on this mode's device."""
        script, args = {"throughput": ("train_throughput.py", self.size.bench),
                        "ltd": ("random_ltd_speedup.py", self.size.ltd_bench)}[key]
        return [sys.executable, str(REPO / "bench" / script), "--device", self.device, *args]

    def bench(self, key: str) -> str:
        """A benchmark's output: started early by the CPU self-test (overlapping its trainings), else run now."""
        started = self.benches.pop(key, None)
        return self.finish(started) if started else self.run(f"bench-{key}", self.bench_command(key))

    def bench_throughput(self) -> str:
        """bench/train_throughput.py on the device: tokens/s and MFU of our engine."""
        text = self.bench("throughput")
        ours = re.search(r"ours \(DeepSpeed engine\):.*?\|\s*([0-9.]+) tokens/s \| MFU\s+([0-9.]+)%", text)
        peak = re.search(r"peak ([0-9.]+) GFLOP/s", text)
        if not ours or not peak:
            raise SmokeError("no MFU line in the output")
        self.peak_flops = float(peak.group(1)) * 1e9
        return (f"ours {float(ours.group(1)):.0f} tokens/s, MFU {ours.group(2)}% of a {float(peak.group(1)):.0f} "
                "GFLOP/s matmul peak")

    def bench_ltd(self) -> str:
        """bench/random_ltd_speedup.py on the device: the realized saving at r = S/2, and the dense variant's MFU
        against the matmul peak bench/train_throughput.py measured (same dtype: both run bf16 on GPUs, fp32 here)."""
        from megatron.config import TransformerConfig
        from megatron.model import gpt_flops_per_token

        text = self.bench("ltd")
        saving = re.search(r"realized saving r=S/2: ([-0-9.]+%).*?theoretical[^:]*: ([-0-9.]+%)", text)
        dense = re.search(r"^\s*dense:\s+[0-9.]+ ms/step\s+([0-9.]+) tokens/s", text, re.MULTILINE)
        if not saving or not dense:
            raise SmokeError("no 'realized saving' / dense tokens/s line in the output")
        detail = (f"realized saving {saving.group(1)} (theoretical {saving.group(2)}), "
                  f"dense {float(dense.group(1)):.0f} tokens/s")
        if self.peak_flops:
            tokens = self.size.ltd_bench
            flags = {t: tokens[i + 1] for i, t in enumerate(tokens[:-1]) if t.startswith("--")
                     and not tokens[i + 1].startswith("--")}  # "--flag value" pairs (switches have no value)
            seq = int(flags["--seq-length"])
            cfg = TransformerConfig(num_layers=int(flags["--num-layers"]), hidden_size=int(flags["--hidden-size"]),
                                    num_attention_heads=int(flags["--num-attention-heads"]),
                                    padded_vocab_size=int(flags.get("--vocab-size", 8192)),
                                    max_position_embeddings=seq)
            mfu = float(dense.group(1)) * gpt_flops_per_token(cfg, seq) / self.peak_flops
            detail += f", MFU {100 * mfu:.1f}%"
        return detail

    def run_all(self, only: set[str] | None = None) -> int:
        """The checks in order (``only``: those keys of CHECKS); prints the table; 0 if none failed, else 1."""
        no_gpu = "no GPU" if self.cpu else None
        needs = {"fp16": no_gpu, "2gpu": no_gpu or (None if self.gpus >= 2 else f"needs 2 GPUs, {self.gpus} visible"),
                 "flash": no_gpu, "flex": no_gpu}
        if not self.check("tokenized corpus", self.prepare_data):
            return self.table()
        if self.cpu:  # the self-test's figures mean nothing: overlap the benchmark processes with the trainings
            self.benches = {key: self.start(f"bench-{key}", self.bench_command(key)) for key in ("throughput", "ltd")
                            if only is None or key in only}
        for key, title, method in CHECKS:
            skip = needs.get(key)
            if skip is None and only is not None and key not in only:
                skip = "not selected (--only)"
            if key == "resume" and skip is None and not self.results.get("bf16"):
                skip = "needs the bf16 run"
            if key == "bf16" and self.cpu:
                title = "bf16 CL+LTD, 1 CPU process"
            self.check(title, getattr(self, method), skip)
        return self.table()

    def table(self) -> int:
        """Print the summary table; the exit status."""
        import torch

        where = "CPU self-test" if self.cpu else \
            f"{self.gpus} x {torch.cuda.get_device_name(0)}, CUDA {torch.version.cuda}"
        width = max(len(r.name) for r in self.rows)
        print(f"\nGPU smoke test ({where}, torch {torch.__version__}; logs in {self.workdir})")
        print(f"{'check':<{width}} | result | {'time':>6} | detail")
        print(f"{'-' * width}-+--------+--------+-------")
        for r in self.rows:
            print(f"{r.name:<{width}} | {r.status:<6} | {r.seconds:5.1f}s | {r.detail}")
        failed = [r.name for r in self.rows if r.status == "FAIL"]
        print(f"{len(failed)} failed: {', '.join(failed)}" if failed else "all checks passed (or skipped)")
        return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    """CLI entry: 0 when every check passed or was skipped, 1 on a failed check, 2 on bad usage."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cpu-selftest", action="store_true",
                    help="tiny runs on the CPU (bf16/fp32); GPU-only rows are skipped")
    ap.add_argument("--workdir", default=None, help="where data, checkpoints and logs go (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep --workdir's contents even when every check passed")
    ap.add_argument("--timeout", type=int, default=600, help="seconds allowed to each child process")
    ap.add_argument("--only", default=None,
                    help=f"comma-separated checks to run (others are skipped): {','.join(k for k, _, _ in CHECKS)}; "
                         "resume needs bf16")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args.child)
        return 0
    import torch

    if not args.cpu_selftest and not torch.cuda.is_available():
        ap.error("no CUDA GPU is visible; run with --cpu-selftest to check the script itself on the CPU")
    if args.timeout < 1:
        ap.error(f"--timeout must be >= 1, got {args.timeout}")
    only = None
    if args.only is not None:
        only = {k.strip() for k in args.only.split(",") if k.strip()}
        unknown = sorted(only - {k for k, _, _ in CHECKS})
        if unknown or not only:
            ap.error(f"--only {args.only}: unknown check(s) {', '.join(unknown) or '(none given)'}; "
                     f"expected some of {','.join(k for k, _, _ in CHECKS)}")
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="gpu_smoke_")).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    status = Smoke(workdir, args.cpu_selftest, args.timeout).run_all(only)
    if status == 0 and not args.keep and args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
