"""Build a jsonl corpus from reStructuredText sources: local trees, Debian documentation packages, jsonl files.

Each top-level section of each ``.rst`` / ``.rst.txt`` / ``.rst.gz`` file becomes one document:
``{"text": ..., "source": origin:relative/path#section}``.  Sources (any number, in the order given):

* ``--src DIR``    a directory tree of reST files (e.g. ``/usr/share/doc/python3.11/html/_sources``);
* ``--deb PKG``    a Debian package's reST files: the installed files when the package is installed, otherwise
                   ``apt-get download PKG`` into ``--deb-cache`` and ``dpkg-deb -x`` (no root needed);
* ``--jsonl FILE`` documents of an existing jsonl(.gz) corpus (``text`` and optional ``source`` keys).

Paths containing a ``translations`` directory are skipped (English only).  Sections shorter than
``--min-chars`` are merged into their neighbour; identical documents (after whitespace normalisation) are kept
once.  ``--heldout-fraction F`` moves the documents whose content hash falls in the lowest F of the hash space
to the END of the output file (a split that depends on the text only, not on the order or the other sources),
so ``--split N_TRAIN,N_HELDOUT,0`` of pretraining makes exactly them the validation split.  A manifest
``OUTPUT.manifest.json`` records the sources (package versions and licences), document/byte counts of both
parts and the arguments.

    python tools/make_corpus.py --src /usr/share/doc/python3.11/html/_sources \\
        --output data/corpus/python_docs.jsonl.gz --max-mb 6
    python tools/make_corpus.py --deb linux-doc-6.1 --deb python3.11-doc --deb-cache runs/debs \\
        --output runs/study/corpus.jsonl.gz --heldout-fraction 0.01
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Iterator

_HEADING_UNDERLINE = re.compile(r"^(=|-|\*|~|\^|\"|#|\+){4,}\s*$")
REST_SUFFIXES = (".rst", ".rst.txt", ".rst.gz")
EXCLUDED_DIRS = ("translations",)
KNOWN_LICENCES = {
    "linux-doc-6.1": "GPL-2.0 (Linux kernel documentation; see usr/share/doc/linux-doc-6.1/copyright)",
    "python3.11-doc": "PSF-2.0 (Python Software Foundation License; see usr/share/doc/python3.11-doc/copyright)",
    "python3-doc": "PSF-2.0 (Python Software Foundation License)",
    "perl-doc": "Artistic-1.0 or GPL-1.0+ (Perl's licence)",
}


class CorpusError(ValueError):
    """Bad input (missing source, failed download); the message names the flag and the value."""


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


def _is_rest(path: str) -> bool:
    parts = path.replace(os.sep, "/").split("/")
    return path.endswith(REST_SUFFIXES) and not any(p in EXCLUDED_DIRS for p in parts)


def _read_text(path: str) -> str:
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", errors="replace") as fh:
        return fh.read()


def rest_files(src: str) -> list[str]:
    """Every reST file under ``src`` (translations excluded), sorted."""
    paths = []
    for root, dirs, files in os.walk(src):
        dirs[:] = [d for d in dirs if d not in EXCLUDED_DIRS]
        paths += [os.path.join(root, f) for f in files if _is_rest(f)]
    return sorted(paths)


def iter_documents(src: str, origin: str = "", min_chars: int = 200) -> Iterator[tuple[str, str]]:
    """Yield (source id, text) for every section of every reST file under ``src``, sorted by path."""
    for path in rest_files(src):
        rel = os.path.relpath(path, src)
        for k, section in enumerate(split_sections(_read_text(path), min_chars)):
            yield f"{origin}{rel}#{k}", section


def iter_jsonl(path: str) -> Iterator[tuple[str, str]]:
    """Yield (source id, text) of a jsonl(.gz) corpus."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                doc = json.loads(line)
                text = doc["text"]
            except (ValueError, KeyError, TypeError):
                raise CorpusError(f"--jsonl {path}:{n}: expected a JSON object with a 'text' string") from None
            yield f"{os.path.basename(path)}:{doc.get('source', n)}", text


@dataclass
class DebSource:
    """A Debian package providing reST files."""

    package: str
    root: str
    """Directory to walk (the extracted package, or / for an installed one)."""
    version: str
    installed: bool
    files: list[str] = field(default_factory=list)


def _run(cmd: list[str], cwd: str | None = None) -> str:
    try:
        out = subprocess.run(cmd, cwd=cwd, check=True, capture_output=True, text=True)
    except FileNotFoundError:
        raise CorpusError(f"{cmd[0]} not found: --deb needs a Debian system (apt-get, dpkg-deb)") from None
    except subprocess.CalledProcessError as e:
        msg = (e.stderr or e.stdout or "").strip().splitlines()
        raise CorpusError(f"'{' '.join(cmd)}' failed: {msg[-1] if msg else e.returncode}") from None
    return out.stdout


def installed_version(package: str) -> str | None:
    """The installed version of ``package``, or None."""
    try:
        out = subprocess.run(["dpkg-query", "-W", "-f=${Status}\t${Version}", package],
                             capture_output=True, text=True)
    except FileNotFoundError:
        return None
    if out.returncode != 0 or "install ok installed" not in out.stdout:
        return None
    return out.stdout.split("\t")[1]


def fetch_deb(package: str, cache: str) -> DebSource:
    """The package's reST files: installed ones, else downloaded (once) into ``cache`` and extracted there."""
    version = installed_version(package)
    if version is not None:
        listed = _run(["dpkg", "-L", package]).splitlines()
        files = sorted(p for p in listed if _is_rest(p) and os.path.isfile(p))
        return DebSource(package, "/", version, True, files)
    os.makedirs(cache, exist_ok=True)
    target = os.path.join(cache, package)
    stamp = os.path.join(target, ".extracted")
    if not os.path.exists(stamp):
        debs = [f for f in os.listdir(cache) if f.startswith(package + "_") and f.endswith(".deb")]
        if not debs:
            print(f"make_corpus: apt-get download {package} -> {cache}", file=sys.stderr)
            _run(["apt-get", "download", package], cwd=cache)
            debs = [f for f in os.listdir(cache) if f.startswith(package + "_") and f.endswith(".deb")]
            if not debs:
                raise CorpusError(f"--deb {package}: apt-get download wrote no {package}_*.deb into {cache}")
        _run(["dpkg-deb", "-x", os.path.join(cache, sorted(debs)[-1]), target])
        with open(stamp, "w") as fh:
            fh.write(sorted(debs)[-1] + "\n")
    with open(stamp) as fh:
        deb_name = fh.read().strip()
    version = deb_name.split("_")[1] if deb_name.count("_") >= 2 else "unknown"
    return DebSource(package, target, version, False, rest_files(target))


def _norm_hash(text: str) -> bytes:
    return hashlib.sha1(" ".join(text.split()).encode("utf-8")).digest()


def is_heldout(text: str, fraction: float) -> bool:
    """True when the document's content hash lies in the lowest ``fraction`` of the hash space."""
    if fraction <= 0:
        return False
    h = hashlib.sha256(" ".join(text.split()).encode("utf-8")).digest()
    return int.from_bytes(h[:8], "big") < fraction * 2 ** 64


def collect(args: argparse.Namespace) -> tuple[list[tuple[str, str]], list[dict]]:
    """All documents of all sources, in order, duplicates dropped; and a description of each source."""
    docs: list[tuple[str, str]] = []
    sources: list[dict] = []
    seen: set[bytes] = set()
    limit = None if args.max_mb is None else int(args.max_mb * 1e6)
    total = 0

    def add(stream: Iterator[tuple[str, str]], info: dict) -> bool:
        nonlocal total
        info.update(documents=0, duplicates=0, bytes=0)
        sources.append(info)
        for source, text in stream:
            key = _norm_hash(text)
            if key in seen:
                info["duplicates"] += 1
                continue
            seen.add(key)
            docs.append((source, text))
            size = len(text.encode("utf-8"))
            info["documents"] += 1
            info["bytes"] += size
            total += size
            if limit is not None and total >= limit:
                return False
        return True

    for kind, value in args.sources:
        if kind == "src":
            if not os.path.isdir(value):
                raise CorpusError(f"--src {value!r} is not a directory")
            ok = add(iter_documents(value, "", args.min_chars), {"kind": "src", "path": value})
        elif kind == "jsonl":
            if not os.path.isfile(value):
                raise CorpusError(f"--jsonl {value!r} does not exist")
            ok = add(iter_jsonl(value), {"kind": "jsonl", "path": value})
        else:
            deb = fetch_deb(value, args.deb_cache)
            if not deb.files:
                raise CorpusError(f"--deb {value}: the package holds no reST files ({', '.join(REST_SUFFIXES)})")

            def deb_docs(d: DebSource = deb) -> Iterator[tuple[str, str]]:
                for path in d.files:
                    rel = os.path.relpath(path, d.root)
                    for k, section in enumerate(split_sections(_read_text(path), args.min_chars)):
                        yield f"{d.package}:{rel}#{k}", section

            ok = add(deb_docs(), {"kind": "deb", "package": deb.package, "version": deb.version,
                                  "installed": deb.installed, "files": len(deb.files),
                                  "licence": KNOWN_LICENCES.get(deb.package, "see the package's copyright file")})
        if not ok:
            break
    return docs, sources


class _SourceAction(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None):  # noqa: ANN001 - argparse's signature
        namespace.sources.append((self.dest, values))


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.set_defaults(sources=[])
    ap.add_argument("--src", action=_SourceAction, metavar="DIR", help="directory of reST files (repeatable)")
    ap.add_argument("--deb", action=_SourceAction, metavar="PKG", help="Debian documentation package (repeatable)")
    ap.add_argument("--jsonl", action=_SourceAction, metavar="FILE", help="existing jsonl(.gz) corpus (repeatable)")
    ap.add_argument("--deb-cache", default="debs", help="where --deb packages are downloaded/extracted")
    ap.add_argument("--output", required=True, help="output .jsonl or .jsonl.gz")
    ap.add_argument("--max-mb", type=float, default=None, help="stop after this many MB of text")
    ap.add_argument("--min-chars", type=int, default=200, help="merge sections shorter than this into the next")
    ap.add_argument("--heldout-fraction", type=float, default=0.0,
                    help="fraction of documents (by content hash) written last, as the held-out part")
    return ap


def write_corpus(args: argparse.Namespace) -> dict:
    """Collect, split, write the corpus and its manifest (both atomically); returns the manifest."""
    if not args.sources:
        raise CorpusError("no source: give at least one --src DIR, --deb PKG or --jsonl FILE")
    if not 0.0 <= args.heldout_fraction < 1.0:
        raise CorpusError(f"--heldout-fraction {args.heldout_fraction}: expected a number in [0, 1)")
    docs, sources = collect(args)
    train = [d for d in docs if not is_heldout(d[1], args.heldout_fraction)]
    heldout = [d for d in docs if is_heldout(d[1], args.heldout_fraction)]
    if args.heldout_fraction > 0 and (not heldout or not train):
        raise CorpusError(f"--heldout-fraction {args.heldout_fraction}: {len(train)} training and {len(heldout)} "
                          f"held-out documents; both parts need at least one (more text or another fraction)")
    out_dir = os.path.dirname(os.path.abspath(args.output))
    os.makedirs(out_dir, exist_ok=True)
    opener = gzip.open if args.output.endswith(".gz") else open
    tmp = args.output + ".tmp"
    with opener(tmp, "wt", encoding="utf-8") as out:
        for source, text in train + heldout:
            out.write(json.dumps({"text": text, "source": source}, ensure_ascii=False) + "\n")
    manifest = {
        "output": args.output, "sources": sources, "documents": len(docs),
        "train_documents": len(train), "heldout_documents": len(heldout),
        "train_bytes": sum(len(t.encode("utf-8")) for _, t in train),
        "heldout_bytes": sum(len(t.encode("utf-8")) for _, t in heldout),
        "heldout_fraction": args.heldout_fraction, "min_chars": args.min_chars, "max_mb": args.max_mb,
    }
    mtmp = args.output + ".manifest.json.tmp"
    with open(mtmp, "w") as fh:
        json.dump(manifest, fh, indent=1)
    os.replace(tmp, args.output)
    os.replace(mtmp, args.output + ".manifest.json")
    return manifest


def main(argv: list[str] | None = None) -> int:
    """CLI entry: 0 on success, 2 with one ``error:`` line on bad input."""
    args = build_parser().parse_args(argv)
    try:
        m = write_corpus(args)
    except CorpusError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    n_bytes = m["train_bytes"] + m["heldout_bytes"]
    print(f"wrote {m['documents']} documents, {n_bytes / 1e6:.2f} MB of text to {args.output} "
          f"({m['train_documents']} training + {m['heldout_documents']} held-out documents)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
