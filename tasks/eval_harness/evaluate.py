"""Zero/few-shot evaluation of a GPT checkpoint with lm-evaluation-harness 0.4 (``lm_eval``).

    python tasks/eval_harness/evaluate.py --load runs/x/checkpoint --task_list hellaswag,lambada_openai \\
        [--num_fewshot 0] [--results_path out.json] [--include_path my_tasks/] [--limit N] \\
        [--micro-batch-size 8] [--adaptive_seq_len] [--eval_fp32] [--seed S]
    torchrun --nproc_per_node 2 tasks/eval_harness/evaluate.py ...      # data parallel (also `deepspeed`)

``MegatronLM`` is an ``lm_eval.api.model.LM`` (registered as ``megatron``) over our plain ``GPTModel``, loaded by
``megatron.inference.load_for_inference`` (model shape, tokenizer and precision from the checkpoint's args; the
training-only flags, batch sizes and world size are not taken; ``--micro-batch-size`` sets the evaluation batch).

How requests are computed:

* ``loglikelihood``: context and continuation are tokenized as lm-eval's ``TemplateLM`` does (trailing spaces of
  the context move to the continuation; an empty context becomes the EOD token). The model reads
  ``(context + continuation)[-(max_length + 1):][:-1]`` (left truncation to the model length, which is the
  checkpoint's ``--seq-length``) and the continuation's log-probabilities are summed; ``is_greedy`` is true when
  the argmax at every continuation position is the continuation token. A continuation longer than the model
  length is scored in consecutive windows of at most ``max_length`` tokens, each with as much preceding text as
  fits, so every continuation token is scored exactly once (lm-eval's ``hf`` model refuses such requests).
* ``loglikelihood_rolling``: lm-eval's ``get_rolling_token_windows`` + ``make_disjoint_window`` (EOD prefix,
  context length 1): every token of the string is scored exactly once; the windows' sums are added.
* ``generate_until``: greedy decoding; stops at the first ``until`` string (the result is cut before it), at the
  EOD token (not part of the result) or after ``max_gen_toks`` tokens. Contexts are left-truncated to
  ``max_length - max_gen_toks`` as lm-eval's ``hf`` model does (to ``max_length`` with a sliding window when
  ``max_gen_toks >= max_length``). Sampling arguments are ignored: decoding is always greedy. Decoding is
  incremental with a key/value cache (``megatron.model.KVCache``): the batch's contexts are run once,
  left-padded with the padding keys masked and each row at its own positions, then one new token per
  unfinished row per step (finished rows leave the cache): the same computation as recomputing every step,
  equal up to float rounding.
  Once the window slides, or for a model whose ``forward`` takes no ``kv_cache``, every step is recomputed.

Scoring windows are deduplicated (same input and scored length: one forward row), reordered longest first with
lm-eval's ``Collator`` and run ``micro_batch_size`` at a time, right-padded to the longest input of the batch
(``adaptive_seq_len``) or to ``max_length``; causal attention makes the padding invisible, so both give the same
numbers. Log-probabilities are taken in fp32 over the real vocabulary only (``tokenizer.vocab_size``): the ids
that pad the embedding table are never scored or generated.

Data parallel: when ``torch.distributed`` is initialized (``main`` initializes it itself under ``torchrun`` or
``deepspeed``, gloo on CPU, NCCL on GPU), every rank runs the same lm-eval evaluation, the micro-batches of each
request list are dealt round-robin to the ranks, and ``all_gather_object`` puts the results back in order, so
every rank holds the results one process would compute (the very same batches). lm-eval itself sees a single
process; rank 0 prints and writes.

Results: lm-eval's ``simple_evaluate`` dict (``results``, ``configs``, ``versions``, ``n-shot``, ...), made
JSON-safe with lm-eval's ``handle_non_serializable``, written atomically to ``--results_path``; a per-task table
is printed. Bad input (missing checkpoint, unknown task, bad flag): one ``error: ...`` line, exit status 2.

Upstream's recipe command line (``ds_evalharness_1gpu.sh``) runs unchanged: its model sizes ``-1`` mean "the
checkpoint's" (any other value must equal it), and ``--deepspeed``, ``--deepspeed_config``, ``--inference``,
``--no-load-optim``, ``--no-load-rng``, ``--no-pipeline-parallel``, ``--moe-expert-parallel-size 1`` and
``--disable-moe-token-dropping`` are accepted, each given one reported with why it changes nothing here.
"""
from __future__ import annotations

import argparse
import difflib
import inspect
import json
import logging
import os
import sys
import time
from typing import Any, Sequence

if not __package__:  # run as a script: the repo root importable, and not this folder (its evaluate.py would
    _HERE = os.path.dirname(os.path.abspath(__file__))  # shadow the `evaluate` package some lm-eval tasks use)
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]
    sys.path.insert(0, os.path.dirname(os.path.dirname(_HERE)))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from lm_eval import utils as lm_utils  # noqa: E402
from lm_eval.api.model import TemplateLM  # noqa: E402
from lm_eval.api.registry import get_model, register_model  # noqa: E402
from lm_eval.models.utils import (  # noqa: E402
    Collator,
    handle_stop_sequences,
    normalize_gen_kwargs,
    postprocess_generated_text,
)
from tqdm import tqdm  # noqa: E402

logger = logging.getLogger("tasks.eval_harness")

MODEL_NAME = "megatron"
DEFAULT_MAX_GEN_TOKS = 256

Window = tuple[list[int], int]
"""A scoring window: (tokens, n): the model reads tokens[-(max_length + 1):][:-1] and scores the last n tokens."""


class EvalHarnessError(ValueError):
    """Bad command line or task selection; the message names the flag, task or file."""


def _register(cls: type) -> type:
    """``register_model("megatron")`` that tolerates this file being loaded twice (as a script and a module)."""
    try:
        return register_model(MODEL_NAME)(cls)
    except ValueError:
        existing = get_model(MODEL_NAME)
        if getattr(existing, "__qualname__", None) == cls.__qualname__:
            return cls
        raise


def _distributed() -> tuple[int, int]:
    """(rank, world size) of the initialized default process group, else (0, 1)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def default_device() -> torch.device:
    """cuda:LOCAL_RANK when CUDA is there, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
    return torch.device("cpu")


@_register
class MegatronLM(TemplateLM):
    """lm-eval model over a GPTModel and its tokenizer (see the module docstring for the semantics).

    ``MegatronLM.from_checkpoint(dir)`` loads a checkpoint; ``MegatronLM(model, tokenizer, max_length=...)``
    wraps a model in memory; ``MegatronLM(load=dir)`` is what ``--model megatron --model_args load=dir`` builds.
    """

    backend = "causal"

    def __init__(self, model: torch.nn.Module | None = None, tokenizer: Any = None, *, load: str | None = None,
                 max_length: int | None = None, micro_batch_size: int = 8, adaptive_seq_len: bool = True,
                 eval_fp32: bool = False, device: str | torch.device | None = None,
                 overrides: dict[str, Any] | None = None, max_gen_toks: int = DEFAULT_MAX_GEN_TOKS,
                 distributed: bool | None = None, info: dict[str, Any] | None = None,
                 batch_size: int | str | None = None, max_batch_size: int | None = None) -> None:
        super().__init__()
        del max_batch_size  # lm-eval passes it to every model; batches here are micro_batch_size
        if batch_size is not None and str(batch_size).isdigit():
            micro_batch_size = int(batch_size)  # lm-eval's --batch_size N
        if load is not None:
            if model is not None:
                raise ValueError("MegatronLM: give either a model or load=<checkpoint dir>, not both")
            loaded = load_checkpoint(load, micro_batch_size=micro_batch_size, eval_fp32=eval_fp32, device=device,
                                     overrides=overrides)
            model, tokenizer = loaded.model, loaded.tokenizer
            max_length = max_length or loaded.config.training.seq_length
            info = {**checkpoint_info(loaded), **(info or {})}
        if model is None or tokenizer is None:
            raise ValueError("MegatronLM needs a model and its tokenizer (or load=<checkpoint dir>)")
        if device is not None:
            model = model.to(device)
        if eval_fp32:
            model = model.float()
        self.model = model.eval()
        self.tokenizer = tokenizer
        self._device = next(model.parameters()).device
        self._max_length = int(max_length or model.config.max_position_embeddings)
        if int(micro_batch_size) < 1:
            raise ValueError(f"micro_batch_size must be >= 1, got {micro_batch_size}")
        self.micro_batch_size = int(micro_batch_size)
        self.adaptive_seq_len = bool(adaptive_seq_len)
        self._max_gen_toks = int(max_gen_toks)
        self.padded_vocab_size = int(model.output_weight.shape[0])
        self.vocab_size = min(int(tokenizer.vocab_size), self.padded_vocab_size)
        """Logits beyond this id (the padding of the embedding table) are never scored or generated."""
        self.dp_rank, self.dp_world_size = _distributed() if distributed in (None, True) else (0, 1)
        if distributed and self.dp_world_size == 1 and not torch.distributed.is_initialized():
            raise ValueError("MegatronLM(distributed=True) needs an initialized torch.distributed process group")
        self._eos_text = tokenizer.detokenize([tokenizer.eod])
        self.info = dict(info or {})
        self.forward_rows = 0
        """Rows run through the model so far (after deduplication), across calls; this rank only."""
        self._kv_cache = "kv_cache" in inspect.signature(model.forward).parameters
        """generate_until decodes incrementally (the model's forward takes a KVCache)."""

    @classmethod
    def from_checkpoint(cls, load_dir: str, *, micro_batch_size: int = 8, adaptive_seq_len: bool = True,
                        eval_fp32: bool = False, device: str | torch.device | None = None,
                        overrides: dict[str, Any] | None = None, tag: str | None = None,
                        max_gen_toks: int = DEFAULT_MAX_GEN_TOKS) -> MegatronLM:
        """Load a GPT checkpoint written by pretrain_gpt.py (any ZeRO stage, bf16/fp32, LTD-trained)."""
        loaded = load_checkpoint(load_dir, micro_batch_size=micro_batch_size, eval_fp32=eval_fp32, device=device,
                                 overrides=overrides, tag=tag)
        info = checkpoint_info(loaded)
        lm = cls(loaded.model, loaded.tokenizer, max_length=loaded.config.training.seq_length,
                 micro_batch_size=micro_batch_size, adaptive_seq_len=adaptive_seq_len, max_gen_toks=max_gen_toks,
                 info=info)
        lm.info.update(micro_batch_size=lm.micro_batch_size, adaptive_seq_len=lm.adaptive_seq_len,
                       data_parallel_size=lm.dp_world_size)
        return lm

    # ---- what lm-eval asks of a model -----------------------------------------------------------------------
    @property
    def eot_token_id(self) -> int:
        return int(self.tokenizer.eod)

    @property
    def max_length(self) -> int:
        return self._max_length

    @property
    def max_gen_toks(self) -> int:
        return self._max_gen_toks

    @property
    def batch_size(self) -> int:
        return self.micro_batch_size

    @property
    def tokenizer_name(self) -> str:
        return str(getattr(self.tokenizer, "name", type(self.tokenizer).__name__))

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs: Any) -> list[int]:
        del add_special_tokens, kwargs  # our tokenizers add no special tokens
        return list(self.tokenizer.tokenize(string))

    def tok_decode(self, tokens: Sequence[int], **kwargs: Any) -> str:
        del kwargs
        return self.tokenizer.detokenize(list(tokens))

    def get_model_info(self) -> dict[str, Any]:
        """Added by simple_evaluate to results["config"]."""
        return {"megatron": {**self.info, "max_length": self.max_length, "vocab_size": self.vocab_size,
                             "padded_vocab_size": self.padded_vocab_size}}

    # ---- the model -------------------------------------------------------------------------------------------
    def _logits(self, inputs: list[list[int]]) -> torch.Tensor:
        """Right-padded forward of a batch of token lists: logits [b, s, vocab_size] (real vocabulary only)."""
        lengths = [len(x) for x in inputs]
        if min(lengths) < 1 or max(lengths) > self.max_length:
            raise ValueError(f"input lengths {min(lengths)}..{max(lengths)} outside 1..{self.max_length}")
        width = max(lengths) if self.adaptive_seq_len else self.max_length
        tokens = torch.full((len(inputs), width), self.eot_token_id, dtype=torch.long)
        for row, seq in enumerate(inputs):
            tokens[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        self.forward_rows += len(inputs)
        with torch.inference_mode():
            logits = self.model(tokens.to(self._device))  # [b, width, padded vocab]
        return logits[..., : self.vocab_size]

    def _my_batches(self, batches: list[Any]) -> list[tuple[int, Any]]:
        """(index, batch) of the batches this rank runs: batch i goes to rank i % world."""
        return [(i, b) for i, b in enumerate(batches) if i % self.dp_world_size == self.dp_rank]

    def _gather(self, local: dict[int, Any], what: tuple[Any, ...]) -> dict[int, Any]:
        """Merge every rank's {index: result}; ``what`` (request kind and counts) must agree across ranks."""
        if self.dp_world_size == 1:
            return local
        parts: list[Any] = [None] * self.dp_world_size
        torch.distributed.all_gather_object(parts, (what, local))
        if any(p[0] != what for p in parts):
            raise RuntimeError(f"data-parallel ranks got different request lists: {[p[0] for p in parts]}")
        merged: dict[int, Any] = {}
        for _, part in parts:
            merged.update(part)
        return merged

    def score_windows(self, windows: Sequence[Window], *, disable_tqdm: bool = False,
                      desc: str = "loglikelihood") -> list[tuple[float, bool]]:
        """(sum of log-probs of the last n tokens, all greedy) for every window (tokens, n)."""
        length = self.max_length
        units: dict[tuple[tuple[int, ...], int], list[int]] = {}
        for w, (seq, n) in enumerate(windows):
            if not 1 <= n <= length or len(seq) <= n:
                raise ValueError(f"window {w}: cannot score {n} of {len(seq)} tokens with max_length {length}")
            units.setdefault((tuple(seq[-(length + 1):][:-1]), n), []).append(w)
        order = Collator(list(units), sort_fn=lambda key: (-len(key[0]), key[0], key[1]))
        batches = list(order.get_batched(n=self.micro_batch_size))
        local: dict[int, tuple[float, bool]] = {}
        mine = self._my_batches(batches)
        for _, batch in tqdm(mine, desc=f"{desc} ({len(windows)} windows)", disable=disable_tqdm or self.dp_rank != 0):
            logits = self._logits([list(inp) for inp, _ in batch])
            for row, (inp, n) in enumerate(batch):
                logp = F.log_softmax(logits[row, len(inp) - n: len(inp)].float(), dim=-1)  # [n, vocab_size]
                greedy = logp.argmax(dim=-1).cpu()
                logp = logp.cpu()
                for w in units[(inp, n)]:
                    target = torch.tensor(windows[w][0][-n:], dtype=torch.long)
                    picked = logp.gather(1, target.unsqueeze(1)).sum()
                    local[w] = (float(picked), bool(torch.equal(greedy, target)))
        merged = self._gather(local, (desc, len(windows), len(batches)))
        return [merged[w] for w in range(len(windows))]

    # ---- lm-eval request types -------------------------------------------------------------------------------
    def _loglikelihood_tokens(self, requests: list[tuple[Any, list[int], list[int]]],
                              disable_tqdm: bool = False, **kwargs: Any) -> list[tuple[float, bool]]:
        """requests: (cache key, context tokens, continuation tokens) -> (log-prob, is_greedy)."""
        del kwargs
        length = self.max_length
        windows: list[Window] = []
        owner: list[int] = []
        for i, (_, context, continuation) in enumerate(requests):
            context = list(context) or [self.prefix_token_id]
            continuation = list(continuation)
            for start in range(0, len(continuation), length):  # > max_length tokens: consecutive windows
                end = min(start + length, len(continuation))
                windows.append((context + continuation[:end], end - start))
                owner.append(i)
        scores = self.score_windows(windows, disable_tqdm=disable_tqdm)
        logprob = [0.0] * len(requests)
        greedy = [True] * len(requests)
        for (lp, g), i in zip(scores, owner):
            logprob[i] += lp
            greedy[i] = greedy[i] and g
        answers = list(zip(logprob, greedy))
        for (key, _, _), answer in zip(requests, answers):
            if key is not None:
                self.cache_hook.add_partial("loglikelihood", key, answer)
        return answers

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[float]:
        """Full log-likelihood of each string: rolling windows, every token scored once (EOD as the prefix)."""
        windows: list[Window] = []
        owner: list[int] = []
        strings = [req.args[0] for req in requests]
        for i, string in enumerate(strings):
            for context, pred in map(lm_utils.make_disjoint_window, lm_utils.get_rolling_token_windows(
                    token_list=self.tok_encode(string), prefix_token=self.prefix_token_id,
                    max_seq_len=self.max_length, context_len=1)):
                windows.append((list(context) + list(pred), len(pred)))
                owner.append(i)
        scores = self.score_windows(windows, disable_tqdm=disable_tqdm, desc="loglikelihood_rolling")
        totals = [0.0] * len(requests)
        for (lp, _), i in zip(scores, owner):
            totals[i] += lp
        for string, total in zip(strings, totals):
            self.cache_hook.add_partial("loglikelihood_rolling", (string,), total)
        return totals

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        """Greedy continuation of each context until a stop string, EOD or max_gen_toks tokens."""
        items = [(i, req.args[0], req.args[1]) for i, req in enumerate(requests)]
        encoded = [self.tok_encode(context) for _, context, _ in items]
        order = Collator(items, sort_fn=lambda x: (-len(encoded[x[0]]), x[1]), group_by="gen_kwargs",
                         group_fn=lambda x: x[2])
        batches = list(order.get_batched(n=self.micro_batch_size))
        local: dict[int, str] = {}
        mine = self._my_batches(batches)
        for _, batch in tqdm(mine, desc=f"generate_until ({len(items)} requests)",
                             disable=disable_tqdm or self.dp_rank != 0):
            for (i, _, _), text in zip(batch, self._generate_batch([encoded[i] for i, _, _ in batch], batch[0][2])):
                local[i] = text
        merged = self._gather(local, ("generate_until", len(items), len(batches)))
        results = [merged[i] for i in range(len(items))]
        for (_, context, gen_kwargs), text in zip(items, results):
            self.cache_hook.add_partial("generate_until", (context, gen_kwargs), text)
        return results

    def _generate_batch(self, contexts: list[list[int]], gen_kwargs: Any) -> list[str]:
        """Greedy generation for one batch of tokenized contexts sharing ``gen_kwargs``."""
        if not isinstance(gen_kwargs, dict):
            raise ValueError(f"generate_until expects a dict of generation arguments, got {gen_kwargs!r}")
        kwargs = normalize_gen_kwargs(gen_kwargs, self.max_gen_toks)
        until = handle_stop_sequences(kwargs.pop("until", None), eos=self._eos_text)
        max_gen = int(kwargs.pop("max_gen_toks"))
        if kwargs.get("do_sample"):
            logger.warning("generate_until: do_sample=%s ignored, decoding greedily", kwargs.get("do_sample"))
        length = self.max_length
        max_context = length - max_gen if max_gen < length else length
        seqs = [(ctx or [self.prefix_token_id])[-max_context:] for ctx in contexts]
        generated: list[list[int]] = [[] for _ in contexts]
        done = [max_gen < 1] * len(contexts)
        stops = [s for s in until if s]
        decoder = _CachedGreedy(self, max_gen) if self._kv_cache else None
        for _ in range(max_gen):
            active = [i for i, d in enumerate(done) if not d]
            if not active:
                break
            if decoder is not None and any(len(seqs[i]) + len(generated[i]) > length for i in active):
                decoder = None  # the window slides (max_gen_toks >= max_length): recompute from here on
            if decoder is not None:
                next_tokens = decoder.step(active, seqs, generated)
            else:
                inputs = [(seqs[i] + generated[i])[-length:] for i in active]
                logits = self._logits(inputs)
                next_tokens = [int(logits[row, len(inputs[row]) - 1].float().argmax()) for row in range(len(active))]
            for i, token in zip(active, next_tokens):
                if token == self.eot_token_id:
                    done[i] = True
                    continue
                generated[i].append(token)
                if len(generated[i]) >= max_gen or (stops and any(s in self.tok_decode(generated[i]) for s in stops)):
                    done[i] = True
        return [postprocess_generated_text(self.tok_decode(g), until, None) for g in generated]


class _CachedGreedy:
    """Incremental greedy decoding of one batch with a key/value cache (``MegatronLM._generate_batch``).

    The first step runs every row's whole sequence, left-padded to the longest: padding keys are masked (each
    padding query sees only itself, so nothing is fully masked) and every row gets its real positions 0..n-1.
    Each later step runs the one newest token of every still active row at position n-1 over the cache; rows
    that finished are dropped from the cache. ``step`` returns the argmax over the real vocabulary.
    """

    def __init__(self, lm: MegatronLM, max_new_tokens: int) -> None:
        from megatron.model.kv_cache import KVCache

        self.lm = lm
        self.max_new_tokens = max_new_tokens
        self.cache = KVCache()
        self.rows: list[int] = []  # batch index of each cached row
        self.key_padding: torch.Tensor | None = None  # [rows, t] True = padding key; None: no row is padded

    def step(self, active: list[int], contexts: list[list[int]], generated: list[list[int]]) -> list[int]:
        """The next token of each active row (batch indices ``active``; its tokens: context + generated)."""
        lm, device = self.lm, self.lm._device
        if not self.rows:
            logits = self._prefill([contexts[i] + generated[i] for i in active])
        else:
            if active != self.rows:
                keep = [self.rows.index(i) for i in active]
                self.cache.select(keep)
                if self.key_padding is not None:
                    self.key_padding = self.key_padding[keep]
                    if not self.key_padding.any():
                        self.key_padding = None
            newest = [generated[i][-1] if generated[i] else contexts[i][-1] for i in active]
            newest = torch.tensor(newest, dtype=torch.long, device=device).unsqueeze(1)  # [b, 1]
            positions = [len(contexts[i]) + len(generated[i]) - 1 for i in active]
            positions = torch.tensor(positions, dtype=torch.long, device=device).unsqueeze(1)  # [b, 1]
            mask = None
            if self.key_padding is not None:
                self.key_padding = F.pad(self.key_padding, (0, 1), value=False)  # [b, t + 1]
                mask = self.key_padding[:, None, None, :]  # [b, 1, 1, t + 1]
            with torch.inference_mode():
                logits = lm.model(newest, positions, mask, kv_cache=self.cache)[:, -1]  # [b, padded vocab]
        self.rows = list(active)
        lm.forward_rows += len(active)
        return logits[:, : lm.vocab_size].float().argmax(dim=-1).tolist()

    def _prefill(self, sequences: list[list[int]]) -> torch.Tensor:
        """Run the left-padded contexts; logits of each row's last token [b, padded vocab]."""
        lm, device = self.lm, self.lm._device
        lengths = [len(seq) for seq in sequences]
        width = max(lengths)
        self.cache.capacity = width + self.max_new_tokens - 1  # the last new token is never run
        tokens = torch.full((len(sequences), width), lm.eot_token_id, dtype=torch.long)
        for row, seq in enumerate(sequences):
            tokens[row, width - len(seq):] = torch.tensor(seq, dtype=torch.long)
        pad = width - torch.tensor(lengths).unsqueeze(1)  # [b, 1] padding tokens per row
        positions = (torch.arange(width).unsqueeze(0) - pad).clamp(min=0)  # [b, width]
        mask = None
        if min(lengths) < width:
            self.key_padding = (torch.arange(width).unsqueeze(0) < pad).to(device)  # [b, width]
            eye = torch.eye(width, dtype=torch.bool, device=device)
            future = torch.ones(width, width, dtype=torch.bool, device=device).triu(1)
            mask = ((future | self.key_padding[:, None, :]) & ~eye).unsqueeze(1)  # [b, 1, width, width]
        with torch.inference_mode():
            logits = lm.model(tokens.to(device), positions.to(device), mask, kv_cache=self.cache)
        return logits[:, -1]  # [b, padded vocab]


# ---- loading ---------------------------------------------------------------------------------------------------
def load_checkpoint(load_dir: str, *, micro_batch_size: int = 8, eval_fp32: bool = False,
                    device: str | torch.device | None = None, overrides: dict[str, Any] | None = None,
                    tag: str | None = None) -> Any:
    """``load_for_inference`` of a GPT checkpoint; ConfigError (a ValueError) for anything else."""
    from megatron.config import ConfigError
    from megatron.inference import load_for_inference

    flags = {"micro_batch_size": micro_batch_size, **(overrides or {})}
    loaded = load_for_inference(load_dir, flags, tag=tag, dtype=torch.float32 if eval_fp32 else None,
                                device=device if device is not None else default_device())
    if loaded.spec.name != "gpt":
        raise ConfigError(f"--load {load_dir}: a {loaded.spec.name} checkpoint; lm-eval evaluates GPT checkpoints")
    return loaded


def checkpoint_info(loaded: Any) -> dict[str, Any]:
    """What a results file records about the checkpoint."""
    return {"checkpoint": loaded.path, "tag": loaded.tag, "iteration": loaded.iteration,
            "consumed_train_tokens": loaded.consumed_train_tokens,
            "precision": str(loaded.dtype).replace("torch.", "")}


# ---- command line ----------------------------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one `error:` line, no usage dump
        raise EvalHarnessError(message)


def build_parser() -> argparse.ArgumentParser:
    """Upstream's flag names (underscores for the harness flags, Megatron's hyphens), both spellings accepted."""
    ap = _Parser(prog="evaluate.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--load", required=True, help="checkpoint directory written by pretrain_gpt.py --save")
    ap.add_argument("--load_tag", "--load-tag", dest="load_tag", default=None, help="tag instead of `latest`")
    ap.add_argument("--task_list", "--task-list", dest="task_list", required=True,
                    help="comma-separated lm-eval task (or group/tag) names")
    ap.add_argument("--num_fewshot", "--num-fewshot", dest="num_fewshot", type=int, default=None,
                    help="few-shot examples per request (default: the task's own setting, 0 for most)")
    ap.add_argument("--results_path", "--results-path", dest="results_path", default=None,
                    help="write lm-eval's results dict here as JSON (atomically)")
    ap.add_argument("--include_path", "--include-path", dest="include_path", action="append", default=None,
                    help="directory of extra lm-eval task YAMLs (repeatable)")
    ap.add_argument("--limit", type=float, default=None,
                    help="at most N documents per task (a value < 1: that fraction); for tests only")
    ap.add_argument("--micro-batch-size", "--micro_batch_size", dest="micro_batch_size", type=int, default=8,
                    help="requests per forward pass (default 8)")
    ap.add_argument("--adaptive_seq_len", "--adaptive-seq-len", dest="adaptive_seq_len", action="store_true",
                    help="pad each batch to its longest request instead of the model length (same results)")
    ap.add_argument("--eval_fp32", "--eval-fp32", dest="eval_fp32", action="store_true",
                    help="evaluate in fp32 (default: the training precision)")
    ap.add_argument("--seed", type=int, default=None,
                    help="one seed for lm-eval's python/numpy/torch/few-shot seeds (default: lm-eval's)")
    ap.add_argument("--bootstrap_iters", "--bootstrap-iters", dest="bootstrap_iters", type=int, default=100000,
                    help="bootstrap resamples for the stderr of non-mean metrics (lm-eval's default; 0: none)")
    ap.add_argument("--max_gen_toks", "--max-gen-toks", dest="max_gen_toks", type=int,
                    default=DEFAULT_MAX_GEN_TOKS, help="generation length for tasks that do not set one")
    ap.add_argument("--device", default=None, help="cpu or cuda[:N] (default: cuda:LOCAL_RANK if present)")
    ap.add_argument("--tokenizer-type", dest="tokenizer_type", default=None, help="tokenizer (default: training's)")
    ap.add_argument("--vocab-file", dest="vocab_file", default=None, help="tokenizer vocab (default: training's)")
    ap.add_argument("--merge-file", dest="merge_file", default=None, help="BPE merges (default: training's)")
    shape = ap.add_argument_group("model shape (upstream's recipe passes -1: read from the checkpoint)")
    for flag, _ in SHAPE_FLAGS:
        shape.add_argument(flag, type=int, default=None,
                           help="-1 or unset: the checkpoint's value; any other value must equal it")
    compat = ap.add_argument_group("accepted for upstream recipes (each given one is reported with why it changes "
                                   "nothing here)")
    compat.add_argument("--local_rank", "--local-rank", dest="local_rank", type=int, default=None,
                        help="set by the launcher; the device comes from LOCAL_RANK")
    for flag, why in COMPAT_FLAGS.items():
        compat.add_argument(flag, action="store_true", help=f"no effect: {why}")
    compat.add_argument("--deepspeed_config", "--deepspeed-config", dest="deepspeed_config", default=None,
                        help="no effect: evaluation runs the plain model, not a DeepSpeed engine")
    compat.add_argument("--moe-expert-parallel-size", dest="moe_expert_parallel_size", type=int, default=None,
                        help="must be 1 (the models here have no mixture-of-experts layers)")
    compat.add_argument("--tensor-model-parallel-size", dest="tp", type=int, default=1, help="must be 1")
    compat.add_argument("--pipeline-model-parallel-size", dest="pp", type=int, default=1, help="must be 1")
    return ap


SHAPE_FLAGS = (("--num-layers", "num_layers"), ("--hidden-size", "hidden_size"),
               ("--num-attention-heads", "num_attention_heads"), ("--seq-length", "seq_length"),
               ("--max-position-embeddings", "max_position_embeddings"))
"""Upstream's required model-size flags; its eval recipe passes -1 ("read the checkpoint"), as this tool does."""

COMPAT_FLAGS = {
    "--deepspeed": "evaluation runs the plain model loaded from the checkpoint, not a DeepSpeed engine",
    "--inference": "evaluate.py only ever runs inference (no optimizer is built)",
    "--no-load-optim": "evaluate.py loads the model weights only, never optimizer states",
    "--no-load-rng": "evaluate.py loads the model weights only, never RNG states",
    "--no-pipeline-parallel": "pipeline parallelism is never used",
    "--disable-moe-token-dropping": "the models here have no mixture-of-experts layers",
}
"""Flags upstream's eval recipe passes that change nothing here, and why (each one given is reported once)."""


def compat_warnings(cli: argparse.Namespace) -> list[str]:
    """One line per upstream flag given that has no effect here, naming why."""
    out = [f"{flag}: accepted for upstream compatibility; no effect here because {why}"
           for flag, why in COMPAT_FLAGS.items() if getattr(cli, flag[2:].replace("-", "_"), False)]
    if cli.deepspeed_config is not None:
        out.append("--deepspeed_config: accepted for upstream compatibility; no effect here because evaluation runs "
                   "the plain model, not a DeepSpeed engine")
    if cli.moe_expert_parallel_size == 1:
        out.append("--moe-expert-parallel-size 1: accepted for upstream compatibility; no effect here because the "
                   "models here have no mixture-of-experts layers")
    return out


def check_model_shape(cli: argparse.Namespace, lm: MegatronLM) -> None:
    """Model-size flags other than -1 must match the checkpoint (EvalHarnessError naming the flag otherwise)."""
    config = lm.model.config
    actual = {"num_layers": config.num_layers, "hidden_size": config.hidden_size,
              "num_attention_heads": config.num_attention_heads, "seq_length": lm.max_length,
              "max_position_embeddings": config.max_position_embeddings}
    for flag, dest in SHAPE_FLAGS:
        given = getattr(cli, dest)
        if given is not None and given != -1 and given != actual[dest]:
            raise EvalHarnessError(f"{flag} {given} does not match the checkpoint's {actual[dest]} (give -1 or leave "
                                   f"it out to use the checkpoint's value)")


def parse_task_list(task_list: str) -> list[str]:
    tasks = [t.strip() for t in task_list.split(",") if t.strip()]
    if not tasks:
        raise EvalHarnessError("--task_list names no task")
    return list(dict.fromkeys(tasks))


def build_task_manager(tasks: list[str], include_paths: list[str] | None) -> Any:
    """A TaskManager that knows every name in ``tasks``; EvalHarnessError naming the unknown ones.

    lm-eval's built-in index takes ~20 s to build: with --include_path, the local tasks are tried alone first.
    """
    from lm_eval.tasks import TaskManager

    paths = [os.path.abspath(p) for p in include_paths or []]
    for path in paths:
        if not os.path.exists(path):
            raise EvalHarnessError(f"--include_path {path}: not found")

    def unknown(manager: Any) -> list[str]:
        known = set(manager.all_tasks)
        return [t for t in tasks if t not in known and not os.path.isfile(t)]

    if paths:
        manager = TaskManager(include_path=paths, include_defaults=False)
        if not unknown(manager):
            return manager
    manager = TaskManager(include_path=paths or None)
    missing = unknown(manager)
    if missing:
        hints = []
        for name in missing:
            close = difflib.get_close_matches(name, manager.all_tasks, n=3)
            hints.append(f"{name}" + (f" (did you mean {', '.join(close)}?)" if close else ""))
        where = " or --include_path " + ", ".join(paths) if paths else " (add --include_path DIR for local YAMLs)"
        raise EvalHarnessError(f"unknown lm-eval task(s): {'; '.join(hints)}: not in lm-eval's task index{where}")
    return manager


def json_safe(results: dict[str, Any]) -> dict[str, Any]:
    """lm-eval's results (numpy numbers, functions in task configs) as plain JSON data."""
    return json.loads(json.dumps(results, default=lm_utils.handle_non_serializable))


def print_table(results: dict[str, Any]) -> None:
    try:
        print(lm_utils.make_table(results), flush=True)
        if results.get("groups"):
            print(lm_utils.make_table(results, "groups"), flush=True)
    except Exception:  # noqa: BLE001 - the table is a courtesy; fall back to one line per metric
        for task, metrics in results.get("results", {}).items():
            shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()
                              if isinstance(v, (int, float)) and "stderr" not in k)
            print(f"{task}: {shown}", flush=True)


def _is_data_error(error: BaseException) -> bool:
    """Dataset files/hub unreachable: user input, reported as one line."""
    return (isinstance(error, (FileNotFoundError, ConnectionError))
            or type(error).__module__.split(".")[0] in ("datasets", "huggingface_hub", "requests"))


def run(argv: Sequence[str] | None = None) -> dict[str, Any] | None:
    """Evaluate as the command line says; returns lm-eval's (JSON-safe) results dict on rank 0, None elsewhere."""
    cli = build_parser().parse_args(argv)
    if cli.tp != 1 or cli.pp != 1:
        raise EvalHarnessError("tensor/pipeline model parallelism is not supported here: use data parallel ranks")
    if cli.moe_expert_parallel_size not in (None, 1):
        raise EvalHarnessError(f"--moe-expert-parallel-size {cli.moe_expert_parallel_size}: mixture-of-experts is "
                               "not supported (the models here are dense); use 1")
    for flag, dest in SHAPE_FLAGS:
        if getattr(cli, dest) is not None and getattr(cli, dest) < 1 and getattr(cli, dest) != -1:
            raise EvalHarnessError(f"{flag} must be -1 (the checkpoint's value) or >= 1, got {getattr(cli, dest)}")
    for line in compat_warnings(cli):
        logger.warning("%s", line)
    if cli.num_fewshot is not None and cli.num_fewshot < 0:
        raise EvalHarnessError(f"--num_fewshot must be >= 0, got {cli.num_fewshot}")
    if cli.micro_batch_size < 1:
        raise EvalHarnessError(f"--micro-batch-size must be >= 1, got {cli.micro_batch_size}")
    if cli.limit is not None and cli.limit <= 0:
        raise EvalHarnessError(f"--limit must be > 0, got {cli.limit:g}")
    limit = None if cli.limit is None else (int(cli.limit) if cli.limit >= 1 else cli.limit)
    tasks = parse_task_list(cli.task_list)
    rank, world = _distributed()

    start = time.time()
    overrides = {"tokenizer_type": cli.tokenizer_type, "vocab_file": cli.vocab_file, "merge_file": cli.merge_file}
    lm = MegatronLM.from_checkpoint(cli.load, micro_batch_size=cli.micro_batch_size,
                                    adaptive_seq_len=cli.adaptive_seq_len, eval_fp32=cli.eval_fp32,
                                    device=cli.device, overrides={k: v for k, v in overrides.items() if v},
                                    tag=cli.load_tag, max_gen_toks=cli.max_gen_toks)
    check_model_shape(cli, lm)
    manager = build_task_manager(tasks, cli.include_path)

    from lm_eval import simple_evaluate

    seeds = {} if cli.seed is None else {"random_seed": cli.seed, "numpy_random_seed": cli.seed,
                                         "torch_random_seed": cli.seed, "fewshot_random_seed": cli.seed}
    model_args = {"load": os.path.abspath(cli.load), "micro_batch_size": cli.micro_batch_size,
                  "adaptive_seq_len": cli.adaptive_seq_len, "eval_fp32": cli.eval_fp32}
    try:
        results = simple_evaluate(model=lm, model_args=model_args, tasks=tasks, num_fewshot=cli.num_fewshot,
                                  batch_size=cli.micro_batch_size, limit=limit, bootstrap_iters=cli.bootstrap_iters,
                                  log_samples=False, task_manager=manager, **seeds)
    except Exception as e:  # noqa: BLE001 - only data-availability errors are re-raised as user input
        if _is_data_error(e):
            raise EvalHarnessError(f"task data unavailable ({type(e).__name__}: {e}); set HF_DATASETS_OFFLINE=1 "
                                   "with a local datasets cache, or use local YAML tasks (--include_path)") from None
        raise
    seconds = time.time() - start
    if rank != 0 or results is None:
        return None
    results = json_safe(dict(results))
    results.setdefault("config", {}).setdefault("megatron", {})["seconds"] = round(seconds, 3)
    print_table(results)
    info = lm.info
    print(f"evaluate: {info.get('tag')} (iteration {info.get('iteration')}, {info.get('precision')}) | "
          f"{len(results.get('results', {}))} tasks, "
          f"{'default' if cli.num_fewshot is None else cli.num_fewshot}-shot | {world} rank(s) | {seconds:.1f} s"
          + (f" | {cli.results_path}" if cli.results_path else ""), flush=True)
    if cli.results_path:
        from megatron.evaluation import atomic_write_json

        atomic_write_json(cli.results_path, results)
    return results


def init_distributed() -> bool:
    """Initialize the default process group under torchrun/deepspeed (WORLD_SIZE > 1); True if this did it."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or torch.distributed.is_initialized():
        return False
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1")))
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
    # NCCL needs one GPU per process; more ranks than GPUs (or none) gather their results over gloo
    nccl = torch.cuda.is_available() and local_world <= torch.cuda.device_count()
    torch.distributed.init_process_group("nccl" if nccl else "gloo")
    return True


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry: 0 on success, 2 with one `error:` line on bad input."""
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    for name in ("lm_eval", "lm-eval"):
        logging.getLogger(name).setLevel(logging.WARNING)
    started = init_distributed()
    try:
        run(argv)
    except ValueError as e:  # EvalHarnessError, ConfigError, tokenizer errors: user input
        sys.stderr.write(f"error: {e}\n")
        return 2
    finally:
        if started:
            torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
