"""tasks/rest_prose.py: reST section -> title and prose paragraphs, inline markup cleaning, the sentence test."""
from __future__ import annotations

import pytest

from tasks import rest_prose as rp


@pytest.mark.parametrize("source, text", [
    (":func:`open` and :meth:`~str.join`", "open() and join()"),
    (":class:`os.PathLike` and :class:`~os.PathLike`", "os.PathLike and PathLike"),
    (":class:`.datetime` and :func:`!print`", "datetime and print()"),  # lookup dots and "!" are not shown
    (":c:func:`PyObject_New` and :c:member:`~PyTypeObject.tp_name`", "PyObject_New() and tp_name"),
    (":ref:`the tutorial <tut-intro>` and :func:`text <os.open>`", "the tutorial and text"),
    (":file:`~/.pythonrc.py` and :envvar:`PYTHONPATH`", "~/.pythonrc.py and PYTHONPATH"),  # not cross-references
    ("``x + 1`` and `docs <https://x>`_ and `label`_", "x + 1 and docs and label"),
    ("*emphasis* and **strong** but not 2 * 3 * 4", "emphasis and strong but not 2 * 3 * 4"),
    ("a footnote [#]_ and [1]_ here", "a footnote and here"),
    (":class:`str`\\ s and \\*args", "strs and *args"),                      # escapes resolved ...
    ("the ``'\\n'`` character and ``C:\\Temp``", "the '\\n' character and C:\\Temp"),  # ... but not in literals
    ("  several\n   spaces  ", "several spaces"),
])
def test_clean_inline(source, text):
    assert rp.clean_inline(source) == text


def test_parse_rst_title_and_prose():
    text = ("Title with :mod:`os`\n====================\n\nFirst paragraph, two\nlines.\n\n"
            ".. note::\n\n   A note body is prose.\n\n.. code-block:: python\n\n   x = 1\n\n   y = 2\n\n"
            "Example::\n\n   literal = True\n\n>>> 1 + 1\n2\n\n* item\n\n1. item\n\n:field: value\n\n"
            "term\n   definition\n\n+---+\n| a |\n+---+\n\nLast.\n")
    section = rp.parse_rst(text)
    assert section == ("Title with os", ["First paragraph, two lines.", "A note body is prose.", "Example::",
                                         "Last."])
    assert section.title == "Title with os" and rp.prose_paragraphs(text) == section.paragraphs
    assert rp.parse_rst("=====\nOver\n=====\n\nText.").title == "Over"
    assert rp.parse_rst("No heading here.\n") == (None, ["No heading here."])


def test_has_markup_and_good_sentence():
    assert rp.has_markup("a `b") and rp.has_markup("x::") and rp.has_markup("C:\\Temp") and rp.has_markup("|v|")
    assert not rp.has_markup("The parent directory name .. is not allowed.")
    assert rp.is_good_sentence("The open() function opens a file for you.")
    assert not rp.is_good_sentence("Too short to use.")                           # < 6 words by default
    assert rp.is_good_sentence("Too short to use.", min_words=4)
    assert not rp.is_good_sentence("lower case start is not a sentence here.")
    assert not rp.is_good_sentence("No final punctuation in this one here")
    assert not rp.is_good_sentence("Use the ``x`` literal in this sentence please.")
    code = "Call f(x) g(y) h(z) k(w) m(v) with care."
    assert not rp.is_good_sentence(code) and rp.is_good_sentence(code, min_plain_fraction=0.0)
