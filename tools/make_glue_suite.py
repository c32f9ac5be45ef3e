"""Build a small GLUE-format suite (all 8 tasks) from the text this repository ships, with honest labels.

GLUE itself cannot be downloaded here, so this tool writes files with GLUE's exact directory, file and column
layouts (the ones ``tasks/glue/data.py`` reads, spec §8) whose rows are made from real sentences of the bundled
corpus ``data/corpus/python_docs.jsonl.gz`` (CPython documentation, PSF license).  Every label is a real,
checkable property of the written text -- nothing is random noise -- so a model can learn it and the tests can
recompute it.  The tasks are *GLUE-shaped*, not GLUE: scores on them say nothing about real GLUE numbers.

    python tools/make_glue_suite.py --output-dir glue_suite            # 2000 / 300 / 100 rows per file
    python tools/make_glue_suite.py --output-dir glue_suite --tasks MRPC RTE --train-size 500 --seed 7

Text extraction
---------------
Each corpus line ``{"text": ..., "source": "dir/file.rst.txt#k"}`` is one document (a reST section), read by
``tasks/rest_prose.py``: its heading and its prose paragraphs (including the bodies of ``.. function::``/
``.. note::``-style directives); headings, code and literal blocks, tables, lists, field lists, comments and
other directives are dropped.  Inline markup is reduced to its text (``:func:`open``` -> ``open()``,
````x```` -> ``x``, ```text <url>`_`` -> ``text``, ``*x*`` -> ``x``).  Paragraphs are cut into sentences with
``megatron.data.sentence_splitter``; a sentence is used when it has 6-50 words, starts with an uppercase letter,
ends with ``.``/``?``/``!``, holds no leftover markup and is at least 60 % plain words -- and its text occurs
only once in the whole corpus (so "the same sentence elsewhere" can never contradict a label).  The *file* is
the source path before ``#``; the *genre* is its first directory (``library``, ``c-api``, ``howto``, ``faq``,
...; ``misc`` for top-level files).

Splits: within each genre the files are shuffled (``--seed``) and cut 80 % / 10 % / 10 % (by sentence count)
into train / dev / test, so no file -- hence no sentence -- is shared between the train, dev and test files.

Labels (a "word" is a whitespace-separated token)
-------------------------------------------------
* **MNLI** (premise = a sentence *a*):  ``entailment`` -- the hypothesis is the sentence that follows *a* in the
  same paragraph; ``neutral`` -- a sentence of the same file, in another paragraph and at least 3 kept sentences
  away; ``contradiction`` -- a sentence of another file of the same genre.  Genre column = corpus genre.
  ``train``/``dev_matched``/``test_matched`` come from the ``library`` and ``c-api`` genres;
  ``dev_mismatched``/``test_mismatched`` from all other genres (howto, faq, extending, distutils, ...).
  ``label1``..``label5`` all repeat ``gold_label`` (there are no annotators).  The parse columns are placeholders
  (a right-branching binary bracketing and a flat ``(ROOT (S (X tok) ...))`` tree of the tokens; no parser
  was run), ``promptID`` is the premise's sentence id and ``pairID`` = promptID + e/n/c as in MNLI (test
  files: promptID only).
* **QQP** ``is_duplicate``:  1 -- question2 is a noisy copy of question1 (each word dropped with p = 0.15, at
  least one and at most 30 % dropped, then two adjacent words swapped); 0 -- another sentence of the same file.
  Checkable: 1 iff question2's words are a sub-multiset of question1's and number at least 60 % of them.
  ``qid1``/``qid2`` number the distinct texts of the file.
* **QNLI**:  question = the heading of a corpus section; ``entailment`` -- the sentence comes from that
  section; ``not_entailment`` -- from a differently titled section of the same file (another file of the genre
  when the file has none).  Checkable: entailment iff the sentence's section heading equals the question.
* **RTE**:  sentence1 = 1-3 consecutive sentences of a paragraph; ``entailment`` -- sentence2 is a contiguous
  excerpt (at least half, at most all but one word) of one of them, hence entailed; ``not_entailment`` -- an
  excerpt of the same shape from another paragraph of the same file.  Checkable: entailment iff sentence2's
  words appear contiguously in sentence1.
* **SST-2** (sentiment stand-in):  0 ("negative") -- the sentence is negated: it contains one of
  ``NEGATION_WORDS`` (not, no, never, none, nothing, neither, nor, cannot, without, nobody, nowhere) or a word
  ending in ``n't``, written in lower case (or capitalized as the first word -- but a capitalized ``None`` is
  Python's None object, not a negation); 1 ("positive") -- it contains none.
* **CoLA** (acceptability):  1 -- the sentence exactly as written in the docs; 0 -- the same words with the
  order broken (two words swapped, a 3-5 word window shuffled, or one word moved; the first word and the final
  punctuation stay put) and the result is not a corpus sentence.  Column 2 is ``*`` for 0, empty for 1; the
  source column holds the genre.
* **STS-B** ``score`` = 5 x Jaccard overlap of the two sentences' lower-cased alphanumeric word *sets*, printed
  with 3 decimals.  Each row first draws a score bucket ([0,1), [1,2), [2,3), [3,4), [4,5]) evenly, then takes
  the first real corpus sentence landing in it among: the most overlapping of 40 sampled sentences of the same
  file, the next sentence, a random sentence of the same file, a sentence of another file (the last two
  first for bucket 0); failing that, a copy of *a* with words deleted to land in the bucket (the only
  non-corpus side; most rows above 2).  ``genre``/``filename`` are the corpus genre and file,
  ``source1``/``source2`` the two sections (``derived`` for a shortened copy), ``old_index`` is *a*'s id.
* **MRPC** ``Quality``:  1 -- #2 is #1 with 1-3 words deleted (order kept); 0 -- the real sentence of the same
  file that overlaps #1 most (of 40 sampled), a hard negative.  Checkable: 1 iff #2's words are a subsequence of
  #1's with 1-3 fewer words.  ``#1 ID``/``#2 ID``: corpus sentence ids; derived texts get ids from 10,000,000.

Binary tasks are exactly 50/50 and MNLI exactly one third per class (an extra row goes to the lower class ids),
in shuffled order; every anchor sentence is used at most once per file.  Each task and split has its own random
stream seeded from ``--seed``, so a task's files do not depend on which other ``--tasks`` were asked for.

Output: ``{output-dir}/{MNLI,QQP,QNLI,SST-2,CoLA,STS-B,MRPC,RTE}/`` with ``train.tsv``, ``dev.tsv`` and
``test.tsv`` (MNLI: ``train.tsv``, ``dev_matched.tsv``, ``dev_mismatched.tsv``, ``test_matched.tsv``,
``test_mismatched.tsv``), GLUE's headers (CoLA train/dev have none, as in GLUE), UTF-8, ``\\n`` line ends, plus
``make_glue_suite.json`` (arguments, rows and label counts per file).  ``--train-size``/``--dev-size``/
``--test-size`` are rows per file.  Everything is built in memory first; each file is then written to a
temporary name and renamed, so an interrupted run never leaves a half-written file.  Bad input (unknown task,
unreadable corpus, sizes the corpus cannot supply, ...) prints one ``error:`` line and exits with status 2.
"""
from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import re
import random
import sys
from collections import Counter
from dataclasses import dataclass, field

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from megatron.data.sentence_splitter import split_sentences  # noqa: E402
from tasks.rest_prose import has_markup, is_good_sentence, parse_rst  # noqa: E402

TASKS: tuple[str, ...] = ("MNLI", "QQP", "QNLI", "SST-2", "CoLA", "STS-B", "MRPC", "RTE")
DEFAULT_CORPUS = os.path.join(_ROOT, "data", "corpus", "python_docs.jsonl.gz")
SPLIT_FRACTIONS = (("train", 0.8), ("dev", 0.1), ("test", 0.1))
MNLI_MATCHED_GENRES = frozenset({"library", "c-api"})
NEGATION_WORDS = frozenset("not no never none nothing neither nor cannot without nobody nowhere".split())
DERIVED_ID_BASE = 10_000_000
INFO_FILE = "make_glue_suite.json"

MNLI_LABELS = ("contradiction", "entailment", "neutral")  # class-id order of spec §8
NLI2 = ("entailment", "not_entailment")

MNLI_TEST_HEADER = ("index", "promptID", "pairID", "genre", "sentence1_binary_parse", "sentence2_binary_parse",
                    "sentence1_parse", "sentence2_parse", "sentence1", "sentence2")
MNLI_TRAIN_HEADER = MNLI_TEST_HEADER + ("label1", "gold_label")
MNLI_DEV_HEADER = MNLI_TEST_HEADER + ("label1", "label2", "label3", "label4", "label5", "gold_label")
STSB_TEST_HEADER = ("index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1", "sentence2")
HEADERS: dict[str, dict[str, tuple[str, ...] | None]] = {
    "MNLI": {"train": MNLI_TRAIN_HEADER, "dev": MNLI_DEV_HEADER, "test": MNLI_TEST_HEADER},
    "QQP": {"train": ("id", "qid1", "qid2", "question1", "question2", "is_duplicate"),
            "test": ("id", "question1", "question2")},
    "QNLI": {"train": ("index", "question", "sentence", "label"), "test": ("index", "question", "sentence")},
    "RTE": {"train": ("index", "sentence1", "sentence2", "label"), "test": ("index", "sentence1", "sentence2")},
    "SST-2": {"train": ("sentence", "label"), "test": ("index", "sentence")},
    "CoLA": {"train": None, "test": ("index", "sentence")},
    "MRPC": {"train": ("Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"),
             "test": ("index", "#1 ID", "#2 ID", "#1 String", "#2 String")},
    "STS-B": {"train": STSB_TEST_HEADER + ("score",), "test": STSB_TEST_HEADER},
}
"""Header per task and file kind ("dev" is "train" unless listed); None = no header line (CoLA train/dev)."""


class SuiteError(Exception):
    """Bad input or a request the corpus cannot satisfy (reported as one ``error:`` line)."""


# ----------------------------------------------------------------------------------------------------------------
# Corpus: reST -> prose paragraphs -> sentences
# ----------------------------------------------------------------------------------------------------------------

_ALNUM = re.compile(r"[a-z0-9]+")
SENTENCE_WORDS = (6, 50)   # a kept sentence's length in words (inclusive)
MIN_PLAIN_FRACTION = 0.6   # ... and the least fraction of plain words in it
MAX_TITLE_WORDS = 20       # a longer heading is not used as a QNLI question


def is_task_sentence(s: str) -> bool:
    """The sentence filter of the module docstring (uniqueness is checked by the corpus loader)."""
    return is_good_sentence(s, min_words=SENTENCE_WORDS[0], max_words=SENTENCE_WORDS[1],
                            min_plain_fraction=MIN_PLAIN_FRACTION)


@dataclass
class Sentence:
    sid: int         # index in Corpus.sentences
    text: str
    doc: int         # index in Corpus.docs
    para: int        # global paragraph id
    pos: int         # position among all sentences of the paragraph (kept or not)
    fpos: int        # position among the kept sentences of the file


@dataclass
class Doc:
    source: str
    file: str
    genre: str
    title: str | None
    sids: list[int] = field(default_factory=list)


@dataclass
class Corpus:
    docs: list[Doc]
    sentences: list[Sentence]
    files: dict[str, list[int]]          # file -> its kept sentence ids, in text order
    genre_of: dict[str, str]             # file -> genre
    next_of: dict[int, int]              # sid -> sid of the sentence right after it in the same paragraph

    def file_of(self, sid: int) -> str:
        return self.docs[self.sentences[sid].doc].file

    def title_of(self, sid: int) -> str | None:
        return self.docs[self.sentences[sid].doc].title


def _open_text(path: str):
    return gzip.open(path, "rt", encoding="utf-8") if path.endswith(".gz") else open(path, encoding="utf-8")


def load_corpus(path: str = DEFAULT_CORPUS) -> Corpus:
    """Read a jsonl(.gz) corpus of {"text", optional "source"} lines into documents and kept sentences."""
    records: list[tuple[str, str]] = []
    try:
        with _open_text(path) as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise SuiteError(f"{path}:{lineno}: not JSON ({e.msg})") from None
                if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
                    raise SuiteError(f"{path}:{lineno}: expected an object with a string 'text'")
                source = obj.get("source")
                records.append((obj["text"], source if isinstance(source, str) and source else f"doc{lineno}"))
    except OSError as e:
        raise SuiteError(f"cannot read corpus {path!r}: {e.strerror or e}") from None
    except (EOFError, UnicodeDecodeError, gzip.BadGzipFile) as e:
        raise SuiteError(f"cannot read corpus {path!r}: {e}") from None

    raw: list[tuple[int, int, int, str]] = []  # (doc, para, pos, text) of sentences passing the filter
    docs: list[Doc] = []
    para_id = 0
    for text, source in records:
        file = source.split("#", 1)[0]
        genre = file.split("/", 1)[0] if "/" in file else "misc"
        title, paragraphs = parse_rst(text)
        if title is not None and (len(title.split()) > MAX_TITLE_WORDS or has_markup(title)):
            title = None
        docs.append(Doc(source, file, genre, title))
        for p in paragraphs:
            for pos, s in enumerate(split_sentences(p)):
                if is_task_sentence(s):
                    raw.append((len(docs) - 1, para_id, pos, s))
            para_id += 1
    counts = Counter(t for *_, t in raw)
    sentences: list[Sentence] = []
    files: dict[str, list[int]] = {}
    genre_of: dict[str, str] = {}
    for d, para, pos, s in raw:
        if counts[s] != 1:
            continue
        doc = docs[d]
        fl = files.setdefault(doc.file, [])
        genre_of[doc.file] = doc.genre
        sent = Sentence(len(sentences), s, d, para, pos, len(fl))
        sentences.append(sent)
        fl.append(sent.sid)
        doc.sids.append(sent.sid)
    next_of = {}
    for a, b in zip(sentences, sentences[1:]):
        if a.para == b.para and b.pos == a.pos + 1:
            next_of[a.sid] = b.sid
    return Corpus(docs, sentences, files, genre_of, next_of)


# ----------------------------------------------------------------------------------------------------------------
# Splits and pools
# ----------------------------------------------------------------------------------------------------------------

def split_files(corpus: Corpus, seed: int) -> dict[str, str]:
    """file -> "train"/"dev"/"test": per genre, shuffled files cut at 80/10/10 % of the kept sentences."""
    by_genre: dict[str, list[str]] = {}
    for f in sorted(corpus.files):
        by_genre.setdefault(corpus.genre_of[f], []).append(f)
    out: dict[str, str] = {}
    for genre in sorted(by_genre):
        files = by_genre[genre]
        random.Random(f"glue-suite:{seed}:split:{genre}").shuffle(files)
        total = sum(len(corpus.files[f]) for f in files)
        done = 0
        for f in files:
            mid = (done + len(corpus.files[f]) / 2) / total  # where the file's middle falls
            acc = 0.0
            for name, frac in SPLIT_FRACTIONS:
                acc += frac
                if mid < acc or name == SPLIT_FRACTIONS[-1][0]:
                    out[f] = name
                    break
            done += len(corpus.files[f])
    return out


def mnli_groups(corpus: Corpus) -> dict[str, str]:
    """file -> "matched"/"mismatched" (genres library/c-api are matched; a corpus without both kinds of genre
    gets every fourth file, in sorted order, as mismatched)."""
    files = sorted(corpus.files)
    genres = {corpus.genre_of[f] for f in files}
    if genres & MNLI_MATCHED_GENRES and genres - MNLI_MATCHED_GENRES:
        return {f: "matched" if corpus.genre_of[f] in MNLI_MATCHED_GENRES else "mismatched" for f in files}
    return {f: "mismatched" if i % 4 == 3 else "matched" for i, f in enumerate(files)}


@dataclass
class Pool:
    """The sentences one output file may use: those of a set of files."""
    corpus: Corpus
    files: list[str]
    rng: random.Random

    def __post_init__(self) -> None:
        self.sids = [s for f in self.files for s in self.corpus.files[f]]
        self.by_genre: dict[str, list[int]] = {}
        for f in self.files:
            self.by_genre.setdefault(self.corpus.genre_of[f], []).extend(self.corpus.files[f])
        self.used: set[int] = set()

    def anchors(self) -> list[int]:
        order = list(self.sids)
        self.rng.shuffle(order)
        return order

    def other_file(self, sid: int, tries: int = 30) -> int | None:
        """A random sentence of another file of the same genre (any other file of the pool as a fallback)."""
        f = self.corpus.file_of(sid)
        for cands in (self.by_genre[self.corpus.genre_of[f]], self.sids):
            for _ in range(tries):
                c = self.rng.choice(cands)
                if self.corpus.file_of(c) != f:
                    return c
        return None

    def same_file(self, sid: int, ok, tries: int = 30) -> int | None:
        cands = self.corpus.files[self.corpus.file_of(sid)]
        for _ in range(tries):
            c = self.rng.choice(cands)
            if c != sid and ok(c):
                return c
        return None

    def same_file_else_other(self, sid: int, ok) -> int | None:
        """A sentence of the same file passing `ok`, else one of another file of the genre."""
        b = self.same_file(sid, ok)
        return b if b is not None else self.other_file(sid)


def balanced_labels(n: int, k: int, rng: random.Random) -> list[int]:
    labels = [i % k for i in range(n)]
    rng.shuffle(labels)
    return labels


# ----------------------------------------------------------------------------------------------------------------
# Text properties (the tests recompute labels with these definitions)
# ----------------------------------------------------------------------------------------------------------------

def word_set(s: str) -> set[str]:
    return set(_ALNUM.findall(s.lower()))


def jaccard(a: str, b: str) -> float:
    x, y = word_set(a), word_set(b)
    return len(x & y) / len(x | y) if x | y else 0.0


def stsb_score(a: str, b: str) -> str:
    return f"{5.0 * jaccard(a, b):.3f}"


_WORD = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)?")


def is_negated(s: str) -> bool:
    """SST-2 "negative": a NEGATION_WORDS word or a word ending in n't, written in lower case -- or capitalized
    as the first word, except ``None`` (in these docs, Python's None object, not a negation)."""
    for i, w in enumerate(_WORD.findall(s)):
        if i == 0 and w != "None":
            w = w[:1].lower() + w[1:]
        if w in NEGATION_WORDS or w.endswith("n't"):
            return True
    return False


def is_noisy_copy(q1: str, q2: str) -> bool:
    """QQP duplicate: q2's words are a sub-multiset of q1's and at least 60 % as many."""
    a, b = Counter(q1.split()), Counter(q2.split())
    return not (b - a) and sum(b.values()) >= 0.6 * sum(a.values())


def is_subsequence(short: list[str], long: list[str]) -> bool:
    it = iter(long)
    return all(w in it for w in short)


def is_shortened(s1: str, s2: str) -> bool:
    """MRPC paraphrase: s2's words are a subsequence of s1's with 1-3 words fewer."""
    a, b = s1.split(), s2.split()
    return 1 <= len(a) - len(b) <= 3 and is_subsequence(b, a)


def is_excerpt(premise: str, hypothesis: str) -> bool:
    """RTE entailment: the hypothesis' words appear contiguously in the premise."""
    return f" {' '.join(hypothesis.split())} " in f" {' '.join(premise.split())} "


def word_order_key(s: str) -> tuple[str, ...]:
    """Sorted word/punctuation tokens: equal for a sentence and any CoLA corruption of it."""
    return tuple(sorted(re.findall(r"\w+|[^\w\s]", s)))


def _tokens_for_parse(s: str) -> list[str]:
    toks = re.findall(r"\w+(?:'\w+)?|[^\w\s]", s)
    return [{"(": "-LRB-", ")": "-RRB-"}.get(t, t) for t in toks]


def binary_parse(s: str) -> str:
    toks = _tokens_for_parse(s)
    out = toks[-1]
    for t in reversed(toks[:-1]):
        out = f"( {t} {out} )"
    return out if len(toks) > 1 else f"( {out} )"


def flat_parse(s: str) -> str:
    return "(ROOT (S " + " ".join(f"(X {t})" for t in _tokens_for_parse(s)) + "))"


# ----------------------------------------------------------------------------------------------------------------
# Task builders: each returns rows (tuples of str) of the train/dev layout, labels included
# ----------------------------------------------------------------------------------------------------------------

class _Short(Exception):
    def __init__(self, built: int) -> None:
        self.built = built


def _fill(n: int, labels: list[int], anchors: list[int], make) -> list:
    """For each wanted label, try anchors in order until `make(anchor, label)` builds an example."""
    out = []
    queues = {lab: iter(anchors) for lab in set(labels)}
    taken: set[int] = set()
    for lab in labels:
        for a in queues[lab]:
            if a in taken:
                continue
            ex = make(a, lab)
            if ex is not None:
                taken.add(a)
                out.append(ex)
                break
        else:
            raise _Short(len(out))
    return out


def _far_same_file(c: Corpus, a: int):
    sa = c.sentences[a]
    return lambda x: c.sentences[x].para != sa.para and abs(c.sentences[x].fpos - sa.fpos) >= 3


def build_mnli(pool: Pool, n: int, genre_label: bool = True) -> list[tuple]:
    c, rng = pool.corpus, pool.rng
    labels = balanced_labels(n, 3, rng)

    def make(a: int, lab: int):
        if lab == 1:
            b = c.next_of.get(a)
        elif lab == 2:
            b = pool.same_file(a, _far_same_file(c, a))
        else:
            b = pool.other_file(a)
        if b is None:
            return None
        return a, b, lab

    rows = []
    for i, (a, b, lab) in enumerate(_fill(n, labels, pool.anchors(), make)):
        s1, s2 = c.sentences[a].text, c.sentences[b].text
        gold = MNLI_LABELS[lab]
        rows.append((str(i), str(a), f"{a}{gold[0]}", c.docs[c.sentences[a].doc].genre, binary_parse(s1),
                     binary_parse(s2), flat_parse(s1), flat_parse(s2), s1, s2, gold))
    return rows


def _drop_words(words: list[str], rng: random.Random, k: int) -> list[str]:
    drop = set(rng.sample(range(len(words)), k))
    return [w for i, w in enumerate(words) if i not in drop]


def build_qqp(pool: Pool, n: int) -> list[tuple]:
    c, rng = pool.corpus, pool.rng
    labels = balanced_labels(n, 2, rng)

    def make(a: int, lab: int):
        q1 = c.sentences[a].text
        if lab == 1:
            words = q1.split()
            k = min(max(1, sum(rng.random() < 0.15 for _ in words)), int(0.3 * len(words)))
            kept = _drop_words(words, rng, k)
            i = rng.randrange(len(kept) - 1)
            kept[i], kept[i + 1] = kept[i + 1], kept[i]
            q2 = " ".join(kept)
            ok = q2 != q1 and is_noisy_copy(q1, q2)
        else:
            b = pool.same_file_else_other(a, lambda x: True)
            q2 = c.sentences[b].text if b is not None else ""
            ok = bool(q2) and not is_noisy_copy(q1, q2)
        return (q1, q2, lab) if ok else None

    rows, qid = [], {}
    for i, (q1, q2, lab) in enumerate(_fill(n, labels, pool.anchors(), make)):
        i1 = qid.setdefault(q1, len(qid) + 1)
        i2 = qid.setdefault(q2, len(qid) + 1)
        rows.append((str(i), str(i1), str(i2), q1, q2, str(lab)))
    return rows


def build_qnli(pool: Pool, n: int) -> list[tuple]:
    c, rng = pool.corpus, pool.rng
    labels = balanced_labels(n, 2, rng)
    anchors = [a for a in pool.anchors() if c.title_of(a) is not None]

    def make(a: int, lab: int):
        title = c.title_of(a)
        if lab == 0:
            return title, a, lab
        differs = lambda x: (c.title_of(x) or "").lower() != title.lower()  # noqa: E731
        b = pool.same_file(a, differs)
        if b is None:
            b = pool.other_file(a)
            if b is None or not differs(b):
                return None
        return title, b, lab

    return [(str(i), q, c.sentences[s].text, NLI2[lab])
            for i, (q, s, lab) in enumerate(_fill(n, labels, anchors, make))]


def _excerpt(s: str, rng: random.Random) -> str:
    words = s.split()
    lo = max(4, math.ceil(len(words) / 2))
    length = rng.randint(min(lo, len(words) - 1), len(words) - 1)
    start = rng.randint(0, len(words) - length)
    return " ".join(words[start:start + length])


def build_rte(pool: Pool, n: int) -> list[tuple]:
    c, rng = pool.corpus, pool.rng
    labels = balanced_labels(n, 2, rng)

    def make(a: int, lab: int):
        sids = [a]
        for _ in range(rng.randint(0, 2)):
            nxt = c.next_of.get(sids[-1])
            if nxt is None:
                break
            sids.append(nxt)
        premise = " ".join(c.sentences[s].text for s in sids)
        if lab == 0:
            hyp = _excerpt(c.sentences[rng.choice(sids)].text, rng)
        else:
            para = c.sentences[a].para
            b = pool.same_file_else_other(a, lambda x: c.sentences[x].para != para)
            if b is None:
                return None
            hyp = _excerpt(c.sentences[b].text, rng)
        if is_excerpt(premise, hyp) != (lab == 0):
            return None
        return premise, hyp, lab

    return [(str(i), p, h, NLI2[lab]) for i, (p, h, lab) in enumerate(_fill(n, labels, pool.anchors(), make))]


def build_sst2(pool: Pool, n: int) -> list[tuple]:
    c, rng = pool.corpus, pool.rng
    labels = balanced_labels(n, 2, rng)

    def make(a: int, lab: int):
        s = c.sentences[a].text
        return (s, lab) if is_negated(s) == (lab == 0) else None

    return [(s, str(lab)) for s, lab in _fill(n, labels, pool.anchors(), make)]


def corrupt_order(s: str, rng: random.Random) -> str:
    """Break the word order of `s` (first word and final punctuation fixed); may return `s` unchanged."""
    m = re.search(r"[.?!]+$", s)
    end = m.group(0) if m else ""
    words = s[: len(s) - len(end)].split()
    kind = rng.randrange(3)
    idx = list(range(1, len(words)))
    if kind == 0:
        i, j = rng.sample(idx, 2)
        words[i], words[j] = words[j], words[i]
    elif kind == 1:
        w = min(rng.randint(3, 5), len(idx))
        start = rng.randint(1, len(words) - w)
        window = words[start:start + w]
        rng.shuffle(window)
        words[start:start + w] = window
    else:
        i = rng.choice(idx)
        w = words.pop(i)
        words.insert(rng.choice([k for k in range(1, len(words) + 1) if k != i]), w)
    return " ".join(words) + end


def build_cola(pool: Pool, n: int, real: set[str]) -> list[tuple]:
    c, rng = pool.corpus, pool.rng
    labels = balanced_labels(n, 2, rng)

    def make(a: int, lab: int):
        s = c.sentences[a].text
        if lab == 0:
            for _ in range(5):
                t = corrupt_order(s, rng)
                if t != s and t not in real:
                    return c.docs[c.sentences[a].doc].genre, t, lab
            return None
        return c.docs[c.sentences[a].doc].genre, s, lab

    return [(g, str(lab), "" if lab else "*", s) for g, s, lab in _fill(n, labels, pool.anchors(), make)]


def _most_similar(pool: Pool, a: int, k: int = 40) -> int | None:
    c = pool.corpus
    cands = [x for x in c.files[c.file_of(a)] if x != a]
    if not cands:
        return None
    sample = pool.rng.sample(cands, min(k, len(cands)))
    sa = c.sentences[a].text
    return max(sample, key=lambda x: (jaccard(sa, c.sentences[x].text), -x))


def _score(s1: str, s2: str) -> float:
    return float(stsb_score(s1, s2))


def _in_bucket(score: float, t: int) -> bool:
    return t <= score < t + 1 if t < 4 else score >= 4


def build_stsb(pool: Pool, n: int) -> list[tuple]:
    c, rng = pool.corpus, pool.rng
    buckets = balanced_labels(n, 5, rng)

    def make(a: int, t: int):
        s1 = c.sentences[a].text
        near = [_most_similar(pool, a), c.next_of.get(a)]
        far = [pool.same_file(a, lambda x: True), pool.other_file(a)]
        for b in (far + near if t == 0 else near + far):
            if b is not None and _in_bucket(_score(s1, c.sentences[b].text), t):
                return a, b, c.sentences[b].text
        if t == 0:
            return None
        words = s1.split()
        for _ in range(12):  # a shortened copy whose overlap lands in the bucket
            target = rng.uniform(t / 5, min(1.0, (t + 1) / 5))
            k = min(len(words) - 1, max(1, round(len(words) * (1 - target))))
            s2 = " ".join(_drop_words(words, rng, k))
            if _in_bucket(_score(s1, s2), t):
                return a, None, s2
        return None

    rows = []
    for i, (a, b, s2) in enumerate(_fill(n, buckets, pool.anchors(), make)):
        doc = c.docs[c.sentences[a].doc]
        s1 = c.sentences[a].text
        src2 = "derived" if b is None else c.docs[c.sentences[b].doc].source
        rows.append((str(i), doc.genre, doc.file, "py3.11", str(a), doc.source, src2, s1, s2, stsb_score(s1, s2)))
    return rows


def build_mrpc(pool: Pool, n: int) -> list[tuple]:
    c, rng = pool.corpus, pool.rng
    labels = balanced_labels(n, 2, rng)
    derived = iter(range(DERIVED_ID_BASE, DERIVED_ID_BASE + 10 * n + 10))

    def make(a: int, lab: int):
        s1 = c.sentences[a].text
        if lab == 1:
            words = s1.split()
            s2 = " ".join(_drop_words(words, rng, rng.randint(1, 3)))
            return (a, None, s1, s2, lab) if is_shortened(s1, s2) else None
        b = _most_similar(pool, a)
        if b is None or is_shortened(s1, c.sentences[b].text):
            return None
        return a, b, s1, c.sentences[b].text, lab

    return [(str(lab), str(a), str(next(derived) if b is None else b), s1, s2)
            for a, b, s1, s2, lab in _fill(n, labels, pool.anchors(), make)]


# ----------------------------------------------------------------------------------------------------------------
# Suite
# ----------------------------------------------------------------------------------------------------------------

def task_files(task: str) -> list[tuple[str, str, str]]:
    """(file name, kind train/dev/test, split) for a task, in GLUE's names."""
    if task == "MNLI":
        return [("train.tsv", "train", "train"), ("dev_matched.tsv", "dev", "dev"),
                ("dev_mismatched.tsv", "dev", "dev"), ("test_matched.tsv", "test", "test"),
                ("test_mismatched.tsv", "test", "test")]
    return [("train.tsv", "train", "train"), ("dev.tsv", "dev", "dev"), ("test.tsv", "test", "test")]


def _to_test_row(task: str, row: tuple) -> tuple:
    """A train/dev-layout row (labels included) -> the task's unlabeled test layout."""
    if task == "MNLI":
        return (*row[:2], row[1], *row[3:10])  # pairID without the label letter
    if task == "QQP":
        return row[0], row[3], row[4]
    if task in ("QNLI", "RTE", "STS-B"):
        return row[:-1]
    if task == "MRPC":
        return row[1:]  # index is prepended by the caller
    if task == "SST-2":
        return (row[0],)
    if task == "CoLA":
        return (row[3],)
    raise AssertionError(task)


def build_task(task: str, corpus: Corpus, sizes: dict[str, int], seed: int,
               splits: dict[str, str] | None = None, real: set[str] | None = None) -> dict[str, list[tuple]]:
    """file name -> rows (header first when the layout has one), all as tuples of strings."""
    splits = splits if splits is not None else split_files(corpus, seed)
    groups = mnli_groups(corpus) if task == "MNLI" else None
    out: dict[str, list[tuple]] = {}
    for name, kind, split in task_files(task):
        files = sorted(f for f, s in splits.items() if s == split)
        if groups is not None:
            want = "mismatched" if "mismatched" in name else "matched"
            files = [f for f in files if groups[f] == want]
        pool = Pool(corpus, files, random.Random(f"glue-suite:{seed}:{task}:{name}"))
        n = sizes[kind]
        try:
            if task == "MNLI":
                rows = build_mnli(pool, n)
            elif task == "QQP":
                rows = build_qqp(pool, n)
            elif task == "QNLI":
                rows = build_qnli(pool, n)
            elif task == "RTE":
                rows = build_rte(pool, n)
            elif task == "SST-2":
                rows = build_sst2(pool, n)
            elif task == "CoLA":
                rows = build_cola(pool, n, real if real is not None else {s.text for s in corpus.sentences})
            elif task == "STS-B":
                rows = build_stsb(pool, n)
            elif task == "MRPC":
                rows = build_mrpc(pool, n)
            else:
                raise SuiteError(f"unknown task {task!r}")
        except _Short as e:
            flag = {"train": "--train-size", "dev": "--dev-size", "test": "--test-size"}[kind]
            raise SuiteError(f"{task}/{name}: the corpus gives only {e.built} of the {n} rows asked for; "
                             f"lower {flag}") from None
        if kind == "train" and task == "MNLI":
            rows = [(*r[:10], r[10], r[10]) for r in rows]
        elif kind == "dev" and task == "MNLI":
            rows = [(*r[:10], *([r[10]] * 5), r[10]) for r in rows]
        elif kind == "test":
            rows = [_to_test_row(task, r) for r in rows]
            if task in ("SST-2", "CoLA", "MRPC"):
                rows = [(str(i), *r) for i, r in enumerate(rows)]
        header = header_of(task, kind)
        out[name] = ([header] if header is not None else []) + rows
    return out


def header_of(task: str, kind: str) -> tuple[str, ...] | None:
    """GLUE header of a task's train/dev/test file (None: no header line)."""
    return HEADERS[task].get(kind, HEADERS[task]["train"])


def render_tsv(rows: list[tuple]) -> str:
    for r in rows:
        for cell in r:
            if any(ch in cell for ch in "\t\n\r"):
                raise AssertionError(f"cell with a tab or newline: {cell!r}")
    return "".join("\t".join(r) + "\n" for r in rows)


def atomic_write(path: str, text: str) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _label_counts(task: str, name: str, rows: list[tuple]) -> dict[str, int] | None:
    if name.startswith("test"):
        return None
    body = rows if task == "CoLA" else rows[1:]
    col = {"MNLI": -1, "QQP": 5, "QNLI": 3, "RTE": 3, "SST-2": 1, "CoLA": 1, "MRPC": 0}.get(task)
    if col is None:  # STS-B: score histogram by integer bucket
        return dict(sorted(Counter(str(min(4, int(float(r[-1])))) for r in body).items()))
    return dict(sorted(Counter(r[col] for r in body).items()))


def parse_tasks(values: list[str] | None) -> list[str]:
    if not values:
        return list(TASKS)
    lookup = {t.lower(): t for t in TASKS}
    out: list[str] = []
    for v in values:
        for name in filter(None, (x.strip() for x in v.split(","))):
            if name.lower() not in lookup:
                raise SuiteError(f"unknown task {name!r} in --tasks (choose from {', '.join(TASKS)})")
            if lookup[name.lower()] not in out:
                out.append(lookup[name.lower()])
    if not out:
        raise SuiteError("--tasks names no task")
    return out


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--output-dir", required=True, help="suite root; task directories are created under it")
    ap.add_argument("--tasks", nargs="+", default=None, help=f"subset of {' '.join(TASKS)} (space or comma separated)")
    ap.add_argument("--corpus", default=DEFAULT_CORPUS, help="jsonl(.gz) with a 'text' (and 'source') per line")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--train-size", type=int, default=2000, help="rows in each train file")
    ap.add_argument("--dev-size", type=int, default=300, help="rows in each dev file")
    ap.add_argument("--test-size", type=int, default=100, help="rows in each test file")
    return ap


def make_suite(output_dir: str, tasks: list[str], sizes: dict[str, int], seed: int,
               corpus: Corpus | str = DEFAULT_CORPUS, corpus_name: str | None = None) -> dict:
    """Build every file in memory, then write them atomically; returns the info written to make_glue_suite.json."""
    for kind, n in sizes.items():
        if n < 1:
            raise SuiteError(f"--{kind}-size must be >= 1, got {n}")
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise SuiteError(f"--output-dir {output_dir!r} exists and is not a directory")
    if isinstance(corpus, str):
        corpus_name = corpus_name or corpus
        corpus = load_corpus(corpus)
    splits = split_files(corpus, seed)
    real = {s.text for s in corpus.sentences}
    built = {task: build_task(task, corpus, sizes, seed, splits, real) for task in tasks}
    info = {"tool": "tools/make_glue_suite.py", "tasks": {}}
    try:
        for task, files in built.items():
            tdir = os.path.join(output_dir, task)
            os.makedirs(tdir, exist_ok=True)
            entry = info["tasks"][task] = {"corpus": corpus_name, "seed": seed, "sizes": sizes, "files": {}}
            for (name, kind, _split), rows in zip(task_files(task), files.values()):
                atomic_write(os.path.join(tdir, name), render_tsv(rows))
                n_rows = len(rows) - (header_of(task, kind) is not None)
                entry["files"][name] = {"rows": n_rows, "labels": _label_counts(task, name, rows)}
        info_path = os.path.join(output_dir, INFO_FILE)
        old = {}
        if os.path.exists(info_path):  # keep the entries of tasks written by earlier runs into the same directory
            try:
                with open(info_path, encoding="utf-8") as fh:
                    old = json.load(fh).get("tasks", {})
            except (OSError, ValueError, AttributeError):
                old = {}
        merged = dict(info, tasks={**old, **info["tasks"]}) if isinstance(old, dict) else info
        atomic_write(info_path, json.dumps(merged, indent=2) + "\n")
    except OSError as e:
        raise SuiteError(f"cannot write under {output_dir!r}: {e.strerror or e}") from None
    return info


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        tasks = parse_tasks(args.tasks)
        sizes = {"train": args.train_size, "dev": args.dev_size, "test": args.test_size}
        info = make_suite(args.output_dir, tasks, sizes, args.seed, args.corpus)
    except SuiteError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    for task, files in info["tasks"].items():
        desc = ", ".join(f"{name} {v['rows']}" for name, v in files["files"].items())
        print(f"{task}: {desc}")
    print(f"wrote {len(info['tasks'])} task(s) under {args.output_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
