"""Run the study: one subprocess per stage, a ``done.json`` per case, resumable.

Layout of ``{study}``: ``study.json`` (configuration + plans), ``data/`` (see ``prepare``), and per case
``runs/{case}/`` with ``ds_config.json``, ``checkpoint/``, ``tensorboard/``, ``train.log``, ``eval.json``,
``zeroshot.json`` and ``done.json`` ({stage: results}, written atomically after each stage).  A rerun skips
the finished stages; a training run that was killed resumes from its latest checkpoint (``--load``), and when
that fails it restarts from scratch once.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from typing import Any

from megatron.study.curves import read_curves
from megatron.study.plan import (Case, RunPlan, StudyConfig, StudyError, check_single_epoch, ds_config, plan_case,
                                 pretrain_flags, sweep_case)
from megatron.study.prepare import ZEROSHOT_TASKS, Prepared, atomic_json, load_json, prepare

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir, os.pardir))


class Interrupted(Exception):
    """SIGTERM / SIGINT while a stage ran (its subprocess has been stopped)."""


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("DS_ACCELERATOR", "cpu")
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    env.update(HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    return env


def log(msg: str) -> None:
    """One progress line on stdout."""
    print(f"[study {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def run_logged(step: str, argv: list[str], log_path: str, env: dict[str, str] | None = None) -> float:
    """Run ``argv`` in the repository root, output appended to ``log_path``; seconds taken; StudyError on failure."""
    start = time.time()
    with open(log_path, "a") as fh:
        fh.write(f"\n==== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(argv)}\n")
        fh.flush()
        # same process group as the study (Ctrl-C / a group kill reach both); dies with the study otherwise
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, env=env or _env(),
                                preexec_fn=_die_with_parent)
        try:
            rc = proc.wait()
        except BaseException:
            _stop(proc)
            raise
    if rc != 0:
        with open(log_path, errors="replace") as fh:
            tail = "".join(fh.readlines()[-15:])
        errors = [ln for ln in tail.splitlines() if ln.startswith("error:")]
        raise StudyError(f"{step} failed (exit status {rc}); {errors[-1] if errors else 'see ' + log_path}\n"
                         f"--- last lines of {log_path} ---\n{tail}")
    return time.time() - start


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM when the study process dies (Linux), so no run is left orphaned."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _stop(proc: subprocess.Popen) -> None:
    """Stop a stage's process: SIGTERM (pretraining saves a checkpoint and exits), then SIGKILL after 60 s.

    After Ctrl-C the child got SIGINT from the terminal as well and is saving: it gets 30 s to finish on its own
    (a second signal could cut its checkpoint short).
    """
    try:
        if _LAST_SIGNAL.get("name") == "SIGINT":
            try:
                proc.wait(timeout=30)
                return
            except subprocess.TimeoutExpired:
                pass
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    except ProcessLookupError:
        pass


_LAST_SIGNAL: dict[str, str] = {}


def _raise_interrupted(signum: int, frame: Any) -> None:
    _LAST_SIGNAL["name"] = signal.Signals(signum).name
    raise Interrupted(_LAST_SIGNAL["name"])


class Study:
    """The study in one directory: configuration, data, cases."""

    def __init__(self, study_dir: str, config: StudyConfig, *, python: str = sys.executable,
                 started: float | None = None) -> None:
        config.check()
        self.dir = os.path.abspath(study_dir)
        self.config = config
        self.python = python
        self.prepared: Prepared | None = None
        self.started = time.time() if started is None else started
        """When this command started (its wall-clock, data preparation included, goes to ``timing.json``)."""

    def record_time(self) -> None:
        """Add this command's elapsed wall-clock so far to ``timing.json`` (one entry per command run)."""
        path = os.path.join(self.dir, "timing.json")
        timing = load_json(path) or {"commands": {}}
        timing["commands"][f"{self.started:.3f}"] = time.time() - self.started
        atomic_json(path, timing)

    def study_seconds(self) -> float | None:
        """Wall-clock of every command run on this directory (data preparation included), summed."""
        timing = load_json(os.path.join(self.dir, "timing.json"))
        return sum(timing["commands"].values()) if timing else None

    def sweep_cases_on_disk(self) -> list[Case]:
        """LR-sweep cases with a run directory (so a report lists the sweep without --lr-sweep on the command)."""
        runs = os.path.join(self.dir, "runs")
        out = []
        for name in sorted(os.listdir(runs)) if os.path.isdir(runs) else []:
            done = load_json(os.path.join(runs, name, "done.json")) if name.startswith("lrsweep_") else None
            lr = ((done or {}).get("plan") or {}).get("case", {}).get("lr")
            if lr is not None:
                out.append(sweep_case(self.config, lr))
        return out

    def run_dir(self, case: Case) -> str:
        """Directory of a case's run."""
        return os.path.join(self.dir, "runs", case.name)

    def check_identity(self) -> None:
        """StudyError if the directory holds a study with another configuration; else record this one."""
        os.makedirs(self.dir, exist_ok=True)
        path = os.path.join(self.dir, "study.json")
        old = load_json(path)
        new = asdict(self.config)
        new["extra_seeds"] = list(new["extra_seeds"])
        default = asdict(StudyConfig())
        default["extra_seeds"] = list(default["extra_seeds"])
        recorded = (old or {}).get("config", {})
        # a field added after the directory was made counts as its default value
        diff = sorted(k for k in new if recorded.get(k, default.get(k)) != new[k]) if old is not None else []
        if diff:
            raise StudyError(f"{path}: this study directory was made with another configuration (differs in: "
                             f"{', '.join(diff)}); use another --study-dir (STUDY_DIR) or delete it")
        atomic_json(path, {"config": new})

    def prepare(self, *, sources: list[tuple[str, str]], deb_cache: str, max_mb: float | None) -> Prepared:
        """Corpus, tokenizer, token files, analysis, tasks (finished steps skipped)."""
        def run(step: str, argv: list[str], log_path: str) -> None:
            log(f"data: {step} ...")
            seconds = run_logged(step, argv, log_path)
            log(f"data: {step} done in {seconds:.0f} s")

        self.prepared = prepare(self.dir, self.config, sources=sources, deb_cache=deb_cache, max_mb=max_mb,
                                run=run, python=self.python)
        return self.prepared

    def plans(self, cases: list[Case]) -> list[RunPlan]:
        """Plans of the cases; checks the single-epoch regime against the prepared training split."""
        plans = [plan_case(self.config, c) for c in cases]
        if self.prepared is not None:
            check_single_epoch(self.config, plans, self.prepared.facts["train_samples"])
        return plans

    # -- one case --------------------------------------------------------------------------------------------
    def run_case(self, plan: RunPlan, index: int, total: int) -> dict[str, Any]:
        """Train, evaluate and zero-shot-evaluate one case (finished stages skipped); returns its done.json."""
        case = plan.case
        run_dir = self.run_dir(case)
        os.makedirs(run_dir, exist_ok=True)
        done_path = os.path.join(run_dir, "done.json")
        done = load_json(done_path) or {}
        tag = f"{index}/{total} {case.name}"
        if "train" in done:
            log(f"{tag}: training already done ({done['train']['steps']} steps), skipped")
        else:
            done["train"] = self._train(plan, run_dir, tag)
            done["plan"] = plan.as_dict()
            atomic_json(done_path, done)
        if "eval" not in done:
            done["eval"] = self._eval(run_dir, tag)
            atomic_json(done_path, done)
        if self.prepared and self.prepared.tasks_dir and "zeroshot" not in done and not case.is_sweep:
            done["zeroshot"] = self._zeroshot(run_dir, tag)
            atomic_json(done_path, done)
        return done

    def _train(self, plan: RunPlan, run_dir: str, tag: str) -> dict[str, Any]:
        assert self.prepared is not None
        p, case = self.prepared, plan.case
        ds_path = os.path.join(run_dir, "ds_config.json")
        atomic_json(ds_path, ds_config(self.config, plan, p.analysis_dir, os.path.join(run_dir, "data_cluster")))
        pinned = p.pinned_maps if (case.seed or self.config.seed) == self.config.seed else None
        argv = [self.python, "pretrain_gpt.py", *pretrain_flags(
            self.config, plan, data_prefix=p.data_prefix, split=p.split, tokenizer_flags=p.tokenizer_flags,
            ds_config_path=ds_path, run_dir=run_dir, pinned_maps=pinned)]
        log_path = os.path.join(run_dir, "train.log")
        ckpt = os.path.join(run_dir, "checkpoint")
        resuming = os.path.exists(os.path.join(ckpt, "latest"))
        if not resuming:  # a fresh start (maybe after a kill before the first checkpoint): no stale curves/clusters
            for sub in ("checkpoint", "tensorboard", "data_cluster"):
                shutil.rmtree(os.path.join(run_dir, sub), ignore_errors=True)
        attempts_path = os.path.join(run_dir, "train_attempts.json")
        attempts = _close_attempts(load_json(attempts_path) or [], log_path)
        attempts.append([time.time(), None])
        atomic_json(attempts_path, attempts)
        log(f"{tag}: training {plan.train_tokens:,} tokens (~{plan.est_steps} steps, lr {plan.lr:.3g}"
            f"{', resuming from ' + open(os.path.join(ckpt, 'latest')).read().strip() if resuming else ''}) ...")
        try:
            run_logged(f"training {case.name}", argv, log_path)
        except StudyError as e:
            if not resuming:
                raise
            log(f"{tag}: resuming failed ({str(e).splitlines()[0]}); restarting the run from scratch")
            for sub in ("checkpoint", "tensorboard", "data_cluster"):
                shutil.rmtree(os.path.join(run_dir, sub), ignore_errors=True)
            run_logged(f"training {case.name}", argv, log_path)
        attempts[-1][1] = time.time()
        atomic_json(attempts_path, attempts)
        curves = read_curves(os.path.join(run_dir, "tensorboard"))
        last = curves.last_iteration
        tokens = curves.tokens.get(last, 0)
        if tokens < plan.train_tokens:
            raise StudyError(f"training {case.name} stopped at {tokens:,} of {plan.train_tokens:,} tokens "
                             f"(iteration {last}); see {log_path}")
        _prune_checkpoints(ckpt)
        result = {"steps": last, "tokens": tokens, "layer_tokens": curves.layer_tokens(last, self.config.num_layers),
                  "train_seconds": curves.cumulative_seconds(last),
                  "process_seconds": sum(end - begin for begin, end in attempts), "processes": len(attempts),
                  "final_train_valid_loss": curves.valid_loss.get(max(curves.valid_loss, default=0))}
        log(f"{tag}: trained {tokens:,} tokens in {last} steps, {result['train_seconds']:.0f} s of steps "
            f"({result['process_seconds']:.0f} s in all; {tokens / max(result['train_seconds'], 1e-9):,.0f} tok/s)")
        return result

    def _eval(self, run_dir: str, tag: str) -> dict[str, Any]:
        path = os.path.join(run_dir, "eval.json")
        seconds = run_logged("eval_gpt", [self.python, "tools/eval_gpt.py", "--load",
                                          os.path.join(run_dir, "checkpoint"), "--eval-split", "valid",
                                          "--full-split", "--results-path", path], os.path.join(run_dir, "eval.log"))
        valid = load_json(path)["valid"]
        log(f"{tag}: held-out loss {valid['lm loss']:.4f}, perplexity {valid['ppl']:.2f} ({seconds:.0f} s)")
        return {"loss": valid["lm loss"], "ppl": valid["ppl"], "seconds": seconds}

    def _zeroshot(self, run_dir: str, tag: str) -> dict[str, Any]:
        assert self.prepared is not None and self.prepared.tasks_dir is not None
        path = os.path.join(run_dir, "zeroshot.json")
        seconds = run_logged("zero-shot", [
            self.python, "tasks/eval_harness/evaluate.py", "--load", os.path.join(run_dir, "checkpoint"),
            "--task_list", ",".join(ZEROSHOT_TASKS), "--num_fewshot", "0", "--include_path", self.prepared.tasks_dir,
            "--adaptive_seq_len", "--micro-batch-size", "16", "--bootstrap_iters", "0", "--results_path", path],
            os.path.join(run_dir, "zeroshot.log"))
        out = load_json(path)
        r, n = out["results"], out.get("n-samples", {})
        scores = {"word_perplexity": r["corpus_perplexity"]["word_perplexity,none"],
                  "lastword_acc": r["corpus_lastword"]["acc,none"],
                  "choice_acc_norm": r["corpus_choice"]["acc_norm,none"], "seconds": seconds,
                  "n_lastword": n.get("corpus_lastword", {}).get("effective"),
                  "n_choice": n.get("corpus_choice", {}).get("effective")}
        log(f"{tag}: zero-shot word ppl {scores['word_perplexity']:.1f}, last-word acc {scores['lastword_acc']:.3f}, "
            f"choice acc_norm {scores['choice_acc_norm']:.3f} ({seconds:.0f} s)")
        return scores

    # -- all -------------------------------------------------------------------------------------------------
    def run(self, cases: list[Case]) -> dict[str, dict[str, Any]]:
        """Run the cases in order (SIGTERM/SIGINT stop the current stage cleanly); returns {case: done.json}."""
        plans = self.plans(cases)
        old = {s: signal.signal(s, _raise_interrupted) for s in (signal.SIGTERM, signal.SIGINT)}
        results = {}
        start = time.time()
        try:
            for i, plan in enumerate(plans, 1):
                results[plan.case.name] = self.run_case(plan, i, len(plans))
                self.record_time()
                log(f"{i}/{len(plans)} cases finished ({time.time() - start:.0f} s so far)")
        finally:
            for s, handler in old.items():
                signal.signal(s, handler)
        return results

    def finished(self, cases: list[Case]) -> dict[str, dict[str, Any]]:
        """done.json of every case whose training and evaluation are finished."""
        out = {}
        for c in cases:
            d = load_json(os.path.join(self.run_dir(c), "done.json"))
            if d and "train" in d and "eval" in d:
                out[c.name] = d
        return out


def _close_attempts(attempts: list[list[float | None]], log_path: str) -> list[list[float]]:
    """Training processes of earlier commands: one killed before it could record its end ends at the last write
    to its log (so process_seconds of a resumed run sums every process it took)."""
    out = []
    for begin, end in attempts:
        if end is None:
            end = max(begin, os.path.getmtime(log_path)) if os.path.exists(log_path) else begin
        out.append([begin, end])
    return out


def _prune_checkpoints(ckpt: str) -> None:
    """Keep only the checkpoint named in ``latest`` (the finished run's final one)."""
    latest_path = os.path.join(ckpt, "latest")
    if not os.path.exists(latest_path):
        return
    with open(latest_path) as fh:
        latest = fh.read().strip()
    for name in os.listdir(ckpt):
        full = os.path.join(ckpt, name)
        if os.path.isdir(full) and name != latest and name.startswith("global_step"):
            shutil.rmtree(full, ignore_errors=True)
