"""The study's data: corpus -> BPE tokenizer -> token files -> difficulty analysis -> offline lm-eval tasks.

Every step is a subprocess of the project's own tool (``tools/make_corpus.py``, ``tools/train_tokenizer.py``,
``tools/preprocess_data.py``, ``examples_deepspeed/data_efficiency/analyze_data.py``,
``tasks/eval_harness/offline_tasks.py``) and is recorded in ``{study}/data/prepare.json`` when it finishes, so a
rerun skips it.  The corpus puts its held-out documents last; ``--split N_TRAIN,N_HELDOUT,0`` then makes
exactly them the validation split of pretraining, of ``tools/eval_gpt.py`` and of the offline tasks.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from megatron.study.plan import StudyConfig, StudyError

DEFAULT_DEBS = ("linux-doc-6.1", "python3.11-doc")
"""English reST prose from Debian: the Linux kernel's documentation (GPL-2.0) and CPython's (PSF-2.0)."""
ZEROSHOT_TASKS = ("corpus_perplexity", "corpus_lastword", "corpus_choice")


@dataclass
class Prepared:
    """What the runs need from the data preparation."""

    data_prefix: str
    split: str
    tokenizer_flags: list[str]
    pinned_maps: str
    analysis_dir: str
    tasks_dir: str | None
    facts: dict[str, Any]
    """Corpus and split sizes for the report (documents, bytes, tokens, samples, sources)."""


def atomic_json(path: str, obj: Any) -> None:
    """Write JSON to a temporary file and rename it over ``path``."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as fh:
        json.dump(obj, fh, indent=1, sort_keys=True)
    os.replace(tmp, path)


def load_json(path: str) -> Any:
    """JSON content of ``path`` or None when it does not exist."""
    if not os.path.exists(path):
        return None
    with open(path) as fh:
        return json.load(fh)


Runner = Callable[[str, list[str], str], None]
"""run(step name, argv, log path): runs a subprocess; raises on failure."""


def prepare(study_dir: str, config: StudyConfig, *, sources: list[tuple[str, str]], deb_cache: str,
            max_mb: float | None, run: Runner, python: str) -> Prepared:
    """Run the missing preparation steps; returns the paths and facts."""
    data = os.path.join(study_dir, "data")
    os.makedirs(data, exist_ok=True)
    state_path = os.path.join(data, "prepare.json")
    state = load_json(state_path) or {}
    want = {"sources": [list(s) for s in sources], "max_mb": max_mb, "vocab_size": config.vocab_size,
            "seq_length": config.seq_length, "seed": config.seed, "heldout_fraction": config.heldout_fraction,
            "zeroshot_docs": config.zeroshot_docs}
    if state.get("inputs") not in (None, want):
        raise StudyError(f"{state_path}: the data were prepared with other settings ({state.get('inputs')}); "
                         f"use another --study-dir or delete {data}")
    state["inputs"] = want

    def done(step: str, facts: dict[str, Any] | None = None) -> None:
        state.setdefault("done", {})[step] = facts or {}
        atomic_json(state_path, state)

    def is_done(step: str) -> bool:
        return step in state.get("done", {})

    corpus = os.path.join(data, "corpus.jsonl.gz")
    if not is_done("corpus"):
        argv = [python, "tools/make_corpus.py", "--output", corpus, "--deb-cache", deb_cache,
                "--heldout-fraction", str(config.heldout_fraction)]
        for kind, value in sources:
            argv += [f"--{kind}", value]
        if max_mb is not None:
            argv += ["--max-mb", str(max_mb)]
        run("corpus", argv, os.path.join(data, "corpus.log"))
        done("corpus", load_json(corpus + ".manifest.json"))
    manifest = state["done"]["corpus"]
    n_train, n_held = manifest["train_documents"], manifest["heldout_documents"]
    split = f"{n_train},{n_held},0"

    tok_dir = os.path.join(data, "tokenizer")
    tokenizer_flags = ["--tokenizer-type", "GPT2BPETokenizer", "--vocab-file", f"{tok_dir}/vocab.json",
                       "--merge-file", f"{tok_dir}/merges.txt"]
    if not is_done("tokenizer"):  # trained on the training documents only (they come first in the corpus)
        run("tokenizer", [python, "tools/train_tokenizer.py", "--tokenizer-type", "GPT2BPETokenizer", "--input",
                          corpus, "--vocab-size", str(config.vocab_size), "--output-dir", tok_dir,
                          "--max-docs", str(n_train), "--no-progress"], os.path.join(data, "tokenizer.log"))
        done("tokenizer")

    prefix = os.path.join(data, "corpus")
    data_prefix = prefix + "_text_document"
    if not is_done("preprocess"):
        run("preprocess", [python, "tools/preprocess_data.py", "--input", corpus, "--output-prefix", prefix,
                           *tokenizer_flags, "--append-eod", "--workers", "2", "--no-progress"],
            os.path.join(data, "preprocess.log"))
        done("preprocess", token_counts(data_prefix, n_train, n_held))

    analysis = os.path.join(data, "analysis")
    pinned = f"{data_prefix}_train_indexmap_exact1ep_{config.seq_length}sl_{config.seed}s"
    if not is_done("analysis"):
        run("analysis", [python, "examples_deepspeed/data_efficiency/analyze_data.py",
                         "--analyzing-task", "map_reduce", "--analyzing-data-type", "GPT",
                         "--analyzing-metric", "total_vocab_freq", "vocab_rarity", "--analyzing-num-threads", "1",
                         "--data-path", data_prefix, "--data-impl", "mmap", *tokenizer_flags, "--split", split,
                         "--seed", str(config.seed), "--seq-length", str(config.seq_length),
                         "--max-position-embeddings", str(config.seq_length), "--num-layers", "1",
                         "--hidden-size", "1", "--num-attention-heads", "1", "--micro-batch-size", "1",
                         "--global-batch-size", "1000", "--train-data-exact-num-epochs", "1",
                         "--return-data-index", "--save", analysis], os.path.join(data, "analysis.log"))
        samples = len(np.load(f"{pinned}_sample_idx.npy", mmap_mode="r")) - 1
        done("analysis", {"train_samples": samples, "train_split_tokens": samples * config.seq_length})

    tasks_dir = None
    if config.zeroshot_docs > 0:
        tasks_dir = os.path.join(data, "offline_tasks")
        if not is_done("offline_tasks"):
            run("offline_tasks", [python, "-m", "tasks.eval_harness.offline_tasks", "--output-dir", tasks_dir,
                                  "--num-docs", str(config.zeroshot_docs), "--corpus", corpus,
                                  "--heldout-docs", str(n_held), "--seed", str(config.seed),
                                  "--tasks", *ZEROSHOT_TASKS], os.path.join(data, "offline_tasks.log"))
            done("offline_tasks", load_json(os.path.join(tasks_dir, "offline_tasks.json")))

    facts = {"corpus": manifest, **state["done"]["preprocess"], **state["done"]["analysis"], "split": split}
    return Prepared(data_prefix, split, tokenizer_flags, pinned, analysis, tasks_dir, facts)


def token_counts(data_prefix: str, n_train: int, n_held: int) -> dict[str, int]:
    """Tokens of the training and held-out documents of the preprocessed corpus; checks the document count."""
    from megatron.data.indexed_dataset import MMapIndexedDataset

    ds = MMapIndexedDataset(data_prefix)
    sizes = np.asarray(ds.sizes, dtype=np.int64)
    if len(sizes) != n_train + n_held:
        raise StudyError(f"{data_prefix}.idx holds {len(sizes)} documents, the corpus {n_train + n_held}: a document "
                         f"without tokens was skipped, so --split would not isolate the held-out part")
    return {"train_tokens": int(sizes[:n_train].sum()), "heldout_tokens": int(sizes[n_train:].sum())}
