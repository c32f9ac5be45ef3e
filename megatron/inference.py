"""One way from a checkpoint to a model: ``load_for_inference`` (evaluation, lm-eval, finetuning, HF export).

    loaded = load_for_inference("runs/x/checkpoint", {"micro_batch_size": 8})
    loaded.model      # the family's plain nn.Module (no DeepSpeed, no random-LTD wrappers), eval mode
    loaded.config     # RunConfig rebuilt from the flags stored in the checkpoint (+ overrides)
    loaded.tokenizer  # the training tokenizer

Any checkpoint this framework writes loads: ZeRO 0-3 (stage 3 shards are gathered with DeepSpeed's
zero_to_fp32), fp32/bf16 (fp16 too, as fp32 on CPU), random-LTD-trained (its checkpoints hold plain layer
names), and checkpoints written before the family name was recorded (they are GPT). The family comes from the
checkpoint's ``model_family`` through ``megatron.specs``, or from the ``spec`` argument.

Which stored flags are taken (the rule, written once): every flag in the checkpoint's args snapshot is taken,
EXCEPT the training-only ones in ``NOT_TAKEN`` (budget, LR schedule, DeepSpeed JSON, save/load, precision switches,
ZeRO stage, data-efficiency switches and pinned train index maps, TensorBoard, exit conditions), which are reset
to neutral values; then ``overrides`` (flag dest -> value) replace anything. The precision the model trained in
becomes ``dtype`` unless one is given.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Mapping

import torch

from megatron.config import ConfigError, RunConfig
from megatron.data_efficiency.random_ltd import remove_random_ltd_state_dict
from megatron.training.checkpointing import read_latest_tag
from megatron.training.spec import ModelSpec

NOT_TAKEN: dict[str, Any] = {
    "deepspeed_config": None, "deepspeed": False, "load": None, "save": None, "load_tag": None,
    "train_iters": 1, "train_samples": None, "train_tokens": None, "rampup_batch_size": None,
    "lr_warmup_iters": 0, "lr_warmup_samples": 0, "lr_warmup_fraction": None, "lr_warmup_tokens": None,
    "lr_decay_iters": None, "lr_decay_samples": None, "lr_decay_tokens": None,
    "data_efficiency_curriculum_learning": False, "random_ltd": False, "train_data_exact_num_epochs": None,
    "train_doc_idx_path": None, "train_sample_idx_path": None, "train_shuffle_idx_path": None,
    "train_idx_path": None, "train_desc_path": None, "return_data_index": False, "tensorboard_dir": None,
    "fp16": False, "bf16": False, "zero_stage": None, "exit_interval": None, "exit_duration_in_mins": None,
    "skip_train": False, "finetune": False,
}
"""Training-only flags of the snapshot, and the neutral value each gets when a checkpoint is loaded for inference."""

MODEL_STATES_FILES = ("mp_rank_00_model_states.pt", "zero_pp_rank_0_mp_rank_00_model_states.pt")  # ZeRO-3: 2nd


@dataclass
class InferenceModel:
    """What ``load_for_inference`` returns."""

    model: torch.nn.Module
    """The family's plain model with the checkpoint's weights, in eval mode, in ``dtype`` on the chosen device."""
    config: RunConfig
    """Typed config rebuilt from the stored flags (training-only ones neutral) and the overrides (world size 1)."""
    tokenizer: Any
    """The tokenizer the flags name."""
    spec: ModelSpec
    """The model family."""
    path: str
    """Directory of the loaded tag (``<checkpoint_dir>/global_stepN``)."""
    tag: str
    """The loaded tag."""
    iteration: int
    """Training iteration of the checkpoint."""
    consumed_train_tokens: int
    """Tokens the model had trained on."""
    dtype: torch.dtype
    """Parameter dtype of ``model``."""
    stored_args: dict[str, Any]
    """The args snapshot as stored in the checkpoint."""


def resolve_checkpoint(checkpoint_dir: str, tag: str | None = None) -> tuple[str, str]:
    """(tag, directory) of the checkpoint to load: ``tag``, else `latest`, else Megatron's tracker file."""
    if not os.path.isdir(checkpoint_dir):
        raise ConfigError(f"--load {checkpoint_dir}: directory not found")
    tag = tag or read_latest_tag(checkpoint_dir)
    if tag is None:
        raise ConfigError(f"--load {checkpoint_dir}: no checkpoint (no `latest` or latest_checkpointed_iteration.txt)")
    path = os.path.join(checkpoint_dir, tag)
    if not os.path.isdir(path):
        raise ConfigError(f"--load {checkpoint_dir}: checkpoint directory {tag} does not exist")
    return tag, path


def load_model_states(checkpoint_dir: str, tag: str, path: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(model state dict, the rest of rank 0's model-states file: args snapshot, iteration, ds_config, ...)."""
    found = [os.path.join(path, name) for name in MODEL_STATES_FILES if os.path.isfile(os.path.join(path, name))]
    if not found:
        raise ConfigError(f"{path}: {MODEL_STATES_FILES[0]} not found (not a DeepSpeed checkpoint of this framework)")
    states = found[0]
    try:
        client = torch.load(states, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - a corrupt or truncated file, reported as one line
        raise ConfigError(f"{states}: cannot read ({type(e).__name__}: {e})") from None
    if not isinstance(client, dict) or "args" not in client:
        raise ConfigError(f"{states}: no args snapshot inside; was it written by this framework's pretraining?")
    stage = ((client.get("ds_config") or {}).get("zero_optimization") or {}).get("stage", 0)
    module = client.get("module")
    if stage == 3:  # parameters are partitioned over the ZeRO shards: let DeepSpeed gather them
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        saved = module
        # zero_to_fp32 names parameters after named_parameters() of the model as trained, random-LTD wrappers
        # included (`...layers.1.random_ltd_layer.mlp...`): stripped below like every other state dict we write
        module = remove_random_ltd_state_dict(get_fp32_state_dict_from_zero_checkpoint(checkpoint_dir, tag=tag))
        if isinstance(saved, dict):  # buffers it looked up under wrapped names (and missed): the saved plain ones
            for key, value in saved.items():
                if key not in module and isinstance(value, torch.Tensor) and value.numel():
                    module[key] = value
    if not isinstance(module, dict) or not module:
        raise ConfigError(f"{states}: no model weights ('module') inside")
    return dict(remove_random_ltd_state_dict(module)), client


def training_dtype(stored_args: Mapping[str, Any], ds_config: Mapping[str, Any]) -> torch.dtype:
    """The dtype the model was trained (and evaluated) in; fp16 becomes fp32 without CUDA."""
    if stored_args.get("bf16") or (ds_config.get("bf16") or {}).get("enabled"):
        return torch.bfloat16
    if stored_args.get("fp16") or (ds_config.get("fp16") or {}).get("enabled"):
        return torch.float16 if torch.cuda.is_available() else torch.float32
    return torch.float32


def inference_args(stored_args: Mapping[str, Any], ds_config: Mapping[str, Any], spec: ModelSpec,
                   overrides: Mapping[str, Any] | None = None) -> Any:
    """The flag namespace for inference: defaults <- stored flags <- NOT_TAKEN neutral values <- overrides."""
    from megatron.arguments import apply_args_defaults, parse_args

    args = parse_args([], spec.extra_args)
    known = set(vars(args))
    for key, value in stored_args.items():
        if key in known:
            setattr(args, key, tuple(value) if key == "rampup_batch_size" and value else value)
    mbs = args.micro_batch_size or ds_config.get("train_micro_batch_size_per_gpu")
    gbs = args.global_batch_size or ds_config.get("train_batch_size")
    for key, value in NOT_TAKEN.items():
        setattr(args, key, value)
    args.micro_batch_size, args.global_batch_size = mbs, gbs
    for key, value in (overrides or {}).items():
        if key not in known:
            raise ConfigError(f"load_for_inference: unknown override {key!r} (expected a flag dest such as "
                              "'micro_batch_size' or 'data_path')")
        if value is not None:
            setattr(args, key, value)
    apply_args_defaults(args, dict(spec.args_defaults))
    if not args.micro_batch_size:
        raise ConfigError("the checkpoint does not record the micro-batch size: pass --micro-batch-size")
    args.global_batch_size = args.global_batch_size or args.micro_batch_size
    if args.global_batch_size % args.micro_batch_size:
        args.global_batch_size = args.micro_batch_size  # a multi-rank batch: one rank's share is what matters
    return args


def default_device() -> torch.device:
    """``cuda:LOCAL_RANK`` (modulo the visible devices) when CUDA is there, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0") or 0) % torch.cuda.device_count())
    return torch.device("cpu")


def load_for_inference(checkpoint_dir: str, overrides: Mapping[str, Any] | None = None, *, tag: str | None = None,
                       spec: ModelSpec | None = None, dtype: torch.dtype | None = None,
                       device: torch.device | str = "cpu") -> InferenceModel:
    """Load ``checkpoint_dir`` (its `latest` tag, or ``tag``) into a plain model of its family.

    ``overrides`` maps flag dests to values (e.g. ``{"data_path": [...], "eval_iters": 5}``); ``dtype`` defaults to
    the training precision (fp16 becomes fp32 on the CPU). ``device``: where the model goes; evaluation passes
    ``default_device()`` (the GPU when there is one, with TF32 matmuls), tools that work on host tensors (HF
    export, finetuning's weight copy) keep the default CPU. Bad input (missing files, weights that do not fit,
    unknown family) is a ConfigError.
    """
    from megatron.arguments import validate_args
    from megatron.config import build_configs
    from megatron.specs import LEGACY_FAMILY, get_spec
    from megatron.tokenizer import build_tokenizer_from_args
    from megatron.training.model_build import configure_matmul_precision

    tag, path = resolve_checkpoint(checkpoint_dir, tag)
    weights, client = load_model_states(checkpoint_dir, tag, path)
    family = client.get("model_family", LEGACY_FAMILY)
    if spec is None:
        try:
            spec = get_spec(family)
        except ValueError as e:
            raise ConfigError(f"{path}: {e}") from None
    elif spec.name != family:
        raise ConfigError(f"{path}: a {family} checkpoint cannot be loaded as a {spec.name} model")
    stored_args, ds_config = dict(client["args"]), dict(client.get("ds_config") or {})
    args = inference_args(stored_args, ds_config, spec, overrides)
    validate_args(args, 1)
    tokenizer = build_tokenizer_from_args(args)
    config = build_configs(args, tokenizer, 1)
    model = spec.build_model(config)
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        raise ConfigError(f"{path}: the weights do not fit a {spec.name} model of the recorded shape "
                          f"({' '.join(first[:2])})") from None
    device = torch.device(device)
    if dtype is None:
        dtype = training_dtype(stored_args, ds_config)
        dtype = torch.float32 if dtype == torch.float16 and device.type == "cpu" else dtype  # fp16 needs a GPU
    configure_matmul_precision(device)
    model.to(device=device, dtype=dtype).eval()
    train_state = client.get("train_state") or {}
    return InferenceModel(model=model, config=config, tokenizer=tokenizer, spec=spec, path=os.path.abspath(path),
                          tag=tag, iteration=int(client.get("iteration", 0)),
                          consumed_train_tokens=int(train_state.get("consumed_train_tokens", 0)), dtype=dtype,
                          stored_args=stored_args)
