"""tasks/eval_harness/evaluate.py: the lm-eval 0.4 adapter over our GPTModel, against direct computations with the
model (batch of one, no padding, no lm-eval), and its command line end to end on local YAML tasks (1 and 2 ranks).

One tiny GPT (2 layers, hidden 32, seq 32) is trained for a few steps in-process; its embedding table is padded
to 9000 rows (--make-vocab-size-divisible-by 1000) so that 808 padded-vocabulary ids exist.
"""
from __future__ import annotations

import json
import math
import os
import re
import socket
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from conftest import REPO, gpt_argv, subprocess_env

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # read when `datasets` is imported: before lm_eval
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from lm_eval.api.instance import Instance  # noqa: E402

from tasks.eval_harness import evaluate as harness  # noqa: E402
from tasks.eval_harness.evaluate import MegatronLM  # noqa: E402

L = 32  # the tiny model's seq length


@pytest.fixture(scope="module")
def ckpt(gpt_data_prefix, tmp_path_factory) -> str:
    from megatron.cli import pretrain_from_argv
    from megatron.specs.gpt import GPT_SPEC

    save = tmp_path_factory.mktemp("eval_harness") / "ckpt"
    pretrain_from_argv(GPT_SPEC, gpt_argv(gpt_data_prefix, train_iters=6, lr_warmup_iters=0, save=save,
                                          make_vocab_size_divisible_by=1000, eval_iters=1))
    return str(save)


@pytest.fixture(scope="module")
def lm(ckpt) -> MegatronLM:
    model = MegatronLM.from_checkpoint(ckpt, micro_batch_size=3, adaptive_seq_len=True, device="cpu")
    assert model.max_length == L and model.vocab_size == 8192 and model.padded_vocab_size == 9000
    return model


def _fixed(lm: MegatronLM) -> MegatronLM:
    """The same model, padded to the model length, another micro-batch size."""
    return MegatronLM(lm.model, lm.tokenizer, max_length=L, micro_batch_size=2, adaptive_seq_len=False)


def _ll_req(ctx: str, cont: str) -> Instance:
    return Instance(request_type="loglikelihood", doc={}, arguments=(ctx, cont), idx=0)


def _roll_req(text: str) -> Instance:
    return Instance(request_type="loglikelihood_rolling", doc={}, arguments=(text,), idx=0)


def _gen_req(ctx: str, **kwargs) -> Instance:
    return Instance(request_type="generate_until", doc={}, arguments=(ctx, kwargs), idx=0)


def _logp(lm: MegatronLM, inp: list[int]) -> torch.Tensor:
    """Direct: one unpadded row through the model, log-softmax over the real vocabulary [len, 8192]."""
    assert 1 <= len(inp) <= L
    with torch.no_grad():
        logits = lm.model(torch.tensor([inp]))[0].float()
    return F.log_softmax(logits[:, :8192], dim=-1)


def _direct(lm: MegatronLM, inp: list[int], targets: list[int]) -> tuple[float, bool]:
    """Sum of log-probs of `targets` predicted at the last len(targets) positions of `inp`; all-argmax."""
    logp = _logp(lm, inp)[-len(targets):]
    t = torch.tensor(targets)
    return float(logp.gather(1, t[:, None]).sum()), bool((logp.argmax(-1) == t).all())


def _words(lm: MegatronLM, n: int) -> list[int]:
    """n tokens of real text."""
    text = ("The module defines the following functions and classes for working with files, "
            "directories and the paths that name them on every platform that Python supports. ") * 4
    toks = lm.tokenizer.tokenize(text)
    assert len(toks) >= n
    return toks[:n]


# ---- loglikelihood ----------------------------------------------------------------------------------------------
def test_loglikelihood_matches_direct_computation(lm):
    tok = lm.tokenizer.tokenize
    pairs = [("The module defines", " the following functions"), ("Return the", " path"),
             ("Open the file and ", "read it."), ("", " The module defines classes")]
    got = lm.loglikelihood([_ll_req(c, x) for c, x in pairs])
    for (ctx, cont), (lp, greedy) in zip(pairs, got):
        if ctx:
            if ctx.endswith(" "):  # lm-eval moves the context's trailing spaces to the continuation
                ctx, cont = ctx.rstrip(" "), " " + cont
            whole, ctx_ids = tok(ctx + cont), tok(ctx)
            ctx_ids, cont_ids = whole[: len(ctx_ids)], whole[len(ctx_ids):]
        else:  # empty context: EOD is the context token
            ctx_ids, cont_ids = [lm.tokenizer.eod], tok(cont)
        ref = _direct(lm, (ctx_ids + cont_ids)[:-1], cont_ids)
        assert lp == pytest.approx(ref[0], abs=1e-4) and greedy == ref[1]
        assert isinstance(lp, float) and isinstance(greedy, bool) and lp < 0


def test_is_greedy_and_truncation(lm):
    ctx = _words(lm, 6)
    greedy = []
    for _ in range(3):  # the model's own greedy continuation
        greedy.append(int(_logp(lm, ctx + greedy)[-1].argmax()))
    other = greedy[:2] + [(greedy[2] + 1) % 8192]
    long_ctx = _words(lm, 50)  # 50 + 4 > L + 1: left-truncated to the last L input tokens
    cont = _words(lm, 60)[50:54]
    got = lm._loglikelihood_tokens([(None, ctx, greedy), (None, ctx, other), (None, long_ctx, cont),
                                    (None, long_ctx[-(L + 1 - 4):], cont)])
    assert got[0] == (pytest.approx(_direct(lm, ctx + greedy[:2], greedy)[0], abs=1e-4), True)
    assert got[1][1] is False and got[1][0] == pytest.approx(_direct(lm, ctx + other[:2], other)[0], abs=1e-4)
    seq = long_ctx + cont
    assert got[2][0] == pytest.approx(_direct(lm, seq[-(L + 1):-1], cont)[0], abs=1e-4)
    assert got[3][0] == pytest.approx(got[2][0], abs=1e-6)  # exactly the context that fits


def test_continuation_longer_than_the_model(lm):
    ctx, cont = _words(lm, 5), _words(lm, 75)[5:75]  # 70 continuation tokens, L = 32
    (lp, greedy), = lm._loglikelihood_tokens([(None, ctx, cont)])
    seq, total, scored = ctx + cont, 0.0, 0
    for start, end in ((0, 32), (32, 64), (64, 70)):  # every continuation token once, max context each
        stop = len(ctx) + end
        total += _direct(lm, seq[:stop][-(L + 1):-1], cont[start:end])[0]
        scored += end - start
    assert scored == len(cont) and lp == pytest.approx(total, abs=1e-3) and greedy is False


# ---- loglikelihood_rolling --------------------------------------------------------------------------------------
def test_rolling_windows_cover_every_token_once(lm, monkeypatch):
    toks = _words(lm, 100)
    text = lm.tokenizer.detokenize(toks)
    assert lm.tokenizer.tokenize(text) == toks
    seen = []
    real = lm.score_windows

    def spy(windows, **kw):
        seen.extend(windows)
        return real(windows, **kw)

    monkeypatch.setattr(lm, "score_windows", spy)
    (total,), (empty,) = lm.loglikelihood_rolling([_roll_req(text)]), lm.loglikelihood_rolling([_roll_req("")])
    scored = [t for seq, n in seen for t in seq[-n:]]
    assert sum(n for _, n in seen) == len(toks) and scored == toks and empty == 0.0
    # direct: [EOD t0..t30] -> t0..t31; then windows of 32 inputs ending just before each predicted block
    eod, direct = lm.tokenizer.eod, 0.0
    direct += _direct(lm, [eod] + toks[:31], toks[:32])[0]
    direct += _direct(lm, toks[31:63], toks[32:64])[0]
    direct += _direct(lm, toks[63:95], toks[64:96])[0]
    direct += _direct(lm, toks[67:99], toks[96:100])[0]  # the last window keeps a full context
    assert total == pytest.approx(direct, abs=1e-3)


# ---- generate_until ---------------------------------------------------------------------------------------------
def _greedy_direct(lm: MegatronLM, ctx: list[int], max_gen: int) -> list[int]:
    out: list[int] = []
    for _ in range(max_gen):
        nxt = int(_logp(lm, (ctx + out)[-L:])[-1].argmax())
        if nxt == lm.tokenizer.eod:
            break
        out.append(nxt)
    return out


def test_generate_until_greedy_matches_direct(lm):
    ctxs = ["The module defines the", "Return the path of", "Open"]
    got = lm.generate_until([_gen_req(c, until=["\u2603"], max_gen_toks=6) for c in ctxs])
    for ctx, text in zip(ctxs, got):
        ids = lm.tokenizer.tokenize(ctx)[-(L - 6):]
        assert text == lm.tokenizer.detokenize(_greedy_direct(lm, ids, 6))


def test_cached_generation_equals_recomputation_with_padding_and_sliding_window(lm):
    """KV-cached decoding (left-padded batch, rows finishing early) gives the tokens of recomputing every step;
    max_gen_toks >= L slides the window (recomputation from then on), as the direct loop does."""
    recompute = MegatronLM(lm.model, lm.tokenizer, max_length=L, micro_batch_size=4)
    recompute._kv_cache = False
    assert lm._kv_cache
    long_text = lm.tokenizer.detokenize(_words(lm, 45))
    ctxs = ["The module defines the", "Return", "Open the file and read the lines", "", long_text,
            "A path"]
    for kwargs in (dict(until=["\u2603"], max_gen_toks=7), dict(until=["__", "that"], max_gen_toks=6),
                   dict(until=["\u2603"], max_gen_toks=40)):  # rows stopping early leave the cache
        reqs = [_gen_req(c, **kwargs) for c in ctxs]
        rows = (lm.forward_rows, recompute.forward_rows)
        got = lm.generate_until(reqs)
        assert got == recompute.generate_until(reqs)
        assert lm.forward_rows - rows[0] == recompute.forward_rows - rows[1]
    max_gen = 40  # the sliding window: contexts cut to L, then each step reads the last L tokens
    for ctx, text in zip(ctxs[:3], got[:3]):
        ids = lm.tokenizer.tokenize(ctx)[-L:]
        assert text == lm.tokenizer.detokenize(_greedy_direct(lm, ids, max_gen))


@pytest.fixture
def scripted(lm):
    """Hooks on the model: next token after ` the`->` of`->` and`->` to`->EOD, anything else -> ` the`;
    the padded-vocabulary rows get logits far above every real one."""
    ids = [lm.tokenizer.tokenize(w) for w in (" the", " of", " and", " to")]
    assert all(len(i) == 1 for i in ids)
    chain = [i[0] for i in ids]
    nxt = {chain[0]: chain[1], chain[1]: chain[2], chain[2]: chain[3], chain[3]: lm.tokenizer.eod}

    def hook(module, args, out):
        tokens = args[0]
        forced = torch.full_like(out, -50.0)
        choice = tokens.clone().apply_(lambda t: nxt.get(t, chain[0]))
        forced.scatter_(2, choice.unsqueeze(-1), 50.0)
        forced[..., 8192:] = 1e6
        return forced

    handle = lm.model.register_forward_hook(hook)
    yield chain
    handle.remove()


def test_generate_stops_at_until_eod_and_max_gen_toks(lm, scripted):
    rows = lm.forward_rows
    got = lm.generate_until([_gen_req("Open a file", until=[" and"], max_gen_toks=10),
                             _gen_req("Open a file", until=["\n\n"], max_gen_toks=10),
                             _gen_req("Open a file", max_gen_toks=2),
                             _gen_req("", until=" to", max_gen_toks=10)])
    assert got == [" the of", " the of and to", " the of", " the of and"]
    assert lm.forward_rows - rows == 3 + 5 + 2 + 4  # stopped right away: EOD (5th step), stop string, length
    padded = lm.loglikelihood([_ll_req("Open a file", " the of and")])
    assert padded[0][1] is True and padded[0][0] == pytest.approx(0.0, abs=1e-3)  # never a padded id


def test_padded_vocab_never_scored(lm):
    reqs = [_ll_req("The module defines", " the following functions"), _ll_req("", " Return")]
    plain = lm.loglikelihood(reqs)
    handle = lm.model.register_forward_hook(lambda m, a, out: torch.cat([out[..., :8192], 1e6 + out[..., 8192:]], -1))
    try:
        assert lm.loglikelihood(reqs) == plain
        assert lm.loglikelihood_rolling([_roll_req("Open the file.")])[0] < 0
    finally:
        handle.remove()


# ---- batching ---------------------------------------------------------------------------------------------------
def test_adaptive_and_fixed_padding_agree(lm):
    fixed = _fixed(lm)
    reqs = [_ll_req("The module", " defines"), _ll_req("Return the path of the file that", " was opened"),
            _ll_req("", " A"), _ll_req(lm.tokenizer.detokenize(_words(lm, 40)), " the end"),
            _ll_req("Open", " the file and read the lines of it one by one")]
    a, f = lm.loglikelihood(reqs), fixed.loglikelihood(reqs)
    assert [g for _, g in a] == [g for _, g in f]
    assert [x for x, _ in a] == pytest.approx([x for x, _ in f], abs=1e-4)  # other matmul shapes: fp32 rounding
    texts = [_roll_req(lm.tokenizer.detokenize(_words(lm, n))) for n in (3, 31, 33, 70)]
    assert lm.loglikelihood_rolling(texts) == pytest.approx(fixed.loglikelihood_rolling(texts), abs=1e-4)
    gens = [_gen_req(c, until=["."], max_gen_toks=4) for c in ("The module", "Return the path of the", "A")]
    assert lm.generate_until(gens) == fixed.generate_until(gens)


def test_registered_as_megatron(ckpt):
    from lm_eval.api.registry import get_model

    assert get_model("megatron") is MegatronLM
    built = MegatronLM.create_from_arg_string(f"load={ckpt},micro_batch_size=2", {"batch_size": 5, "device": "cpu"})
    assert built.batch_size == 5 and built.max_length == L and built.info["iteration"] == 6


# ---- command line -----------------------------------------------------------------------------------------------
CHOICE_DOCS = [
    {"text": "The module defines", "choices": ["the following functions", "banana bread"], "label": 0},
    {"text": "Return the", "choices": ["path", "purple", "of"], "label": 0},
    {"text": "Open the file and", "choices": ["read it", "the the the"], "label": 1},
    {"text": "This function returns", "choices": ["a list", "seventeen elephants"], "label": 0},
    {"text": "Raise an", "choices": ["exception", "umbrella"], "label": 0},
]
PPL_DOCS = [{"text": "The module defines the following functions and classes for working with files."},
            {"text": "Return the path of the directory. " * 6},
            {"text": "Open a file."}]
GEN_DOCS = [{"text": "The module defines the", "answer": " following"}, {"text": "Return the", "answer": " path"}]


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("lm_eval_tasks")
    for name, docs in (("choice", CHOICE_DOCS), ("ppl", PPL_DOCS), ("gen", GEN_DOCS)):
        (root / f"{name}.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    head = "dataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {}\ntest_split: test\n"
    (root / "tiny_choice.yaml").write_text(
        "task: tiny_choice\n" + head.format(root / "choice.jsonl") + "output_type: multiple_choice\n"
        "doc_to_text: '{{text}}'\ndoc_to_choice: '{{choices}}'\ndoc_to_target: label\n"
        "metric_list:\n  - metric: acc\n  - metric: acc_norm\nmetadata:\n  version: 1.0\n")
    (root / "tiny_ppl.yaml").write_text(
        "task: tiny_ppl\n" + head.format(root / "ppl.jsonl") + "output_type: loglikelihood_rolling\n"
        "doc_to_text: ''\ndoc_to_target: '{{text}}'\n"
        "metric_list:\n  - metric: word_perplexity\n  - metric: byte_perplexity\n  - metric: bits_per_byte\n"
        "metadata:\n  version: 1.0\n")
    (root / "tiny_gen.yaml").write_text(
        "task: tiny_gen\n" + head.format(root / "gen.jsonl") + "output_type: generate_until\n"
        "doc_to_text: '{{text}}'\ndoc_to_target: '{{answer}}'\ntarget_delimiter: ''\n"
        "generation_kwargs:\n  until: ['.', \"\\n\"]\n  max_gen_toks: 3\n  do_sample: false\n"
        "metric_list:\n  - metric: exact_match\nmetadata:\n  version: 1.0\n")
    return str(root)


def _cli(ckpt: str, task_dir: str, out: str, *extra: str) -> list[str]:
    return ["--load", ckpt, "--task_list", "tiny_choice,tiny_ppl,tiny_gen", "--include_path", task_dir,
            "--results_path", out, "--micro-batch-size", "3", "--bootstrap_iters", "0", *extra]


@pytest.fixture(scope="module")
def one_rank(ckpt, task_dir, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("results") / "one.json"
    assert harness.main(_cli(ckpt, task_dir, str(out), "--adaptive_seq_len", "--eval_fp32")) == 0
    return json.loads(out.read_text())


def test_cli_results_as_lm_eval_writes_them(one_rank, lm):
    res = one_rank["results"]
    assert set(res) == {"tiny_choice", "tiny_ppl", "tiny_gen"}
    for key in ("configs", "versions", "n-shot", "higher_is_better", "n-samples", "config"):
        assert key in one_rank
    assert one_rank["n-shot"]["tiny_choice"] == 0 and one_rank["config"]["megatron"]["iteration"] == 6
    # multiple choice: argmax over the choices' log-likelihoods (" " + choice after the text), as the adapter gives
    correct = 0
    for doc in CHOICE_DOCS:
        scores = [lp for lp, _ in lm.loglikelihood([_ll_req(doc["text"], " " + c) for c in doc["choices"]])]
        correct += int(max(range(len(scores)), key=scores.__getitem__) == doc["label"])
    assert res["tiny_choice"]["acc,none"] == pytest.approx(correct / len(CHOICE_DOCS))
    assert 0.0 <= res["tiny_choice"]["acc_norm,none"] <= 1.0
    # rolling perplexity: exp(-sum ll / sum words), words split on whitespace as lm-eval counts them
    lls = lm.loglikelihood_rolling([_roll_req(d["text"]) for d in PPL_DOCS])
    words = sum(len(re.split(r"\s+", d["text"])) for d in PPL_DOCS)
    assert res["tiny_ppl"]["word_perplexity,none"] == pytest.approx(math.exp(-sum(lls) / words), rel=1e-4)
    assert res["tiny_gen"]["exact_match,none"] in (0.0, 0.5, 1.0)


def test_two_ranks_equal_one(one_rank, ckpt, task_dir, tmp_path):
    out = tmp_path / "two.json"
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
           str(REPO / "tasks" / "eval_harness" / "evaluate.py"),
           *_cli(ckpt, task_dir, str(out), "--adaptive_seq_len", "--eval_fp32")]
    env = {**subprocess_env(), "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = json.loads(out.read_text())
    assert two["results"] == one_rank["results"]
    assert two["config"]["megatron"]["data_parallel_size"] == 2
    assert proc.stdout.count("evaluate: global_step6") == 1  # rank 0 alone reports


def test_bad_input_is_one_error_line(ckpt, task_dir, tmp_path, capsys, monkeypatch):
    def status(argv):
        capsys.readouterr()
        code = harness.main(argv)
        err = capsys.readouterr().err.strip().splitlines()
        return code, err

    code, err = status(["--load", str(tmp_path / "nope"), "--task_list", "tiny_ppl", "--include_path", task_dir])
    assert code == 2 and len(err) == 1 and err[0].startswith("error: --load") and "not found" in err[0]
    code, err = status(["--load", ckpt, "--task_list", "tiny_ppl", "--micro-batch-size", "0"])
    assert code == 2 and err == ["error: --micro-batch-size must be >= 1, got 0"]
    code, err = status(["--load", ckpt, "--task_lst", "x"])
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ")

    class FakeIndex:  # lm-eval's full task index takes ~20 s to build: a stand-in with two names
        def __init__(self, include_path=None, include_defaults=True):
            self.all_tasks = ["tiny_ppl"] + (["hellaswag", "lambada_openai"] if include_defaults else [])

    import lm_eval.tasks

    monkeypatch.setattr(lm_eval.tasks, "TaskManager", FakeIndex)
    code, err = status(["--load", ckpt, "--task_list", "tiny_ppl,hellaswg", "--include_path", task_dir])
    assert code == 2 and len(err) == 1
    assert "unknown lm-eval task(s): hellaswg (did you mean hellaswag?)" in err[0]


def test_bf16_rope_checkpoint(gpt_data_prefix, tmp_path):
    """A bf16, rotary-position checkpoint: scored in bf16 as trained (log-softmax in fp32), or in fp32."""
    from megatron.cli import pretrain_from_argv
    from megatron.specs.gpt import GPT_SPEC

    save = tmp_path / "ckpt"
    pretrain_from_argv(GPT_SPEC, gpt_argv(gpt_data_prefix, train_iters=2, lr_warmup_iters=0, save=save, bf16=True,
                                          position_embedding_type="rope", eval_iters=1))
    bf16 = MegatronLM.from_checkpoint(str(save), micro_batch_size=2, device="cpu")
    fp32 = MegatronLM.from_checkpoint(str(save), micro_batch_size=2, device="cpu", eval_fp32=True)
    assert next(bf16.model.parameters()).dtype == torch.bfloat16
    assert next(fp32.model.parameters()).dtype == torch.float32 and fp32.info["precision"] == "float32"
    reqs = [_ll_req("The module defines", " the following functions"), _ll_req("", " Open the file")]
    got, ref = bf16.loglikelihood(reqs), fp32.loglikelihood(reqs)
    ids = bf16.tokenizer.tokenize("The module defines the following functions")
    cut = len(bf16.tokenizer.tokenize("The module defines"))
    assert got[0][0] == pytest.approx(_direct(bf16, ids[:-1], ids[cut:])[0], abs=1e-3)
    assert [x for x, _ in got] == pytest.approx([x for x, _ in ref], rel=3e-2)
    assert len(bf16.generate_until([_gen_req("Open the", max_gen_toks=3)])) == 1
