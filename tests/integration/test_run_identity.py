"""Resume refuses another model/tokenizer/data layout; --save refuses another run's directory; eval_gpt refuses a
tokenizer override that differs from the checkpoint's (megatron/training/run_identity.py)."""
from __future__ import annotations

import json
import shutil

import pytest

from conftest import MERGES, VOCAB, _load_tool
from megatron.cli import pretrain_from_argv
from megatron.specs.gpt import GPT_SPEC
from megatron.training.orchestration import UsageError
from megatron.training.run_identity import differences, identity_of

eval_gpt = _load_tool("eval_gpt")


def run(argv: list[str]):
    """Run pretrain in this process and return its TrainResult."""
    return pretrain_from_argv(GPT_SPEC, argv)


@pytest.fixture(scope="module")
def base_ckpt(gpt_data_prefix, tmp_path_factory):
    """A 2-step run (4 heads) saved once; tests copy it before writing."""
    from conftest import gpt_argv

    ckpt = tmp_path_factory.mktemp("identity") / "ckpt"
    run(gpt_argv(gpt_data_prefix, train_iters=2, save=ckpt, split="90,5,5", lr_warmup_iters=0,
                 lr_decay_iters=4))
    return ckpt


@pytest.fixture
def make_argv(gpt_data_prefix):
    """conftest's tiny GPT flags, without LR warmup (runs of 1-2 steps)."""
    from conftest import gpt_argv

    return lambda **flags: gpt_argv(gpt_data_prefix, **{"lr_warmup_iters": 0, "lr_decay_iters": 4, **flags})


@pytest.fixture
def ckpt(base_ckpt, tmp_path):
    copy = tmp_path / "ckpt"
    shutil.copytree(base_ckpt, copy)
    return copy


def _error(argv: list[str]) -> str:
    with pytest.raises(UsageError) as info:
        run(argv)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_resume_with_other_heads_is_one_error(make_argv, ckpt):
    message = _error(make_argv(train_iters=4, load=ckpt, save=ckpt, split="90,5,5", num_attention_heads=2))
    assert "--num-attention-heads: checkpoint 4, this run 2" in message and str(ckpt) in message
    assert (ckpt / "latest").read_text().strip() == "global_step2"  # nothing written


@pytest.mark.parametrize("flags, named", [
    ({"seed": 7}, "--seed: checkpoint 1234, this run 7"),
    ({"split": "80,10,10"}, "--split: checkpoint '90,5,5', this run '80,10,10'"),
    ({"position_embedding_type": "rope"}, "--position-embedding-type: checkpoint 'learned_absolute'"),
])
def test_resume_with_other_data_or_model_layout_refused(make_argv, ckpt, flags, named):
    base = {"split": "90,5,5", **flags}
    assert named in _error(make_argv(train_iters=4, load=ckpt, save=ckpt, **base))


def test_resume_with_legitimately_changed_flags_works(make_argv, ckpt):
    result = run(make_argv(train_iters=4, load=ckpt, save=ckpt, split="90,5,5", log_interval=2, eval_interval=3,
                           micro_batch_size=2, lr=1e-3, override_opt_param_scheduler=True))
    assert result.iterations[-1] == 4 and (ckpt / "latest").read_text().strip() == "global_step4"


def test_finetune_keeps_its_own_rules(make_argv, ckpt, tmp_path):
    result = run(make_argv(train_iters=1, load=ckpt, save=tmp_path / "ft", finetune=True, split="80,10,10"))
    assert result.iterations == [1]


def test_save_into_another_runs_dir(make_argv, ckpt):
    message = _error(make_argv(train_iters=1, save=ckpt, num_attention_heads=2))
    assert f"--save {ckpt} holds another run's checkpoint (global_step2)" in message
    assert "--num-attention-heads: checkpoint 4, this run 2" in message and "--overwrite-save" in message
    assert (ckpt / "latest").read_text().strip() == "global_step2"
    run(make_argv(train_iters=1, save=ckpt, num_attention_heads=2, overwrite_save=True))
    assert (ckpt / "latest").read_text().strip() == "global_step1"


def test_save_same_model_without_load_refused(make_argv, ckpt, tmp_path):
    message = _error(make_argv(train_iters=1, save=ckpt, split="90,5,5"))
    assert f"--save {ckpt} already holds checkpoint global_step2" in message and "backwards" in message
    # --load of another directory (here: none there, a fresh start) does not make it a resume either
    assert "already holds" in _error(make_argv(train_iters=1, save=ckpt, load=tmp_path / "empty", split="90,5,5"))
    run(make_argv(train_iters=3, save=ckpt, load=ckpt, split="90,5,5", override_opt_param_scheduler=True))
    assert (ckpt / "latest").read_text().strip() == "global_step3"


def test_eval_gpt_tokenizer_override(ckpt, tmp_path):
    same = tmp_path / "same_vocab.json"
    shutil.copy(VOCAB, same)
    vocab = json.loads(VOCAB.read_text(encoding="utf-8"))
    tokens = sorted(vocab, key=vocab.get)
    vocab[tokens[300]], vocab[tokens[301]] = vocab[tokens[301]], vocab[tokens[300]]  # same size, other ids
    other = tmp_path / "other_vocab.json"
    other.write_text(json.dumps(vocab), encoding="utf-8")

    assert eval_gpt.run(["--load", str(ckpt), "--vocab-file", str(same), "--merge-file", str(MERGES)])["valid"]
    with pytest.raises(eval_gpt.EvalError, match="--vocab-file: checkpoint .*--allow-tokenizer-override"):
        eval_gpt.run(["--load", str(ckpt), "--vocab-file", str(other)])
    with pytest.raises(eval_gpt.EvalError, match="--tokenizer-type: checkpoint 'GPT2BPETokenizer'"):
        eval_gpt.run(["--load", str(ckpt), "--tokenizer-type", "NullTokenizer"])
    assert eval_gpt.main(["--load", str(ckpt), "--vocab-file", str(other)]) == 2
    assert eval_gpt.run(["--load", str(ckpt), "--vocab-file", str(other), "--allow-tokenizer-override"])["valid"]


def test_identity_rules():
    args = {"num_layers": 2, "hidden_size": 32, "num_attention_heads": 4, "seq_length": 32,
            "data_path": ["/old/place/docs_text_document"], "split": "949, 50, 1", "seed": 1,
            "use_rotary_position_embeddings": True, "rope_theta": 10000}
    old = identity_of(args, files=False)  # a checkpoint written before run_identity was stored
    moved = dict(args, data_path=["/new/place/docs_text_document"], split="949,50,1", ffn_hidden_size=128,
                 position_embedding_type="rope", vocab_file="/anywhere/vocab.json")
    assert differences(old, identity_of(moved, padded_vocab_size=8192)) == []  # moved data, same effective flags
    assert differences(old, identity_of(dict(moved, ffn_hidden_size=64))) == [("ffn_hidden_size", 128, 64)]
    assert differences(identity_of(args, padded_vocab_size=8192), identity_of(args, padded_vocab_size=8320)) == [
        ("padded_vocab_size", 8192, 8320)]
