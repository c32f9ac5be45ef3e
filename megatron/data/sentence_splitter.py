"""A small deterministic rule-based English sentence splitter (stand-in for NLTK punkt, which needs downloads).

Rules, in order:

* A blank line (a newline, optional spaces/tabs, another newline) always ends a sentence.
* Otherwise a sentence ends after a run of ``.``, ``!``, ``?`` or ``…`` (optionally followed by closing
  quotes/brackets) when whitespace follows and the next non-space character is an uppercase letter or an
  opening quote/bracket -- so ``3.14``, ``e.g. this`` and ``file.txt`` never split.
* A period does not end a sentence after a known abbreviation (``Mr.``, ``Dr.``, ``e.g.``, ``etc.``,
  ``Fig.``, months, ...), after a single letter (initials such as ``J. Smith``), or after a dotted
  acronym (``U.S.``).  An ellipsis (``...`` / ``…``) followed by an uppercase word does end a sentence.

Newlines (``split_sentences(text, keep_newlines=...)``):

* ``keep_newlines=True``: the sentences are consecutive spans of the text, each keeping its trailing
  whitespace and newlines, so ``"".join(sentences) == text`` (Megatron's ``--keep-newlines``).
* ``keep_newlines=False``: each sentence is stripped and every whitespace run containing a newline is
  replaced by one space (a sentence wrapped over several lines becomes one line).

Whitespace-only sentences are dropped in both modes.
"""
from __future__ import annotations

import re

ABBREVIATIONS: frozenset[str] = frozenset(
    """
    mr mrs ms dr prof sr jr st mt ft vs etc al eg ie cf viz approx ca resp dept univ inc ltd co corp
    fig figs eq eqs no nos vol vols ch chap sec sect p pp ed eds rev gen col lt sgt capt cmdr gov pres
    jan feb mar apr jun jul aug sep sept oct nov dec mon tue wed thu fri sat sun est min max ref refs
    """.split()
)
"""Lower-cased words (dots removed) after which a period does not end a sentence."""

_OPENERS = "\"'“‘([{«"
_CLOSERS = "\"'”’)]}»"
# token start, [word][terminal punctuation][closing quotes/brackets][whitespace], then the next character.
_CANDIDATE = re.compile(
    r"(?<!\S)(?P<word>[^\s.!?…]*(?:\.[^\s.!?…]+)*)(?P<punct>[.!?…]+)(?P<close>[" + re.escape(_CLOSERS) + r"]*)(?P<ws>\s+)(?=(?P<next>\S))"
)
_BLANK_LINE = re.compile(r"\n[ \t\r\f\v]*\n\s*")
_NEWLINE_RUN = re.compile(r"\s*\n\s*")


def _is_boundary(m: re.Match[str]) -> bool:
    nxt = m.group("next")
    if not (nxt.isupper() or nxt in _OPENERS):
        return False
    punct = m.group("punct")
    if punct != ".":  # '!', '?', '...', '…', '.?!' combinations
        return True
    word = m.group("word").lstrip(_OPENERS)
    if not word:
        return True
    bare = word.replace(".", "").lower()
    if bare in ABBREVIATIONS:
        return False
    if len(word) == 1 and word.isalpha():  # initial: "J. Smith"
        return False
    if "." in word and all(len(part) <= 2 for part in word.split(".")):  # acronym: "U.S.", "e.g"
        return False
    return True


def sentence_starts(text: str) -> list[int]:
    """Offsets where sentences start (always includes 0 for non-empty text)."""
    starts = {0} if text else set()
    for m in _CANDIDATE.finditer(text):
        if _is_boundary(m):
            starts.add(m.end())
    for m in _BLANK_LINE.finditer(text):
        starts.add(m.end())
    lead = len(text) - len(text.lstrip())  # leading whitespace belongs to the first sentence
    return sorted(s for s in starts if s < len(text) and not 0 < s <= lead)


def split_sentences(text: str, keep_newlines: bool = False) -> list[str]:
    """Split ``text`` into sentences (see the module docstring for the rules)."""
    starts = sentence_starts(text)
    pieces = [text[a:b] for a, b in zip(starts, starts[1:] + [len(text)])]
    if keep_newlines:
        return pieces if any(p.strip() for p in pieces) else []
    out = []
    for p in pieces:
        p = _NEWLINE_RUN.sub(" ", p.strip())
        if p:
            out.append(p)
    return out
