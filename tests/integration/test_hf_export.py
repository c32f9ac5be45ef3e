"""tools/convert_checkpoint_to_hf.py: GPT checkpoints (learned positions -> GPT-2, rotary -> GPT-NeoX; ZeRO-3, bf16,
random-LTD) exported to transformers give our logits (fp32), our token ids and our greedy continuation; bad input is
one error line; lm-eval's own `hf` model on the export gives our adapter's numbers on the offline tasks."""
from __future__ import annotations

import json
import math
import os

import pytest
import torch

from conftest import LTD_JSON, _load_tool, gpt_argv

transformers = pytest.importorskip("transformers")

# learned: make-vocab-size-divisible-by 100 pads the 8192 ids to 8200 rows (the export keeps 8192). The two
# models of the lm-eval cross-check read 256 tokens: lm-eval's `hf` model refuses a continuation longer than the
# model (corpus_choice's sentences reach ~120 tokens).
LONG = {"seq_length": 256, "max_position_embeddings": 256}
CASES = {
    "learned-padded-vocab": ({"make_vocab_size_divisible_by": 100, **LONG}, "GPT2LMHeadModel"),
    "rope-bf16-zero3": ({"position_embedding_type": "rope", "bf16": True, "zero_stage": 3, **LONG},
                        "GPTNeoXForCausalLM"),
    "rope-random-ltd": ({"position_embedding_type": "rope", "zero_stage": 1, "num_layers": 3, "random_ltd": True},
                        "GPTNeoXForCausalLM"),
}
TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "def add(a, b):\n    return a + b\n",
    "unicode: héllo wörld — 日本語のテキスト 🎉👍🏽 Ελληνικά",
    "the literal <|endoftext|> stays plain text",
    "  two leading spaces\tand a tab",
]

tool = _load_tool("convert_checkpoint_to_hf")


@pytest.fixture(scope="module")
def checkpoints(gpt_data_prefix, tmp_path_factory) -> dict[str, str]:
    """One tiny checkpoint per case, trained 3 steps in-process."""
    from megatron.cli import pretrain_from_argv
    from megatron.specs.gpt import GPT_SPEC

    root = tmp_path_factory.mktemp("hf_export")
    out = {}
    for name, (flags, _) in CASES.items():
        flags = dict(flags)
        if flags.get("random_ltd"):
            js = root / "ltd.json"
            js.write_text(json.dumps(LTD_JSON))
            flags.update(deepspeed_config=js, no_pipeline_parallel=True)
        save = root / name
        pretrain_from_argv(GPT_SPEC, gpt_argv(gpt_data_prefix, train_iters=3, save=save, **flags))
        out[name] = str(save)
    return out


@pytest.fixture(scope="module")
def exported(checkpoints, tmp_path_factory) -> dict[str, str]:
    """Each checkpoint exported through the CLI entry (fp32 weights)."""
    root = tmp_path_factory.mktemp("hf_dirs")
    out = {}
    for name, ckpt in checkpoints.items():
        assert tool.main(["--load", ckpt, "--output", str(root / name)]) == 0
        out[name] = str(root / name)
    assert sorted(os.listdir(root)) == sorted(CASES)  # no temporary directory left behind
    return out


def _ours(ckpt: str):
    from megatron.inference import load_for_inference

    return load_for_inference(ckpt, dtype=torch.float32)


@pytest.mark.parametrize("case", list(CASES))
def test_exported_logits_equal_ours(checkpoints, exported, case):
    loaded = _ours(checkpoints[case])
    tok = loaded.tokenizer
    model = transformers.AutoModelForCausalLM.from_pretrained(exported[case], dtype=torch.float32).eval()
    cfg = model.config
    assert type(model).__name__ == CASES[case][1]
    assert cfg.vocab_size == tok.vocab_size == 8192  # the real vocabulary, not the padded one
    assert loaded.config.model.padded_vocab_size == (8200 if case.startswith("learned") else 8192)
    assert cfg.eos_token_id == cfg.bos_token_id == tok.eod == model.generation_config.eos_token_id
    assert model.get_output_embeddings().weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    if case.startswith("rope"):
        assert cfg.use_parallel_residual is False and cfg.rope_parameters["partial_rotary_factor"] == 1.0
    summary = json.loads(open(os.path.join(exported[case], "megatron_export.json")).read())
    assert summary["iteration"] == 3 and summary["padded_vocab_size"] == loaded.config.model.padded_vocab_size

    full = loaded.config.model.max_position_embeddings  # a random sequence of the model's whole length too
    seqs = [tok.tokenize(t)[:full] for t in TEXTS]
    seqs.append(torch.randint(0, tok.vocab_size, (full,), generator=torch.Generator().manual_seed(0)).tolist())
    with torch.no_grad():
        for ids in seqs:
            x = torch.tensor([ids])
            ours = loaded.model(x)[..., :tok.vocab_size]  # [1, s, V]
            theirs = model(input_ids=x).logits  # [1, s, V]
            assert theirs.shape == ours.shape
            assert (theirs - ours).abs().max().item() <= 1e-4
        # a batch of two, the HF way (right padding + attention mask): the real positions still match
        a, b = seqs[0], seqs[2]
        n = max(len(a), len(b))
        x = torch.tensor([a + [tok.eod] * (n - len(a)), b + [tok.eod] * (n - len(b))])
        mask = torch.tensor([[1] * len(a) + [0] * (n - len(a)), [1] * len(b) + [0] * (n - len(b))])
        theirs = model(input_ids=x, attention_mask=mask).logits
        for row, ids in enumerate((a, b)):
            ours = loaded.model(torch.tensor([ids]))[0, :, :tok.vocab_size]
            assert (theirs[row, :len(ids)] - ours).abs().max().item() <= 1e-4

        # greedy generation: HF generate == argmax loop over our model (no padded id can be chosen)
        prompt = tok.tokenize("import os\n")
        gen = model.generate(torch.tensor([prompt]), max_new_tokens=6, do_sample=False, eos_token_id=None,
                             pad_token_id=tok.eod)[0, len(prompt):].tolist()
        ids = list(prompt)
        for _ in range(6):
            ids.append(int(loaded.model(torch.tensor([ids]))[0, -1, :tok.vocab_size].argmax()))
        assert gen == ids[len(prompt):]


def test_exported_tokenizer_gives_our_ids(checkpoints, exported):
    loaded = _ours(checkpoints["learned-padded-vocab"])
    ours = loaded.tokenizer
    hf = transformers.AutoTokenizer.from_pretrained(exported["learned-padded-vocab"])
    assert "GPT2" not in type(hf).__name__  # never the 5.x GPT2TokenizerFast that encodes to []
    assert hf.eos_token_id == hf.bos_token_id == hf.pad_token_id == ours.eod and len(hf) == ours.vocab_size
    for text in TEXTS + ["", " ", "\n\n\n", "naïve café ß ﬁ Ⅻ ½ \u200b zero-width", "x" * 300]:
        ids = hf(text, add_special_tokens=False, verbose=False)["input_ids"]
        assert ids == ours.tokenize(text), text
        assert hf.decode(ids) == ours.detokenize(ids) == text
    assert hf.decode([ours.eod]) == "<|endoftext|>"


def test_bf16_weights(checkpoints, tmp_path):
    out = tmp_path / "hf_bf16"
    summary = tool.convert(checkpoints["rope-bf16-zero3"], str(out), dtype="bfloat16")
    assert summary["dtype"] == "bfloat16" and summary["max_abs_logit_diff_fp32"] <= 1e-4
    model = transformers.AutoModelForCausalLM.from_pretrained(str(out))
    assert model.dtype == torch.bfloat16
    from megatron.inference import load_for_inference

    ours = load_for_inference(checkpoints["rope-bf16-zero3"])  # trained in bf16: loads in bf16
    emb = ours.model.embedding.word_embeddings.weight[:8192]
    assert torch.equal(model.get_input_embeddings().weight, emb)


def test_bad_input(checkpoints, tmp_path, capsys, monkeypatch):
    def error_of(argv):
        assert tool.main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: "), err
        return err[0]

    src = checkpoints["learned-padded-vocab"]
    assert "directory not found" in error_of(["--load", str(tmp_path / "nope"), "--output", str(tmp_path / "o")])
    exists = tmp_path / "exists"
    exists.mkdir()
    assert "already exists" in error_of(["--load", src, "--output", str(exists)])

    # a BERT checkpoint (the family recorded in the checkpoint) is not exported
    bert = tmp_path / "bert"
    (bert / "global_step3").mkdir(parents=True)
    (bert / "latest").write_text("global_step3")
    states = torch.load(os.path.join(src, "global_step3", "mp_rank_00_model_states.pt"), weights_only=True)
    states["model_family"] = "bert"
    torch.save(states, bert / "global_step3" / "mp_rank_00_model_states.pt")
    assert "a bert checkpoint cannot be loaded as a gpt model" in error_of(
        ["--load", str(bert), "--output", str(tmp_path / "o")])

    # a mapping that does not reproduce our model is refused and leaves nothing behind
    monkeypatch.setattr(tool, "qkv_to_gpt2", lambda w, b, n: (w.t().contiguous(), b))  # q|k|v order not fixed
    assert "does not reproduce our logits" in error_of(["--load", src, "--output", str(tmp_path / "o")])
    monkeypatch.undo()
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".o") or p == "o"]

    monkeypatch.setitem(__import__("sys").modules, "transformers", None)  # not installed
    assert "pip install -e .[hf]" in error_of(["--load", src, "--output", str(tmp_path / "o")])


# -- issue 11 item 5: lm-eval's `hf` model on the export == our adapter, on the offline tasks -------------------

def _numbers(results: dict) -> dict[tuple[str, str], float]:
    out = {}
    for task, metrics in results["results"].items():
        for key, value in metrics.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and "stderr" not in key:
                out[(task, key)] = float(value)
    return out


def _responses(results: dict) -> dict[tuple[str, int], list]:
    """(task, doc_id) -> the flat list of the model's answers: log-likelihoods, is_greedy flags, generated text."""
    out = {}
    for task, samples in results["samples"].items():
        for sample in samples:
            flat = []
            for resp in sample["filtered_resps"]:
                flat.extend(resp if isinstance(resp, (list, tuple)) else [resp])
            out[(task, sample["doc_id"])] = flat
    return out


def _close(x, y) -> bool:
    if isinstance(x, float) or isinstance(y, float):
        return math.isclose(float(x), float(y), rel_tol=1e-5, abs_tol=1e-4)
    return x == y


@pytest.mark.parametrize("case", ["learned-padded-vocab", "rope-bf16-zero3"])
def test_lm_eval_hf_matches_our_adapter(checkpoints, exported, tmp_path, case):
    pytest.importorskip("accelerate")  # lm-eval's hf backend needs it (the optional hf extra)
    import lm_eval

    from tasks.eval_harness import evaluate
    from tasks.eval_harness import offline_tasks as offline
    from lm_eval.tasks import TaskManager

    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    task_dir = tmp_path / "tasks"
    names = offline.build_offline_tasks(str(task_dir), num_docs=6)
    ours = evaluate.MegatronLM.from_checkpoint(checkpoints[case], micro_batch_size=4, eval_fp32=True)
    max_length = int(getattr(ours, "max_length", 256))
    tasks = TaskManager(include_path=str(task_dir), include_defaults=False)  # skips indexing lm-eval's ~10k YAMLs

    def run(model, model_args=None):
        return lm_eval.simple_evaluate(model=model, model_args=model_args, tasks=list(names), num_fewshot=0,
                                       task_manager=tasks, batch_size=4, device="cpu", random_seed=0,
                                       numpy_random_seed=0, torch_random_seed=0, fewshot_random_seed=0,
                                       log_samples=True, bootstrap_iters=0)

    a, b = run(ours), run("hf", f"pretrained={exported[case]},dtype=float32,max_length={max_length}")
    # every request's answer: per-choice/per-target log-likelihoods, greedy flags, generated strings
    ra, rb = _responses(a), _responses(b)
    assert set(ra) == set(rb) and {task for task, _ in ra} == set(names)
    for key in ra:
        assert len(ra[key]) == len(rb[key]) and all(map(_close, ra[key], rb[key])), (key, ra[key], rb[key])
    assert any(isinstance(x, str) and x.strip() for v in ra.values() for x in v)  # something was generated
    # and the task metrics
    na, nb = _numbers(a), _numbers(b)
    assert set(na) == set(nb) and len(na) >= len(names)
    for key in na:
        assert math.isclose(na[key], nb[key], rel_tol=1e-4, abs_tol=1e-6), (key, na[key], nb[key])
