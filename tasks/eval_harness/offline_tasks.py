"""Offline lm-eval 0.4 tasks over held-out text of the bundled corpus (no hub download needed).

The 19 zero/few-shot tasks of the reference (spec §7.4) come from the Hugging Face hub, which these machines
cannot reach. This module writes four small lm-eval YAML tasks whose data is text the repository ships: the
documents of ``data/corpus/python_docs.jsonl.gz`` (CPython documentation, PSF license) that the quickstart's
pretraining run never trains on. Pass the output directory to lm-eval as ``--include_path``:

    python -m tasks.eval_harness.offline_tasks --output-dir runs/offline_tasks [--num-docs 200] [--seed 1234]
    python tasks/eval_harness/evaluate.py --load CKPT --include_path runs/offline_tasks \\
        --task_list corpus_perplexity,corpus_lastword,corpus_lastword_gen,corpus_choice

Held-out text
-------------
A pretraining run with ``--split 949,50,1`` (the quickstart's) trains on the first documents of the corpus file
and validates/tests on the last ones (Megatron splits by document order). The *held-out pool* is the documents
after the train part of ``--split`` (default ``949,50,1``: the last 134 of the bundled corpus's 2,611), or the
last ``--heldout-docs K`` documents of the file. Nothing else of the corpus is read.

Tasks (``--num-docs N``: at most N lm-eval documents per task; fewer when the pool has fewer candidates)
-------------------------------------------------------------------------------------------------------------
* ``corpus_perplexity`` -- ``loglikelihood_rolling`` over whole documents, as lm-eval's ``wikitext`` task:
  the last N documents of the pool, raw text exactly as pretraining saw it (reST markup included). Metrics
  ``word_perplexity`` (words = ``re.split(r"\\s+", text)``), ``byte_perplexity`` and ``bits_per_byte`` (UTF-8
  bytes), lm-eval's own definitions (its default ``process_results`` for rolling loglikelihood).
* ``corpus_lastword`` -- LAMBADA-style (as lm-eval's ``lambada_openai``): a prose paragraph of the pool whose
  last word (letters only, 2+ characters, followed by the paragraph's final period) also occurs earlier in it
  -- or in the preceding prose paragraph of the same document, which then opens the passage (so the word can
  be recovered from the context, as in LAMBADA). Inline reST markup is reduced to its text, the final period
  dropped, 12-200 words; context = the passage without its last word, target = ``" " + last word``.
  ``loglikelihood``; metrics ``acc`` (the target is the greedy continuation) and ``perplexity`` (exp of the
  mean negative target log-likelihood).
* ``corpus_lastword_gen`` -- the same passages as ``generate_until``: greedy, ``until: ["\\n", "."]``,
  ``max_gen_toks: 16``; ``exact_match`` of the generation, leading/trailing whitespace ignored, against the
  last word.
* ``corpus_choice`` -- multiple choice continuation (HellaSwag/SWAG-shaped): a prose paragraph of 2+ clean
  sentences; context = its first k = min(n - 1, 3) sentences, choices = the true next sentence and 3
  continuation sentences of passages from *other* corpus files (drawn from the candidates' continuations),
  shuffled; metrics ``acc`` and ``acc_norm`` (lm-eval's byte-length normalization).

Passages are sampled with ``random.Random`` seeded from ``--seed`` and the task name (each task has its own
stream) and kept in corpus order, so the same arguments always write identical files.

Output: ``{output-dir}/corpus_{perplexity,lastword,lastword_gen,choice}.yaml`` (lm-eval 0.4 task configs with
``dataset_path: json`` and absolute ``data_files`` paths), ``{output-dir}/data/*.jsonl`` (``test`` split; the
few-shot examples of ``--num_fewshot K`` come from the same split, never the document being scored) and
``offline_tasks.json`` (arguments, pool, per-task counts). Every file is written to a temporary name and
renamed. Bad input prints one ``error:`` line and exits with status 2.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import re
import sys
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if _ROOT not in sys.path:  # run as a script: make `megatron` importable
    sys.path.insert(0, _ROOT)

from megatron.data.dataset_utils import DatasetError, get_train_valid_test_split_  # noqa: E402
from megatron.data.sentence_splitter import split_sentences  # noqa: E402
from tasks import rest_prose  # noqa: E402

DEFAULT_CORPUS = os.path.join(_ROOT, "data", "corpus", "python_docs.jsonl.gz")
DEFAULT_SPLIT = "949,50,1"  # the quickstart's --split: its train part is never used here
DEFAULT_SEED = 1234
DEFAULT_NUM_DOCS = 200
TASK_NAMES: tuple[str, ...] = ("corpus_perplexity", "corpus_lastword", "corpus_lastword_gen", "corpus_choice")
INFO_FILE = "offline_tasks.json"
NUM_DISTRACTORS = 3
MAX_CONTEXT_SENTENCES = 3
LASTWORD_WORDS = (12, 200)   # passage length in words (inclusive)
SENTENCE_WORDS = (4, 60)     # a usable sentence of corpus_choice
GEN_MAX_TOKENS = 16

# The metrics each task reports (lm-eval result keys are "<metric>,none").
TASK_METRICS: dict[str, tuple[str, ...]] = {
    "corpus_perplexity": ("word_perplexity", "byte_perplexity", "bits_per_byte"),
    "corpus_lastword": ("perplexity", "acc"),
    "corpus_lastword_gen": ("exact_match",),
    "corpus_choice": ("acc", "acc_norm"),
}
OUTPUT_TYPES: dict[str, str] = {
    "corpus_perplexity": "loglikelihood_rolling",
    "corpus_lastword": "loglikelihood",
    "corpus_lastword_gen": "generate_until",
    "corpus_choice": "multiple_choice",
}


class OfflineTaskError(Exception):
    """Bad input (reported as one ``error:`` line)."""


# ----------------------------------------------------------------------------------------------------------------
# YAML templates (lm-eval 0.4 task format). {data} is replaced by the JSON-quoted absolute jsonl path (JSON
# strings are valid YAML double-quoted scalars); data fields are read by column name, so no Jinja rendering
# touches the text (Jinja would drop a trailing newline).
# ----------------------------------------------------------------------------------------------------------------
_HEADER = "# Written by tasks/eval_harness/offline_tasks.py ({what}); do not edit: rebuild instead.\n"

YAML_TEMPLATES: dict[str, str] = {
    # Same structure as lm-eval's wikitext task (tasks/wikitext/wikitext.yaml), on our documents. lm-eval's
    # default process_results for loglikelihood_rolling counts words and bytes of doc_to_target.
    "corpus_perplexity": """\
task: corpus_perplexity
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
output_type: loglikelihood_rolling
test_split: test
doc_to_text: ""
doc_to_target: text
should_decontaminate: true
doc_to_decontamination_query: text
metric_list:
  - metric: word_perplexity
    aggregation: weighted_perplexity
    higher_is_better: false
  - metric: byte_perplexity
    aggregation: weighted_perplexity
    higher_is_better: false
  - metric: bits_per_byte
    aggregation: bits_per_byte
    higher_is_better: false
metadata:
  version: 1.0
""",
    # As lm-eval's lambada_openai; target_delimiter "" because the target already starts with its space.
    "corpus_lastword": """\
task: corpus_lastword
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
output_type: loglikelihood
test_split: test
fewshot_split: test
doc_to_text: context
doc_to_target: continuation
target_delimiter: ""
should_decontaminate: true
doc_to_decontamination_query: text
metric_list:
  - metric: perplexity
    aggregation: perplexity
    higher_is_better: false
  - metric: acc
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
""",
    "corpus_lastword_gen": """\
task: corpus_lastword_gen
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
output_type: generate_until
test_split: test
fewshot_split: test
doc_to_text: context
doc_to_target: last_word
target_delimiter: " "
should_decontaminate: true
doc_to_decontamination_query: text
generation_kwargs:
  until:
    - "\\n"
    - "."
  max_gen_toks: {max_gen_toks}
  do_sample: false
  temperature: 0.0
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
    ignore_case: false
    ignore_punctuation: false
    regexes_to_ignore:
      - "^\\\\s+"
      - "\\\\s+$"
metadata:
  version: 1.0
""",
    "corpus_choice": """\
task: corpus_choice
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
output_type: multiple_choice
test_split: test
fewshot_split: test
doc_to_text: context
doc_to_choice: choices
doc_to_target: label
should_decontaminate: true
doc_to_decontamination_query: context
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
""",
}

# corpus_lastword and corpus_lastword_gen share one data file.
DATA_FILES: dict[str, str] = {
    "corpus_perplexity": "corpus_perplexity.jsonl",
    "corpus_lastword": "corpus_lastword.jsonl",
    "corpus_lastword_gen": "corpus_lastword.jsonl",
    "corpus_choice": "corpus_choice.jsonl",
}


# ----------------------------------------------------------------------------------------------------------------
# Corpus
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class Document:
    index: int     # line number among the corpus documents (0-based)
    text: str
    source: str    # the corpus "source" field ("dir/file.rst.txt#section") or "doc{index}"

    @property
    def file(self) -> str:
        return self.source.split("#", 1)[0]


def read_corpus(path: str) -> list[Document]:
    """Every document of a jsonl(.gz) corpus of {"text": ..., "source": ...} objects (blank lines skipped)."""
    docs: list[Document] = []
    try:
        opener = gzip.open if path.endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise OfflineTaskError(f"{path}:{lineno}: not JSON ({e.msg})") from None
                if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
                    raise OfflineTaskError(f"{path}:{lineno}: expected a JSON object with a string \"text\"")
                source = obj.get("source")
                source = source if isinstance(source, str) and source else f"doc{len(docs)}"
                docs.append(Document(len(docs), obj["text"], source))
    except OSError as e:
        raise OfflineTaskError(f"cannot read corpus {path!r}: {e.strerror or e}") from None
    except (EOFError, UnicodeDecodeError, gzip.BadGzipFile) as e:
        raise OfflineTaskError(f"cannot read corpus {path!r}: {e}") from None
    if not docs:
        raise OfflineTaskError(f"corpus {path!r} holds no documents")
    return docs


def heldout_pool(docs: Sequence[Document], split: str | None = DEFAULT_SPLIT,
                 heldout_docs: int | None = None) -> list[Document]:
    """The documents outside the train part of ``split`` (or the last ``heldout_docs`` ones)."""
    if heldout_docs is not None:
        if heldout_docs < 1:
            raise OfflineTaskError(f"--heldout-docs must be a positive integer, got {heldout_docs}")
        if heldout_docs > len(docs):
            raise OfflineTaskError(f"--heldout-docs {heldout_docs} but the corpus has only {len(docs)} documents")
        return list(docs[len(docs) - heldout_docs:])
    try:
        train_end = get_train_valid_test_split_(split or DEFAULT_SPLIT, len(docs))[1]
    except DatasetError as e:
        raise OfflineTaskError(str(e)) from None
    pool = list(docs[train_end:])
    if not pool:
        raise OfflineTaskError(f"--split {split}: the train part covers all {len(docs)} documents of the corpus; "
                               "nothing is held out (use a split with valid/test parts, or --heldout-docs K)")
    return pool


# ----------------------------------------------------------------------------------------------------------------
# reST -> prose paragraphs
# ----------------------------------------------------------------------------------------------------------------
def prose_paragraphs(text: str) -> list[str]:
    """The prose paragraphs of one reST document (``tasks.rest_prose``) that keep no markup after cleaning.

    Dropped: headings, literal blocks (after ``::``), code and other non-prose directives with their bodies,
    doctests, tables, lists, field/option lists, ragged blocks, and paragraphs with markup left after cleaning
    (``tasks.rest_prose.has_markup``: a backtick, ``|``, ``*``, a backslash or ``::``).
    """
    return [p for p in rest_prose.prose_paragraphs(text) if not rest_prose.has_markup(p)]


# ----------------------------------------------------------------------------------------------------------------
# Task documents
# ----------------------------------------------------------------------------------------------------------------
_LAST_WORD = re.compile(r"^(?P<context>.*\S)\s+(?P<word>[A-Za-z]{2,})\.$")


def lastword_candidate(paragraph: str, previous: str | None = None) -> dict[str, str] | None:
    """The LAMBADA-style record of a paragraph, or None when it does not qualify (see the module docstring).

    The last word must occur earlier in the paragraph; failing that, in ``previous`` (the preceding prose
    paragraph of the same document), which then opens the passage.
    """
    m = _LAST_WORD.match(paragraph)
    if not m:
        return None
    context, word = m.group("context"), m.group("word")

    def has_word(text: str) -> bool:
        return word.lower() in {w.lower() for w in re.findall(r"[A-Za-z]+", text)}

    if not has_word(context):
        if previous is None or not has_word(previous):
            return None
        context = f"{previous} {context}"
    n_words = len(context.split()) + 1
    if not LASTWORD_WORDS[0] <= n_words <= LASTWORD_WORDS[1]:
        return None
    return {"text": f"{context} {word}", "context": context, "continuation": f" {word}", "last_word": word}


def good_sentence(sentence: str) -> bool:
    """A sentence usable in corpus_choice: 4-60 words, capitalized, ending in . ? or !, no markup left."""
    return rest_prose.is_good_sentence(sentence, min_words=SENTENCE_WORDS[0], max_words=SENTENCE_WORDS[1],
                                       min_plain_fraction=0.0)


def choice_candidate(paragraph: str) -> tuple[str, str] | None:
    """(context, true continuation) of a paragraph, or None when it has fewer than 2 good leading sentences."""
    sentences = split_sentences(paragraph)
    if len(sentences) < 2:
        return None
    k = min(len(sentences) - 1, MAX_CONTEXT_SENTENCES)
    if not all(good_sentence(s) for s in sentences[:k + 1]):
        return None
    return " ".join(sentences[:k]), sentences[k]


def _rng(seed: int, task: str) -> random.Random:
    return random.Random(f"{seed}:{task}")


def _choose(candidates: list[Any], n: int, rng: random.Random) -> list[Any]:
    """n candidates drawn at random (all of them when there are at most n), in their original order."""
    if len(candidates) <= n:
        return list(candidates)
    keep = sorted(rng.sample(range(len(candidates)), n))
    return [candidates[i] for i in keep]


def perplexity_docs(pool: Sequence[Document], num_docs: int) -> list[dict[str, Any]]:
    """The last num_docs documents of the pool (non-blank), raw text."""
    usable = [d for d in pool if d.text.strip()]
    return [{"text": d.text, "source": d.source, "doc_index": d.index} for d in usable[-num_docs:]]


def lastword_docs(pool: Sequence[Document], num_docs: int, seed: int) -> list[dict[str, Any]]:
    candidates = []
    for d in pool:
        paragraphs = prose_paragraphs(d.text)
        for p, paragraph in enumerate(paragraphs):
            record = lastword_candidate(paragraph, paragraphs[p - 1] if p else None)
            if record is not None:
                candidates.append({**record, "source": d.source, "doc_index": d.index, "paragraph": p})
    return _choose(candidates, num_docs, _rng(seed, "corpus_lastword"))


def choice_docs(pool: Sequence[Document], num_docs: int, seed: int) -> list[dict[str, Any]]:
    candidates = []
    for d in pool:
        for p, paragraph in enumerate(prose_paragraphs(d.text)):
            pair = choice_candidate(paragraph)
            if pair is not None:
                candidates.append({"context": pair[0], "gold": pair[1], "file": d.file, "source": d.source,
                                   "doc_index": d.index, "paragraph": p})
    rng = _rng(seed, "corpus_choice")
    chosen = _choose(candidates, num_docs, rng)
    out = []
    for c in chosen:
        others = sorted({o["gold"] for o in candidates if o["file"] != c["file"] and o["gold"] != c["gold"]})
        if len(others) < NUM_DISTRACTORS:
            continue
        choices = [c["gold"]] + rng.sample(others, NUM_DISTRACTORS)
        rng.shuffle(choices)
        out.append({"context": c["context"], "choices": choices, "label": choices.index(c["gold"]),
                    "source": c["source"], "doc_index": c["doc_index"], "paragraph": c["paragraph"]})
    return out


# ----------------------------------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------------------------------
def atomic_write(path: str, text: str) -> None:
    """Write text to path via a temporary file in the same directory and a rename."""
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def render_jsonl(records: Iterable[dict[str, Any]]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def render_yaml(task: str, data_path: str) -> str:
    """The task's YAML with its absolute data file path filled in."""
    body = YAML_TEMPLATES[task].replace("{data}", json.dumps(os.path.abspath(data_path)))
    body = body.replace("{max_gen_toks}", str(GEN_MAX_TOKENS))
    return _HEADER.format(what=task) + body


def build_offline_tasks(output_dir: str, *, corpus: str = DEFAULT_CORPUS, seed: int = DEFAULT_SEED,
                        num_docs: int = DEFAULT_NUM_DOCS, split: str | None = DEFAULT_SPLIT,
                        heldout_docs: int | None = None, tasks: Sequence[str] | None = None) -> list[str]:
    """Write the offline tasks under output_dir (an lm-eval ``--include_path``); returns the task names.

    ``num_docs``: at most this many lm-eval documents per task. ``split``/``heldout_docs``: which corpus
    documents are held out (module docstring). ``tasks``: a subset of TASK_NAMES (default all).
    OfflineTaskError on bad input.
    """
    if isinstance(num_docs, bool) or not isinstance(num_docs, int) or num_docs < 1:
        raise OfflineTaskError(f"--num-docs must be a positive integer, got {num_docs!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise OfflineTaskError(f"--seed must be an integer, got {seed!r}")
    names = list(TASK_NAMES) if tasks is None else list(dict.fromkeys(tasks))
    unknown = [t for t in names if t not in TASK_NAMES]
    if unknown or not names:
        raise OfflineTaskError(f"unknown task {unknown[0]!r} (choose from {', '.join(TASK_NAMES)})" if unknown
                               else "no task to build")
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise OfflineTaskError(f"--output-dir {output_dir!r} exists and is not a directory")
    docs = read_corpus(corpus)
    pool = heldout_pool(docs, split, heldout_docs)

    records: dict[str, list[dict[str, Any]]] = {}
    if "corpus_perplexity" in names:
        records["corpus_perplexity.jsonl"] = perplexity_docs(pool, num_docs)
    if "corpus_lastword" in names or "corpus_lastword_gen" in names:
        records["corpus_lastword.jsonl"] = lastword_docs(pool, num_docs, seed)
    if "corpus_choice" in names:
        records["corpus_choice.jsonl"] = choice_docs(pool, num_docs, seed)
    for file_name, rows in records.items():
        if not rows:
            raise OfflineTaskError(f"the {len(pool)} held-out documents of {corpus} give no {file_name[:-6]} "
                                   "passage (a corpus of English prose paragraphs is needed)")

    out_dir = os.path.abspath(output_dir)
    data_dir = os.path.join(out_dir, "data")
    try:
        os.makedirs(data_dir, exist_ok=True)
        for file_name, rows in records.items():
            atomic_write(os.path.join(data_dir, file_name), render_jsonl(rows))
        for task in names:
            atomic_write(os.path.join(out_dir, f"{task}.yaml"),
                         render_yaml(task, os.path.join(data_dir, DATA_FILES[task])))
        info = {
            "corpus": os.path.abspath(corpus), "seed": seed, "num_docs": num_docs,
            "heldout": ({"last_docs": heldout_docs} if heldout_docs is not None else {"split": split or DEFAULT_SPLIT}),
            "corpus_docs": len(docs), "pool_first_doc": pool[0].index, "pool_docs": len(pool),
            "tasks": {t: {"output_type": OUTPUT_TYPES[t], "metrics": list(TASK_METRICS[t]),
                          "data_file": os.path.join(data_dir, DATA_FILES[t]),
                          "num_docs": len(records[DATA_FILES[t]])} for t in names},
        }
        atomic_write(os.path.join(out_dir, INFO_FILE), json.dumps(info, indent=2) + "\n")
    except OSError as e:
        raise OfflineTaskError(f"cannot write under {out_dir}: {e.strerror or e}") from None
    return names


# ----------------------------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tasks.eval_harness.offline_tasks",
                                description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output-dir", required=True, help="where the YAML tasks and data go (lm-eval --include_path)")
    p.add_argument("--corpus", default=DEFAULT_CORPUS, help="jsonl(.gz) of {\"text\", \"source\"} documents "
                   "(default: the bundled data/corpus/python_docs.jsonl.gz)")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help="sampling seed (default %(default)s)")
    p.add_argument("--num-docs", type=int, default=DEFAULT_NUM_DOCS,
                   help="at most this many lm-eval documents per task (default %(default)s)")
    held = p.add_mutually_exclusive_group()
    held.add_argument("--split", default=DEFAULT_SPLIT,
                      help="the pretraining --split: documents after its train part are held out (default %(default)s)")
    held.add_argument("--heldout-docs", type=int, metavar="K", help="hold out the last K documents instead")
    p.add_argument("--tasks", nargs="+", choices=TASK_NAMES, metavar="TASK",
                   help=f"build only these ({', '.join(TASK_NAMES)})")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    prog = parser.prog

    def one_line_error(message: str) -> None:
        print(f"error: offline_tasks: {message}", file=sys.stderr)
        raise SystemExit(2)

    parser.error = one_line_error  # type: ignore[method-assign]
    args = parser.parse_args(list(argv) if argv is not None else None)
    try:
        names = build_offline_tasks(args.output_dir, corpus=args.corpus, seed=args.seed, num_docs=args.num_docs,
                                    split=args.split, heldout_docs=args.heldout_docs, tasks=args.tasks)
    except OfflineTaskError as e:
        print(f"error: offline_tasks: {e}", file=sys.stderr)
        return 2
    with open(os.path.join(args.output_dir, INFO_FILE), encoding="utf-8") as f:
        info = json.load(f)
    counts = ", ".join(f"{t} {info['tasks'][t]['num_docs']}" for t in names)
    print(f"{prog}: wrote {len(names)} tasks to {os.path.abspath(args.output_dir)} (documents: {counts}; "
          f"held-out pool: corpus documents {info['pool_first_doc']}..{info['corpus_docs'] - 1})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
