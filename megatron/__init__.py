"""Megatron-DeepSpeed-compatible GPT/BERT pretraining with DeepSpeed Data Efficiency (curriculum learning, random-LTD)."""

__version__ = "0.1.0"
