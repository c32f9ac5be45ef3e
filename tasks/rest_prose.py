"""reST source -> a section's title and its prose paragraphs as plain text, and a "good sentence" test.

Shared by the tools that make tasks from the bundled corpus ``data/corpus/python_docs.jsonl.gz`` (CPython
documentation sources, one reST section per line): ``tools/make_glue_suite.py`` and
``tasks/eval_harness/offline_tasks.py``.  No dependencies beyond ``re``; sentence splitting is left to the
callers (``megatron.data.sentence_splitter``).

* :func:`parse_rst` -- ``(title, paragraphs)`` of one section.  The title is a heading on the first lines
  (underlined, or over- and underlined).  A paragraph is a block of lines between blank lines; it is kept when
  it is prose: not a heading or table (a line of ``====``-style punctuation), not a literal block (the blocks
  indented under a paragraph ending in ``::``), not a directive or comment (``..``) -- but the indented body of
  an API or admonition directive (``.. function::``, ``.. note::``, ... :data:`PROSE_DIRECTIVES`) is prose --
  not a doctest, field list, table row or bullet/enumerated list item (by its first characters), and not a
  ragged block (definition and option lists).  Each kept paragraph is joined onto one line and passed
  through :func:`clean_inline`; empty ones are dropped.  A paragraph ending in ``::`` is kept as written.
* :func:`clean_inline` -- inline markup reduced to the text Sphinx shows: ``:func:`open``` -> ``open()``,
  ``:class:`~os.PathLike``` -> ``PathLike``, ``:ref:`text <target>``` -> ``text``, ````x```` -> ``x``,
  ```text <url>`_`` -> ``text``, ``*x*``/``**x**`` -> ``x``, footnote references dropped, backslash escapes
  resolved (``\\ `` vanishes, ``\\x`` -> ``x``) outside inline literals, whose backslashes are kept;
  whitespace runs collapsed.
* :func:`has_markup` -- whether cleaned text still holds markup-like characters (a backtick, ``|``, ``*``,
  a backslash or ``::``): text a caller may want to drop.
* :func:`is_good_sentence` -- a sentence usable as task text: a word count in a range, a capital first letter,
  a final ``.``/``?``/``!``, no leftover markup, and at least a given fraction of plain words.
"""
from __future__ import annotations

import re
from typing import Callable, NamedTuple

__all__ = ["PROSE_DIRECTIVES", "Section", "clean_inline", "has_markup", "is_good_sentence", "parse_rst",
           "prose_paragraphs"]

_UNDERLINE = re.compile(r"^([=\-*~^\"#+`'.:_])\1{3,}\s*$")  # a heading's under/overline, or a table border
_DIRECTIVE = re.compile(r"\.\.\s+([\w:-]+)::")
PROSE_DIRECTIVES: frozenset[str] = frozenset("""
    function method class attribute data exception decorator decoratormethod classmethod staticmethod
    abstractmethod coroutinefunction coroutinemethod awaitablefunction awaitablemethod module describe
    opcode cmdoption option envvar pdbcommand 2to3fixer audit-event note warning important tip hint caution
    attention danger seealso impl-detail versionadded versionchanged deprecated deprecated-removed
    c:function c:macro c:type c:member c:var c:struct c:data cfunction cmacro ctype cmember cvar
""".split())
"""Directives whose indented body is prose (API descriptions, admonitions); other directive bodies are skipped."""
# doctest, table row or field list (+ | = :), bullet (* -), enumerated list item (#. 1. 1) a) (a)).  A block
# starting with ".." ("..." included) never gets here: it is handled as a directive or comment.
_NOT_PROSE_START = re.compile(r"(>>>|[+|=:]|[*\-] |#\. |\d+[.)] |\(?[a-zA-Z0-9]\) )")

_KEEP_BACKSLASH = "\0"  # stands in for a backslash inside an inline literal until escapes are resolved
_PY_XREF_ROLES = frozenset("func meth class attr data exc obj mod const type".split())  # py: prefix optional


def _role(m: re.Match[str]) -> str:
    """The text Sphinx shows for ``:role:`target``` without an explicit title.

    A leading ``!`` (no link) is dropped.  Python and C domain cross-references: a leading ``~`` keeps only the
    last dotted component, leading dots of a Python target (they only steer the lookup) are dropped, and
    functions and methods get ``()``.  Other roles (``:file:`~/.pythonrc.py```, ``:envvar:``, ...) show their
    text as written.
    """
    name, body = m.group(1), m.group(2).lstrip("!")
    domain, _, kind = name.rpartition(":")
    python = domain in ("", "py") and kind in _PY_XREF_ROLES
    if not (python or domain in ("c", "cpp")):
        return body
    if python:
        body = body.lstrip(".")
    if body.startswith("~"):
        body = body[1:].split(".")[-1]
    if kind in ("func", "meth") and not body.endswith(")"):
        body += "()"
    return body


def _literal(m: re.Match[str]) -> str:
    return m.group(1).replace("\\", _KEEP_BACKSLASH)


# (substring that must be present, pattern, replacement), applied in this order; the substring test skips
# patterns that cannot match (most paragraphs have little markup).
_INLINE_SUBS: list[tuple[str, re.Pattern[str], str | Callable[[re.Match[str]], str]]] = [
    (trigger, re.compile(pattern), replacement) for trigger, pattern, replacement in (
        (":`", r":[\w:.+-]+:`~?([^`<]*?)\s*<[^`>]*>`", r"\1"),        # :ref:`text <target>`
        (":`", r":([\w:.+-]+):`([^`]+)`", _role),                     # :func:`open`, :class:`~a.B`
        ("``", r"``([^`]+)``", _literal),                             # ``literal``
        ("`_", r"`([^`<]*?)\s*<[^`>]*>`__?", r"\1"),                  # `text <url>`_
        ("`_", r"`([^`]+)`__?", r"\1"),                               # `text`_
        ("**", r"\*\*(\S(?:[^*]*\S)?)\*\*", r"\1"),                   # **strong**
        ("*", r"(?<![\w*])\*(\S(?:[^*]*\S)?)\*(?![\w*])", r"\1"),    # *emphasis*
        ("]_", r"\s*\[(?:#\w*|\d+)\]_", ""),                         # footnote references [1]_ [#]_ [#name]_
    )
]
_ESCAPE = re.compile(r"\\(.?)", re.S)
_SPACES = re.compile(r"\s+")
_MARKUP = re.compile(r"[`|\\*]|::")
_SENTENCE_SHAPE = re.compile(r"[A-Z][^\n]*[.?!]")
_PLAIN_WORD = re.compile(r"[A-Za-z][a-z]*[,;:.?!]?")


class Section(NamedTuple):
    """What :func:`parse_rst` finds in one reST section."""

    title: str | None      # the heading, inline markup cleaned; None when the text opens without one
    paragraphs: list[str]  # the prose paragraphs, each on one line, inline markup cleaned


def _unescape(m: re.Match[str]) -> str:
    char = m.group(1)
    return "" if not char or char.isspace() else char


def clean_inline(text: str) -> str:
    """Inline reST markup reduced to its text, escapes resolved, whitespace runs made one space (module doc)."""
    text = text.replace(_KEEP_BACKSLASH, "")
    for trigger, pattern, replacement in _INLINE_SUBS:
        if trigger in text:
            text = pattern.sub(replacement, text)
    if "\\" in text:
        text = _ESCAPE.sub(_unescape, text)
    text = text.replace(_KEEP_BACKSLASH, "\\")
    return _SPACES.sub(" ", text).strip()


def has_markup(text: str) -> bool:
    """True when (cleaned) text still holds a backtick, ``|``, ``*``, a backslash or ``::``."""
    return _MARKUP.search(text) is not None


def _blocks(lines: list[str]) -> list[list[str]]:
    """The runs of non-blank lines (right-stripped)."""
    blocks: list[list[str]] = []
    current: list[str] = []
    for line in lines + [""]:
        if line.strip():
            current.append(line.rstrip())
        elif current:
            blocks.append(current)
            current = []
    return blocks


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def parse_rst(text: str) -> Section:
    """``(title, prose paragraphs)`` of one reST section (see the module docstring for what counts as prose)."""
    lines = text.replace("\r\n", "\n").replace("\t", "    ").split("\n")
    title: str | None = None
    if len(lines) >= 2 and lines[0].strip() and _UNDERLINE.match(lines[1]):
        title, lines = lines[0].strip(), lines[2:]
    elif len(lines) >= 3 and _UNDERLINE.match(lines[0]) and _UNDERLINE.match(lines[2]) and lines[1].strip():
        title, lines = lines[1].strip(), lines[3:]
    paragraphs: list[str] = []
    skip_deeper: int | None = None  # skip the blocks indented deeper than this (literal blocks, directive bodies)
    for block in _blocks(lines):
        indent = _indent(block[0])
        if skip_deeper is not None:
            if indent > skip_deeper:
                continue
            skip_deeper = None
        first = block[0].strip()
        if first.startswith(".."):
            m = _DIRECTIVE.match(first)
            if not (m and m.group(1) in PROSE_DIRECTIVES):
                skip_deeper = indent
            continue
        if block[-1].endswith("::"):
            skip_deeper = indent  # a literal block follows
        if any(_UNDERLINE.match(line.strip()) for line in block):
            continue  # headings, tables
        if any(_indent(line) != indent for line in block):
            continue  # definition lists, option lists, ragged blocks
        if _NOT_PROSE_START.match(first):
            continue
        paragraph = clean_inline(" ".join(line.strip() for line in block))
        if paragraph:
            paragraphs.append(paragraph)
    clean_title = clean_inline(title) if title is not None else ""
    return Section(clean_title or None, paragraphs)


def prose_paragraphs(text: str) -> list[str]:
    """The prose paragraphs of one reST section: ``parse_rst(text).paragraphs``."""
    return parse_rst(text).paragraphs


def is_good_sentence(sentence: str, *, min_words: int = 6, max_words: int = 50,
                     min_plain_fraction: float = 0.6) -> bool:
    """Whether a sentence is clean task text.

    It has ``min_words``..``max_words`` whitespace-separated words, starts with an uppercase letter, ends with
    ``.``, ``?`` or ``!``, has no leftover markup (:func:`has_markup`), and at least ``min_plain_fraction`` of
    its words are plain words (letters, lower case after the first, optionally one trailing punctuation mark:
    not identifiers, numbers or code).
    """
    words = sentence.split()
    if not min_words <= len(words) <= max_words:
        return False
    if not _SENTENCE_SHAPE.fullmatch(sentence) or has_markup(sentence):
        return False
    if min_plain_fraction <= 0:
        return True
    return sum(1 for w in words if _PLAIN_WORD.fullmatch(w)) >= min_plain_fraction * len(words)
