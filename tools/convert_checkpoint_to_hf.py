"""Export a GPT checkpoint written by pretrain_gpt.py to a Hugging Face `transformers` model directory.

    python tools/convert_checkpoint_to_hf.py --load runs/quickstart/checkpoint --output runs/quickstart/hf \\
        [--load-tag global_step1000] [--dtype float32|bfloat16]

    # then, with any HF tool:
    python -m lm_eval --model hf --model_args pretrained=runs/quickstart/hf,dtype=float32 --device cpu ...

Any checkpoint this framework writes is read (ZeRO 0-3, fp32/bf16, random-LTD-trained) through
``megatron.inference.load_for_inference`` in fp32. The directory holds ``config.json``, the weights
(safetensors), ``generation_config.json`` and the tokenizer (``tokenizer.json`` + ``tokenizer_config.json``).
It is written under a temporary name next to ``--output`` and renamed at the end, so ``--output`` either does not
exist or is complete; an existing ``--output`` is refused (remove it first).

Architecture mapping (our GPTModel -> transformers):
  * learned absolute positions -> ``GPT2LMHeadModel``. Both are pre-LayerNorm, biases everywhere, tied output
    layer, scale 1/sqrt(head_dim). ``activation_function="gelu"`` (exact erf GELU, as our ``F.gelu``; GPT-2's
    default ``gelu_new`` is the tanh approximation). GPT-2's ``Conv1D`` stores weights as [in, out], so every
    linear weight is transposed, and its fused qkv output is ordered (q|k|v, head, dim) whereas ours is
    (head, q|k|v, dim): the qkv rows are permuted.
  * rotary positions -> ``GPTNeoXForCausalLM`` with ``use_parallel_residual=False`` (sequential pre-LN residuals,
    ours), ``rotary_pct``/``partial_rotary_factor = 1.0`` (we rotate the whole head), ``rope_theta`` = our
    ``--rotary-position-embeddings-theta``, rotate-half pairing and ``inv_freq = base^(-2i/d)`` (both ours),
    LayerNorm, exact GELU, biases, ``tie_word_embeddings=True``. NeoX's fused qkv has our (head, q|k|v, dim)
    layout, so its weights are copied unchanged. (Llama-style models would need RMSNorm, SwiGLU and no biases:
    they do not match.)
  Anything else (another model family, a non-GPT-2-BPE tokenizer, parameters this mapping does not know) is an
  ``error:`` line. After building the HF model the tool runs both models on a probe batch and refuses to write
  the directory unless the logits agree (fp32), so a layout drift cannot produce a silently wrong export.

Vocabulary: the exported model has the REAL vocabulary (``tokenizer.vocab_size`` rows), not our padded one. The
output layer is tied to the word embeddings and each logit is the dot product with one row, so dropping the
padding rows leaves every real logit unchanged; it only removes ids the tokenizer never produces. That is
also what our lm-eval adapter does (it trims logits to the real vocabulary before the log-softmax), so
log-probabilities from HF tools equal ours, and HF generation can never pick a padding id. Our padded logits
restricted to ``[:vocab_size]`` equal the exported model's logits.

Context length: the config's ``n_positions`` (GPT-2) / ``max_position_embeddings`` (NeoX) is our
--max-position-embeddings (the position table's rows); the tokenizer's ``model_max_length`` is the training
--seq-length. lm-eval's ``hf`` model takes its context from the model config, our adapter from --seq-length: they
agree when the two flags are equal (the usual setup); otherwise pass ``max_length=SEQ`` in lm-eval's model_args.

Tokenizer: GPT-2 byte-level BPE from the checkpoint's --vocab-file/--merge-file, built as a ``tokenizers``
object (``transformers`` 5.x's ``GPT2TokenizerFast(vocab_file=..., merges_file=...)`` silently encodes every
text to ``[]``), no prefix space; bos = eos = pad = our EOD token (``<|endoftext|>``), in the tokenizer and in
the model/generation config. ``split_special_tokens=True``: like our tokenizer, the literal text
"<|endoftext|>" is encoded as ordinary characters, never as the EOD id. The tool reloads the directory with
``AutoTokenizer`` and checks it gives our ids on sample texts before renaming it into place.

``transformers`` is an optional extra: ``pip install -e .[hf]`` (lm-eval's ``hf`` model also needs
``accelerate``, in the same extra). Bad input: one ``error: ...`` line on stderr, exit status 2.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from typing import Any, Sequence

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), os.path.pardir)))  # run from a checkout

import torch  # noqa: E402

TOKENIZER_PROBES = (
    "Hello, world! The quick brown fox jumps over the lazy dog.",
    "  leading spaces, tabs\tand\nnewlines\n\n",
    "def f(x):\n    return x ** 2  # comment",
    "unicode: héllo wörld — ünïcödé, 日本語のテキスト, emoji 🎉👍🏽, Ελληνικά",
    "the literal <|endoftext|> is plain text",
    "",
)
"""Texts on which the exported tokenizer must give exactly our ids."""

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


class ExportError(ValueError):
    """Bad input for the export (not a GPT checkpoint, unsupported layout, missing extra); one line."""


def import_transformers() -> Any:
    """The `transformers` module, or ExportError telling how to install the optional extra."""
    try:
        import transformers
    except ImportError as e:
        raise ExportError(f"the Hugging Face export needs `transformers` ({e}); install the extra: "
                          "pip install -e .[hf]") from None
    return transformers


# -- the mapping ------------------------------------------------------------------------------------------------

def expected_keys(num_layers: int, learned_positions: bool) -> set[str]:
    """Every parameter name our GPTModel has for this shape (the mapping below covers exactly these)."""
    keys = {"embedding.word_embeddings.weight", "encoder.final_layernorm.weight", "encoder.final_layernorm.bias"}
    if learned_positions:
        keys.add("embedding.position_embeddings.weight")
    for i in range(num_layers):
        for sub in ("input_layernorm", "post_attention_layernorm", "self_attention.query_key_value",
                    "self_attention.dense", "mlp.dense_h_to_4h", "mlp.dense_4h_to_h"):
            keys.update((f"encoder.layers.{i}.{sub}.weight", f"encoder.layers.{i}.{sub}.bias"))
    return keys


def qkv_to_gpt2(weight: torch.Tensor, bias: torch.Tensor, num_heads: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Our fused qkv Linear (rows ordered head, q|k|v, dim) -> GPT-2's c_attn Conv1D ([in, out], q|k|v, head, dim)."""
    out, hidden = weight.shape
    head_dim = out // (3 * num_heads)
    w = weight.reshape(num_heads, 3, head_dim, hidden).transpose(0, 1).reshape(out, hidden)  # [3h, h]
    b = bias.reshape(num_heads, 3, head_dim).transpose(0, 1).reshape(out)  # [3h]
    return w.t().contiguous(), b.contiguous()


def gpt2_state_dict(sd: dict[str, torch.Tensor], num_layers: int, num_heads: int,
                    vocab: int) -> dict[str, torch.Tensor]:
    """Our GPTModel state dict -> GPT2LMHeadModel's (lm_head tied, not listed)."""
    out = {"transformer.wte.weight": sd["embedding.word_embeddings.weight"][:vocab],
           "transformer.wpe.weight": sd["embedding.position_embeddings.weight"],
           "transformer.ln_f.weight": sd["encoder.final_layernorm.weight"],
           "transformer.ln_f.bias": sd["encoder.final_layernorm.bias"]}
    for i in range(num_layers):
        src, dst = f"encoder.layers.{i}.", f"transformer.h.{i}."
        for a, b in (("input_layernorm", "ln_1"), ("post_attention_layernorm", "ln_2")):
            out[dst + b + ".weight"], out[dst + b + ".bias"] = sd[src + a + ".weight"], sd[src + a + ".bias"]
        out[dst + "attn.c_attn.weight"], out[dst + "attn.c_attn.bias"] = qkv_to_gpt2(
            sd[src + "self_attention.query_key_value.weight"], sd[src + "self_attention.query_key_value.bias"],
            num_heads)
        for a, b in (("self_attention.dense", "attn.c_proj"), ("mlp.dense_h_to_4h", "mlp.c_fc"),
                     ("mlp.dense_4h_to_h", "mlp.c_proj")):
            out[dst + b + ".weight"] = sd[src + a + ".weight"].t().contiguous()  # Conv1D: [in, out]
            out[dst + b + ".bias"] = sd[src + a + ".bias"]
    return out


def neox_state_dict(sd: dict[str, torch.Tensor], num_layers: int, vocab: int) -> dict[str, torch.Tensor]:
    """Our GPTModel state dict (rotary) -> GPTNeoXForCausalLM's (lm_head tied, not listed)."""
    out = {"gpt_neox.embed_in.weight": sd["embedding.word_embeddings.weight"][:vocab],
           "gpt_neox.final_layer_norm.weight": sd["encoder.final_layernorm.weight"],
           "gpt_neox.final_layer_norm.bias": sd["encoder.final_layernorm.bias"]}
    for i in range(num_layers):
        src, dst = f"encoder.layers.{i}.", f"gpt_neox.layers.{i}."
        for a, b in (("input_layernorm", "input_layernorm"), ("post_attention_layernorm", "post_attention_layernorm"),
                     ("self_attention.query_key_value", "attention.query_key_value"),
                     ("self_attention.dense", "attention.dense"), ("mlp.dense_h_to_4h", "mlp.dense_h_to_4h"),
                     ("mlp.dense_4h_to_h", "mlp.dense_4h_to_h")):
            out[dst + b + ".weight"], out[dst + b + ".bias"] = sd[src + a + ".weight"], sd[src + a + ".bias"]
    return out


def hf_config(transformers: Any, model_cfg: Any, vocab: int, eod: int) -> Any:
    """The transformers config matching our TransformerConfig (GPT2Config or GPTNeoXConfig)."""
    common = {"bos_token_id": eod, "eos_token_id": eod, "pad_token_id": eod, "tie_word_embeddings": True}
    if model_cfg.position_embedding_type == "learned_absolute":
        return transformers.GPT2Config(
            vocab_size=vocab, n_positions=model_cfg.max_position_embeddings, n_embd=model_cfg.hidden_size,
            n_layer=model_cfg.num_layers, n_head=model_cfg.num_attention_heads, n_inner=model_cfg.ffn_size,
            activation_function="gelu", layer_norm_epsilon=model_cfg.layernorm_epsilon,
            resid_pdrop=model_cfg.hidden_dropout, embd_pdrop=model_cfg.hidden_dropout,
            attn_pdrop=model_cfg.attention_dropout, initializer_range=model_cfg.init_method_std,
            scale_attn_weights=True, scale_attn_by_inverse_layer_idx=False, reorder_and_upcast_attn=False,
            architectures=["GPT2LMHeadModel"], **common)
    if model_cfg.position_embedding_type == "rope":
        if model_cfg.head_dim % 2:
            raise ExportError(f"rotary head dimension {model_cfg.head_dim} is odd; no HF rotary layout matches")
        base = float(model_cfg.rotary_base)
        return transformers.GPTNeoXConfig(
            vocab_size=vocab, hidden_size=model_cfg.hidden_size, num_hidden_layers=model_cfg.num_layers,
            num_attention_heads=model_cfg.num_attention_heads, intermediate_size=model_cfg.ffn_size,
            hidden_act="gelu", max_position_embeddings=model_cfg.max_position_embeddings,
            layer_norm_eps=model_cfg.layernorm_epsilon, use_parallel_residual=False, attention_bias=True,
            hidden_dropout=model_cfg.hidden_dropout, attention_dropout=model_cfg.attention_dropout,
            initializer_range=model_cfg.init_method_std,
            # transformers >= 5 reads rope_parameters; 4.x reads rotary_pct / rotary_emb_base.
            rope_parameters={"rope_type": "default", "rope_theta": base, "partial_rotary_factor": 1.0},
            rotary_pct=1.0, rotary_emb_base=base, architectures=["GPTNeoXForCausalLM"], **common)
    raise ExportError(f"position embedding type {model_cfg.position_embedding_type!r} has no HF architecture "
                      "mapping (supported: learned_absolute -> GPT-2, rope -> GPT-NeoX)")


def build_hf_model(transformers: Any, loaded: Any, vocab: int) -> Any:
    """A transformers causal LM in fp32 holding the checkpoint's weights."""
    cfg = loaded.config.model
    learned = cfg.position_embedding_type == "learned_absolute"
    sd = {k: v.detach().to(torch.float32) for k, v in loaded.model.state_dict().items()}
    want = expected_keys(cfg.num_layers, learned)
    if set(sd) != want:
        extra, missing = sorted(set(sd) - want), sorted(want - set(sd))
        raise ExportError(f"the model's parameters do not match the GPT-2/GPT-NeoX mapping (unmapped: "
                          f"{', '.join(extra[:3]) or '-'}; absent: {', '.join(missing[:3]) or '-'})")
    config = hf_config(transformers, cfg, vocab, loaded.tokenizer.eod)
    if learned:
        model_cls, mapped = transformers.GPT2LMHeadModel, gpt2_state_dict(
            sd, cfg.num_layers, cfg.num_attention_heads, vocab)
    else:
        model_cls, mapped = transformers.GPTNeoXForCausalLM, neox_state_dict(sd, cfg.num_layers, vocab)
    config.dtype = torch.float32
    model = model_cls(config).to(torch.float32)
    result = model.load_state_dict(mapped, strict=False)
    missing = [k for k in result.missing_keys if k != "lm_head.weight"]
    if missing or result.unexpected_keys:
        raise ExportError(f"{model_cls.__name__} did not take the mapped weights (missing: {missing[:3]}, "
                          f"unexpected: {result.unexpected_keys[:3]}); transformers {transformers.__version__} "
                          "changed the layout")
    model.tie_weights()
    if model.get_output_embeddings().weight.data_ptr() != model.get_input_embeddings().weight.data_ptr():
        raise ExportError(f"{model_cls.__name__} did not tie its output layer to the word embeddings")
    return model.eval()


@torch.no_grad()
def logits_max_diff(ours: torch.nn.Module, hf_model: Any, vocab: int, length: int, seed: int = 0) -> float:
    """max |our logits[..., :vocab] - HF logits| on a random fp32 probe batch [2, length]."""
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, vocab, (2, length), generator=gen)
    a = ours(tokens)[..., :vocab].float()
    b = hf_model(input_ids=tokens).logits.float()
    return float((a - b).abs().max())


# -- the tokenizer ----------------------------------------------------------------------------------------------

def build_hf_tokenizer(transformers: Any, tokenizer: Any, model_max_length: int) -> Any:
    """Our GPT2BPETokenizer as a transformers fast tokenizer over a `tokenizers.Tokenizer` object."""
    from tokenizers import processors

    from megatron.tokenizer.gpt2_bpe import EOD_TOKEN, build_bpe_engine

    engine = build_bpe_engine(dict(tokenizer.vocab), list(tokenizer.merges))
    engine.post_processor = processors.ByteLevel(trim_offsets=False)  # offsets only; ids unchanged
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=engine, bos_token=EOD_TOKEN, eos_token=EOD_TOKEN, pad_token=EOD_TOKEN,
        split_special_tokens=True, model_max_length=model_max_length, clean_up_tokenization_spaces=False)


def check_tokenizer(transformers: Any, directory: str, tokenizer: Any) -> None:
    """Reload ``directory`` with AutoTokenizer: same ids as ours on the probe texts, EOD as bos/eos."""
    reloaded = transformers.AutoTokenizer.from_pretrained(directory)
    for text in TOKENIZER_PROBES:
        ours = tokenizer.tokenize(text)
        theirs = list(reloaded(text, add_special_tokens=False, verbose=False)["input_ids"])
        if theirs != ours:
            raise ExportError(f"the exported tokenizer ({type(reloaded).__name__}) encodes {text[:40]!r} as "
                              f"{theirs[:8]}..., ours as {ours[:8]}...")
    if (reloaded.eos_token_id, reloaded.bos_token_id) != (tokenizer.eod, tokenizer.eod):
        raise ExportError(f"the exported tokenizer has eos/bos {reloaded.eos_token_id}/{reloaded.bos_token_id}, "
                          f"expected our EOD id {tokenizer.eod}")


# -- the export -------------------------------------------------------------------------------------------------

def convert(load: str, output: str, *, tag: str | None = None, dtype: str = "float32") -> dict[str, Any]:
    """Export checkpoint ``load`` (its `latest` tag, or ``tag``) to the HF directory ``output``; returns a summary."""
    from megatron.config import ConfigError
    from megatron.inference import load_for_inference
    from megatron.specs.gpt import GPT_SPEC
    from megatron.tokenizer import GPT2BPETokenizer

    if dtype not in DTYPES:
        raise ExportError(f"--dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    output = os.path.abspath(output)
    if os.path.exists(output):
        raise ExportError(f"--output {output} already exists; remove it or choose another directory")
    parent = os.path.dirname(output)
    if not os.path.isdir(parent):
        raise ExportError(f"--output {output}: parent directory {parent} does not exist")
    transformers = import_transformers()
    try:
        # spec=GPT_SPEC: any other family is refused ("a bert checkpoint cannot be loaded as a gpt model")
        loaded = load_for_inference(load, tag=tag, dtype=torch.float32, spec=GPT_SPEC)
    except ConfigError as e:
        raise ExportError(str(e)) from None
    tok = loaded.tokenizer
    if not isinstance(tok, GPT2BPETokenizer):
        raise ExportError(f"--load {load}: tokenizer {type(tok).__name__} has no HF export here (supported: "
                          "GPT2BPETokenizer)")
    cfg = loaded.config.model
    vocab = max(tok.inv_vocab) + 1  # ids are 0..vocab-1 (vocab.json may leave holes; they stay unused rows)
    if vocab > cfg.padded_vocab_size:
        raise ExportError(f"tokenizer ids reach {vocab - 1} but the embedding table has {cfg.padded_vocab_size} rows")

    model = build_hf_model(transformers, loaded, vocab)
    seq_length = loaded.config.training.seq_length
    probe_len = min(cfg.max_position_embeddings, seq_length, 64)
    diff = logits_max_diff(loaded.model, model, vocab, probe_len)
    scale = max(1.0, float(model.get_input_embeddings().weight.detach().abs().max()))
    if not diff <= 1e-3 * scale:  # also catches NaN
        raise ExportError(f"the {type(model).__name__} export does not reproduce our logits (max abs diff {diff:.3g}); "
                          "the architectures do not match")

    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(output)}.tmp-", dir=parent)
    try:
        model.generation_config.bos_token_id = tok.eod
        model.generation_config.eos_token_id = tok.eod
        model.generation_config.pad_token_id = tok.eod
        model.to(DTYPES[dtype]).save_pretrained(tmp)
        hf_tok = build_hf_tokenizer(transformers, tok, seq_length)
        hf_tok.save_pretrained(tmp)
        # "PreTrainedTokenizerFast" names the same class in transformers 4.x and 5.x (5.x: TokenizersBackend)
        # and keeps AutoTokenizer away from GPT2TokenizerFast's mapping for model_type gpt2.
        tc_path = os.path.join(tmp, "tokenizer_config.json")
        with open(tc_path, encoding="utf-8") as f:
            tc = json.load(f)
        tc["tokenizer_class"] = "PreTrainedTokenizerFast"
        with open(tc_path, "w", encoding="utf-8") as f:
            json.dump(tc, f, indent=2, ensure_ascii=False)
        check_tokenizer(transformers, tmp, tok)
        summary = {
            "output": output, "architecture": type(model).__name__, "checkpoint": loaded.path,
            "iteration": loaded.iteration, "seq_length": seq_length, "vocab_size": vocab,
            "padded_vocab_size": cfg.padded_vocab_size, "eod": tok.eod, "dtype": dtype,
            "max_abs_logit_diff_fp32": diff, "transformers": transformers.__version__,
        }
        with open(os.path.join(tmp, "megatron_export.json"), "w", encoding="utf-8") as f:
            json.dump(summary, f, indent=2)
        umask = os.umask(0)
        os.umask(umask)
        for name in os.listdir(tmp):  # mkdtemp makes the directory 0700 and some writers make files 0600
            os.chmod(os.path.join(tmp, name), 0o666 & ~umask)
        os.chmod(tmp, 0o777 & ~umask)
        os.rename(tmp, output)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return summary


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="convert_checkpoint_to_hf", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--load", required=True, help="Checkpoint directory written by pretrain_gpt.py (--save).")
    p.add_argument("--output", required=True, help="New Hugging Face model directory (must not exist).")
    p.add_argument("--load-tag", default=None, help="Checkpoint tag (default: the `latest` one).")
    p.add_argument("--dtype", default="float32", choices=sorted(DTYPES), help="Dtype of the saved weights.")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry: 0 on success, 2 with one `error:` line on bad input."""
    args = parse(argv)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:
        pass  # convert() says how to install it
    try:
        summary = convert(args.load, args.output, tag=args.load_tag, dtype=args.dtype)
    except ValueError as e:  # ExportError, ConfigError, TokenizerError: user input
        sys.stderr.write(f"error: {e}\n")
        return 2
    print(f"exported {summary['checkpoint']} (iteration {summary['iteration']}) as {summary['architecture']} "
          f"({summary['dtype']}, vocab {summary['vocab_size']} of padded {summary['padded_vocab_size']}, "
          f"max |logit diff| {summary['max_abs_logit_diff_fp32']:.2e}) to {summary['output']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
