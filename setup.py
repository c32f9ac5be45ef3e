"""Install the `megatron` package (data-efficient GPT/BERT pretraining on DeepSpeed)."""
from setuptools import find_packages, setup

setup(
    name="megatron-data-efficiency",
    version="0.1.0",
    description="Megatron-DeepSpeed-compatible GPT/BERT pretraining with curriculum learning and random-LTD",
    packages=find_packages(include=["megatron", "megatron.*", "tasks", "tasks.*"]),
    python_requires=">=3.10",
    install_requires=[
        # Any recent torch. On the project's CPU machines pin `torch==2.13.0` in the same pip
        # command (scripts/setup_env.sh does) so pip takes the local CPU wheel.
        "torch>=2.1",
        "deepspeed>=0.14",
        "numpy>=1.24",
        "sentencepiece>=0.1.99",
        "regex>=2023.0",
        "tokenizers>=0.15",
        "tqdm>=4.60",
        "zstandard>=0.19",
        "tensorboard>=2.12",
        "matplotlib>=3.7",
        "scikit-learn>=1.2",
        # zero/few-shot evaluation (tasks/eval_harness): the lm-evaluation-harness 0.4 API
        "lm-eval>=0.4.13,<0.5",
    ],
    extras_require={
        # HF export (tools/convert_checkpoint_to_hf.py) and lm-eval's own `hf` backend for cross-checks
        "hf": ["transformers>=4.40", "accelerate>=0.26"],
        "test": ["pytest>=7", "pytest-xdist>=3", "transformers>=4.40", "accelerate>=0.26"],
    },
)
