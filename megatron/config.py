"""Typed configuration dataclasses.

They are built ONCE from the parsed command line (and the DeepSpeed JSON) by
``megatron.config.build_configs`` (see ``megatron/arguments.py``); model, data and
data-efficiency code receive these objects and never read global args.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TransformerConfig:
    """Shape and regularisation of a GPT/BERT transformer stack."""

    num_layers: int
    """Number of transformer layers (``--num-layers``)."""
    hidden_size: int
    """Model width h (``--hidden-size``)."""
    num_attention_heads: int
    """Attention heads; must divide ``hidden_size`` (``--num-attention-heads``)."""
    padded_vocab_size: int
    """Vocabulary size after padding to ``--make-vocab-size-divisible-by``; size of the embedding table."""
    seq_length: int
    """Training sequence length S (``--seq-length``)."""
    max_position_embeddings: int
    """Rows of the learned position table; must be >= seq_length (``--max-position-embeddings``)."""
    ffn_hidden_size: int | None = None
    """MLP inner width; None means 4 * hidden_size (``--ffn-hidden-size``)."""
    init_method_std: float = 0.02
    """Std of the normal init of weights; output projections use std / sqrt(2 * num_layers) (``--init-method-std``)."""
    attention_dropout: float = 0.1
    """Dropout on attention probabilities (``--attention-dropout``)."""
    hidden_dropout: float = 0.1
    """Dropout after attention/MLP and on embeddings (``--hidden-dropout``)."""
    position_embedding_type: str = "learned_absolute"
    """``learned_absolute`` or ``rope`` (``--position-embedding-type``)."""
    rotary_base: float = 10000.0
    """Base of the RoPE frequencies."""
    layernorm_epsilon: float = 1e-5
    """LayerNorm epsilon (``--layernorm-epsilon``)."""
    checkpoint_activations: bool = False
    """Recompute each layer in the backward pass to save memory (``--checkpoint-activations``)."""

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"--hidden-size {self.hidden_size} must be divisible by --num-attention-heads {self.num_attention_heads}"
            )
        if self.position_embedding_type not in ("learned_absolute", "rope"):
            raise ValueError(
                f"--position-embedding-type must be learned_absolute or rope, got {self.position_embedding_type!r}"
            )
        if self.position_embedding_type == "learned_absolute" and self.max_position_embeddings < self.seq_length:
            raise ValueError(
                f"--max-position-embeddings {self.max_position_embeddings} is smaller than --seq-length {self.seq_length}"
            )

    @property
    def ffn_size(self) -> int:
        """MLP inner width actually used."""
        return self.ffn_hidden_size or 4 * self.hidden_size

    @property
    def head_dim(self) -> int:
        """Width of one attention head."""
        return self.hidden_size // self.num_attention_heads
