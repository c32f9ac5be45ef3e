"""lm-eval throughput: our adapter (``tasks/eval_harness/evaluate.py``'s ``MegatronLM``) vs lm-eval's own ``hf``
model (``HFLM``) on the same checkpoint exported by ``tools/convert_checkpoint_to_hf.py``, same tasks, same run.

Model: ``--load CKPT`` (a checkpoint written by pretrain_gpt.py), or by default a GPT trained here for
``--train-iters`` steps on the first 300 documents of the bundled corpus (``--num-layers``/``--hidden-size``/
``--num-attention-heads``/``--seq-length``, learned positions, fp32, shipped GPT-2 BPE; ``--rope`` for rotary
positions). The checkpoint is exported to a temp directory with ``convert_checkpoint_to_hf.convert``.

Tasks: the four offline tasks (``tasks.eval_harness.offline_tasks.build_offline_tasks``, ``--num-docs`` documents
each): ``corpus_perplexity`` (loglikelihood_rolling), ``corpus_lastword`` and ``corpus_choice`` (loglikelihood),
``corpus_lastword_gen`` (generate_until), zero-shot.

Both models run in fp32 on the CPU (or ``--device cuda``) with the same batch size (``--micro-batch-size``: our
micro-batch, HFLM's ``batch_size``) and the same context (HFLM's ``max_length`` = our adapter's). Each side is
built once (loading not timed). One untimed warm-up ``simple_evaluate`` per side, then ``--rounds`` rounds that
run both sides back to back, in an order that alternates. Only the model calls are timed: the ``loglikelihood``,
``loglikelihood_rolling`` and ``generate_until`` methods lm-eval calls (tokenization inside them included; task
building and metric computation outside). Requests/s per request type and over all requests = requests / the
summed time of those calls; the median over rounds is reported (best in brackets), and ours/hf (target >= 1.0).
As a check, the per-request answers of the two sides (log-likelihoods, greedy flags, generated text) and the
task metrics of the last round are compared and their largest difference printed.

One intra-op thread by default (``--threads 0``: torch's default), since the project's CPU machines are shared.

    python bench/evalharness_throughput.py                                # tiny GPT trained here, 40 docs/task
    python bench/evalharness_throughput.py --load runs/quickstart/checkpoint --num-docs 100 --rounds 3
    python bench/evalharness_throughput.py --rope --micro-batch-size 16 --json bench.json
"""
from __future__ import annotations

import argparse
import contextlib
import gzip
import io
import json
import logging
import math
import os
import statistics
import sys
import tempfile
import time
from typing import Any, Callable

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import torch  # noqa: E402

REQUEST_TYPES = ("loglikelihood", "loglikelihood_rolling", "generate_until")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--load", default=None, help="GPT checkpoint directory (default: train a small one here).")
    p.add_argument("--num-layers", type=int, default=4)
    p.add_argument("--hidden-size", type=int, default=256)
    p.add_argument("--num-attention-heads", type=int, default=8)
    p.add_argument("--seq-length", type=int, default=512)
    p.add_argument("--rope", action="store_true", help="Train the model with rotary positions (GPT-NeoX export).")
    p.add_argument("--train-iters", type=int, default=10)
    p.add_argument("--num-docs", type=int, default=40, help="Documents per offline task.")
    p.add_argument("--micro-batch-size", type=int, default=8)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default=None, help="Also write the figures to this JSON file.")
    return p.parse_args(argv)


@contextlib.contextmanager
def quiet():
    """Swallow stdout/stderr chatter (training logs, progress bars) of a step."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
        yield buf


def train_checkpoint(b: argparse.Namespace, root: str) -> str:
    """A small GPT trained for --train-iters steps on the first 300 corpus documents; returns its --save dir."""
    import importlib.util

    from megatron.cli import pretrain_from_argv
    from megatron.specs.gpt import GPT_SPEC

    vocab = os.path.join(REPO, "data", "tokenizers", "gpt2-bpe", "vocab.json")
    merges = os.path.join(REPO, "data", "tokenizers", "gpt2-bpe", "merges.txt")
    jsonl = os.path.join(root, "docs.jsonl")
    with gzip.open(os.path.join(REPO, "data", "corpus", "python_docs.jsonl.gz"), "rt", encoding="utf-8") as src, \
            open(jsonl, "w", encoding="utf-8") as dst:
        for i, line in enumerate(src):
            if i >= 300:
                break
            dst.write(line)
    spec = importlib.util.spec_from_file_location("_preprocess_data", os.path.join(REPO, "tools", "preprocess_data.py"))
    pre = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pre)
    pre.main(["--input", jsonl, "--output-prefix", os.path.join(root, "docs"), "--tokenizer-type",
              "GPT2BPETokenizer", "--vocab-file", vocab, "--merge-file", merges, "--append-eod", "--no-progress"])
    save = os.path.join(root, "checkpoint")
    argv = ["--num-layers", str(b.num_layers), "--hidden-size", str(b.hidden_size), "--num-attention-heads",
            str(b.num_attention_heads), "--seq-length", str(b.seq_length), "--max-position-embeddings",
            str(b.seq_length), "--micro-batch-size", "4", "--global-batch-size", "8", "--train-iters",
            str(b.train_iters), "--lr", "1e-3", "--min-lr", "1e-4", "--lr-decay-style", "cosine",
            "--lr-warmup-iters", "2", "--seed", "1234", "--log-interval", "1000", "--eval-interval", "100000",
            "--eval-iters", "1", "--split", "949,50,1", "--num-workers", "0", "--attention-dropout", "0",
            "--hidden-dropout", "0", "--data-path", os.path.join(root, "docs_text_document"),
            "--vocab-file", vocab, "--merge-file", merges, "--save", save]
    if b.rope:
        argv += ["--position-embedding-type", "rope"]
    pretrain_from_argv(GPT_SPEC, argv)
    return save


class Timed:
    """Wraps an lm-eval LM's request methods on the instance: summed wall time and request count per type."""

    def __init__(self, lm: Any) -> None:
        self.lm = lm
        self.seconds = {t: 0.0 for t in REQUEST_TYPES}
        self.count = {t: 0 for t in REQUEST_TYPES}
        for name in REQUEST_TYPES:
            setattr(lm, name, self._wrap(name, getattr(lm, name)))

    def _wrap(self, name: str, fn: Callable) -> Callable:
        def timed(requests, *args, **kwargs):
            t0 = time.perf_counter()
            out = fn(requests, *args, **kwargs)
            self.seconds[name] += time.perf_counter() - t0
            self.count[name] += len(requests)
            return out
        return timed

    def reset(self) -> None:
        for t in REQUEST_TYPES:
            self.seconds[t], self.count[t] = 0.0, 0


def responses(results: dict) -> dict[tuple[str, int], list]:
    """(task, doc_id) -> flat list of answers (log-likelihoods, is_greedy flags, generated strings)."""
    out = {}
    for task, samples in results["samples"].items():
        for s in samples:
            flat: list = []
            for r in s["filtered_resps"]:
                flat.extend(r if isinstance(r, (list, tuple)) else [r])
            out[(task, s["doc_id"])] = flat
    return out


def compare(a: dict, b: dict) -> dict[str, Any]:
    """Largest differences between two simple_evaluate outputs (per-request answers and metrics)."""
    ra, rb = responses(a), responses(b)
    max_ll, text_diff, flag_diff = 0.0, 0, 0
    for key in ra:
        for x, y in zip(ra[key], rb.get(key, [])):
            if isinstance(x, str):
                text_diff += x != y
            elif isinstance(x, bool):
                flag_diff += x != y
            else:
                max_ll = max(max_ll, abs(float(x) - float(y)))
    max_metric = 0.0
    for task, metrics in a["results"].items():
        for k, v in metrics.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and "stderr" not in k:
                w = b["results"][task][k]
                max_metric = max(max_metric, abs(v - w) / max(1.0, abs(v)))
    return {"requests_compared": sum(len(v) for v in ra.values()), "same_keys": set(ra) == set(rb),
            "max_abs_loglik_diff": max_ll, "generations_differing": text_diff, "greedy_flags_differing": flag_diff,
            "max_rel_metric_diff": max_metric}


def main(argv: list[str] | None = None) -> int:
    b = parse(argv)
    if b.threads:
        torch.set_num_threads(b.threads)
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    for name in ("megatron", "lm_eval", "lm-eval", "transformers", "datasets", "deepspeed", "DeepSpeed"):
        logging.getLogger(name).setLevel(logging.ERROR)
    import lm_eval
    import transformers
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    try:
        import datasets

        datasets.disable_progress_bars()
        datasets.logging.set_verbosity_error()
    except ImportError:
        pass
    from tasks.eval_harness.evaluate import MegatronLM
    from tasks.eval_harness.offline_tasks import build_offline_tasks

    sys.path.insert(0, os.path.join(REPO, "tools"))
    from convert_checkpoint_to_hf import convert

    with tempfile.TemporaryDirectory(prefix="evalharness_bench_") as tmp:
        t0 = time.perf_counter()
        if b.load:
            load = b.load
        else:
            with quiet():
                load = train_checkpoint(b, tmp)
        train_s = time.perf_counter() - t0
        with quiet():
            summary = convert(load, os.path.join(tmp, "hf"))
            names = build_offline_tasks(os.path.join(tmp, "tasks"), num_docs=b.num_docs)
        tm = TaskManager(include_path=os.path.join(tmp, "tasks"), include_defaults=False)
        with quiet():
            ours = MegatronLM.from_checkpoint(load, micro_batch_size=b.micro_batch_size, eval_fp32=True,
                                              device=b.device)
            hf = HFLM(pretrained=os.path.join(tmp, "hf"), dtype="float32", batch_size=b.micro_batch_size,
                      device=b.device, max_length=ours.max_length)
        sides = {"ours": Timed(ours), "hf": Timed(hf)}

        def run(side: str) -> dict:
            sides[side].reset()
            with quiet():
                return lm_eval.simple_evaluate(model=sides[side].lm, tasks=list(names), num_fewshot=0,
                                               task_manager=tm, log_samples=True, bootstrap_iters=0,
                                               random_seed=0, numpy_random_seed=0, torch_random_seed=0,
                                               fewshot_random_seed=0)

        for side in sides:  # warm-up, untimed
            run(side)
        rates: dict[str, dict[str, list[float]]] = {s: {t: [] for t in (*REQUEST_TYPES, "all")} for s in sides}
        counts: dict[str, int] = {}
        last: dict[str, dict] = {}
        for r in range(b.rounds):
            order = ("ours", "hf") if r % 2 == 0 else ("hf", "ours")
            for side in order:
                last[side] = run(side)
                t = sides[side]
                for typ in REQUEST_TYPES:
                    if t.count[typ]:
                        rates[side][typ].append(t.count[typ] / t.seconds[typ])
                        counts[typ] = t.count[typ]
                rates[side]["all"].append(sum(t.count.values()) / sum(t.seconds.values()))
        counts["all"] = sum(v for k, v in counts.items() if k != "all")
        check = compare(last["ours"], last["hf"])

    if b.load:
        model_desc = f"{summary['architecture']} exported from --load {b.load}"
    else:
        model_desc = (f"{summary['architecture']} exported from a GPT trained here ({b.num_layers} layers, hidden "
                      f"{b.hidden_size}, seq {b.seq_length}, {'rope' if b.rope else 'learned positions'}, "
                      f"{b.train_iters} steps)")
    model_desc += f", vocab {summary['vocab_size']}"
    print(f"lm-eval {lm_eval.__version__}, transformers {transformers.__version__}, torch {torch.__version__}, "
          f"device {b.device}, threads {torch.get_num_threads()}")
    print(f"model: {model_desc}; tasks: {', '.join(names)} ({b.num_docs} docs each, 0-shot); "
          f"batch {b.micro_batch_size}; context {ours.max_length}; {b.rounds} rounds (median [best])"
          + ("" if b.load else f"; training {train_s:.1f}s"))
    print(f"{'request type':<24}{'requests':>9}{'ours req/s':>22}{'hf req/s':>22}{'ours/hf':>9}")
    figures: dict[str, Any] = {"rows": {}}
    for typ in (*REQUEST_TYPES, "all"):
        if not rates["ours"][typ]:
            continue
        o, h = rates["ours"][typ], rates["hf"][typ]
        om, hm = statistics.median(o), statistics.median(h)
        figures["rows"][typ] = {"requests": counts[typ], "ours_median": om, "ours_best": max(o), "hf_median": hm,
                                "hf_best": max(h), "ratio_median": om / hm}
        print(f"{typ:<24}{counts[typ]:>9}{om:>13.1f} [{max(o):>6.1f}]{hm:>13.1f} [{max(h):>6.1f}]{om / hm:>8.2f}x")
    print(f"check (last round): {check['requests_compared']} answers compared, max |loglik diff| "
          f"{check['max_abs_loglik_diff']:.2e}, generations differing {check['generations_differing']}, greedy "
          f"flags differing {check['greedy_flags_differing']}, max rel metric diff {check['max_rel_metric_diff']:.2e}")
    if b.json:
        figures.update(check=check, args=vars(b), model=model_desc, lm_eval=lm_eval.__version__,
                       transformers=transformers.__version__, torch=torch.__version__)
        with open(b.json, "w", encoding="utf-8") as f:
            json.dump(figures, f, indent=2)
    ok = check["same_keys"] and check["generations_differing"] == 0 and math.isfinite(check["max_abs_loglik_diff"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
