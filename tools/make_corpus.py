"""Convert a tree of reStructuredText sources (e.g. CPython's docs) into a jsonl corpus.

Each top-level section of each ``.rst``/``.rst.txt`` file becomes one document:
``{"text": ..., "source": relative/path#section}``.  Used to (re)build the bundled
corpus in ``data/corpus/``; nothing here downloads anything.

    python tools/make_corpus.py --src /usr/share/doc/python3.11/html/_sources \
        --output data/corpus/python_docs.jsonl.gz --max-mb 6
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import sys

_HEADING_UNDERLINE = re.compile(r"^(=|-|\*|~|\^|\"|#|\+){4,}\s*$")


def split_sections(text: str, min_chars: int = 200) -> list[str]:
    """Split reST text at headings (a title line followed by an underline); merge tiny pieces."""
    lines = text.splitlines()
    starts = [0]
    for i in range(1, len(lines)):
        if _HEADING_UNDERLINE.match(lines[i]) and lines[i - 1].strip() and not _HEADING_UNDERLINE.match(lines[i - 1]):
            start = i - 1
            # an overline belongs to the heading too
            if start > 0 and _HEADING_UNDERLINE.match(lines[start - 1]):
                start -= 1
            if start > starts[-1]:
                starts.append(start)
    starts.append(len(lines))
    pieces = ["\n".join(lines[a:b]).strip() for a, b in zip(starts, starts[1:])]
    merged: list[str] = []
    for p in pieces:
        if not p:
            continue
        if merged and len(merged[-1]) < min_chars:
            merged[-1] = merged[-1] + "\n\n" + p
        else:
            merged.append(p)
    return merged


def iter_documents(src: str):
    """Yield (source id, text) for every section of every reST file under ``src``, sorted by path."""
    paths = []
    for root, _dirs, files in os.walk(src):
        for f in files:
            if f.endswith(".rst") or f.endswith(".rst.txt"):
                paths.append(os.path.join(root, f))
    for path in sorted(paths):
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
        rel = os.path.relpath(path, src)
        for k, section in enumerate(split_sections(text)):
            yield f"{rel}#{k}", section


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--src", required=True, help="directory of .rst / .rst.txt files")
    ap.add_argument("--output", required=True, help="output .jsonl or .jsonl.gz")
    ap.add_argument("--max-mb", type=float, default=None, help="stop after this many MB of text")
    args = ap.parse_args(argv)
    if not os.path.isdir(args.src):
        print(f"error: --src {args.src!r} is not a directory", file=sys.stderr)
        return 2
    limit = None if args.max_mb is None else int(args.max_mb * 1e6)
    opener = gzip.open if args.output.endswith(".gz") else open
    tmp = args.output + ".tmp"
    n_docs = n_bytes = 0
    with opener(tmp, "wt", encoding="utf-8") as out:
        for source, text in iter_documents(args.src):
            out.write(json.dumps({"text": text, "source": source}, ensure_ascii=False) + "\n")
            n_docs += 1
            n_bytes += len(text.encode("utf-8"))
            if limit is not None and n_bytes >= limit:
                break
    os.replace(tmp, args.output)
    print(f"wrote {n_docs} documents, {n_bytes / 1e6:.2f} MB of text to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
