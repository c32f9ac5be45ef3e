"""Megatron-DeepSpeed-compatible GPT/BERT pretraining with DeepSpeed Data Efficiency (curriculum learning, random-LTD)."""

__version__ = "0.1.0"


def _per_venv_torch_extensions_dir() -> None:
    """DeepSpeed JIT-builds a CPU op on first use; keep its cache per virtual environment (as scripts/setup_env.sh
    does), so an activated venv does not rebuild it against another environment's cache. A set variable wins."""
    import os
    import sys

    if "TORCH_EXTENSIONS_DIR" not in os.environ and sys.prefix != sys.base_prefix:
        os.environ["TORCH_EXTENSIONS_DIR"] = os.path.join(sys.prefix, "torch_extensions")


_per_venv_torch_extensions_dir()
