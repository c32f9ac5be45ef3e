"""tools/make_corpus.py as the study uses it: reST trees (.rst.gz too), translations skipped, duplicates dropped,
held-out documents (by content hash) written last, a manifest with the counts."""
from __future__ import annotations

import gzip
import importlib.util
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _tool():
    spec = importlib.util.spec_from_file_location("_make_corpus", REPO / "tools" / "make_corpus.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look the module up by name
    spec.loader.exec_module(module)
    return module


def _section(title: str, words: int) -> str:
    return f"{title}\n{'=' * len(title)}\n\n" + " ".join(f"{title.lower()}{i}" for i in range(words)) + "\n\n"


def test_tree_with_gz_translations_duplicates_and_heldout(tmp_path: Path, capsys) -> None:
    src = tmp_path / "Documentation"
    (src / "sub").mkdir(parents=True)
    (src / "translations" / "it").mkdir(parents=True)
    text = "".join(_section(f"Topic{i}", 60) for i in range(40))
    (src / "a.rst").write_text(text)
    with gzip.open(src / "sub" / "b.rst.gz", "wt") as fh:
        fh.write(_section("Gzipped", 60))
    (src / "c.rst.txt").write_text(_section("Topic3", 60))  # a duplicate of a section of a.rst
    (src / "translations" / "it" / "d.rst").write_text(_section("Tradotto", 60))
    (src / "notes.txt").write_text(_section("Plain", 60))
    out = tmp_path / "corpus.jsonl.gz"
    tool = _tool()
    assert tool.main(["--src", str(src), "--output", str(out), "--heldout-fraction", "0.2"]) == 0
    with gzip.open(out, "rt") as fh:
        docs = [json.loads(line) for line in fh]
    manifest = json.loads(Path(str(out) + ".manifest.json").read_text())
    assert len(docs) == manifest["documents"] == 41  # 40 + the gzipped one; duplicate, translation, .txt left out
    assert manifest["sources"][0]["duplicates"] == 1
    assert not any("Tradotto" in d["text"] or "Plain" in d["text"] for d in docs)
    n_train, n_held = manifest["train_documents"], manifest["heldout_documents"]
    assert n_train + n_held == 41 and 0 < n_held < 20
    held = [tool.is_heldout(d["text"], 0.2) for d in docs]
    assert held == [False] * n_train + [True] * n_held  # the held-out part is last
    assert "41 documents" in capsys.readouterr().out


def test_jsonl_source_and_max_mb(tmp_path: Path) -> None:
    out = tmp_path / "c.jsonl"
    tool = _tool()
    assert tool.main(["--jsonl", str(REPO / "data" / "corpus" / "python_docs.jsonl.gz"), "--output", str(out),
                      "--max-mb", "0.2"]) == 0
    lines = out.read_text().splitlines()
    assert 0 < len(lines) < 200 and json.loads(lines[0])["source"].startswith("python_docs.jsonl.gz:")


def test_bad_input_is_one_error_line(tmp_path: Path, capsys) -> None:
    tool = _tool()
    assert tool.main(["--output", str(tmp_path / "x.jsonl")]) == 2
    assert capsys.readouterr().err.startswith("error: no source")
    assert tool.main(["--src", str(tmp_path / "missing"), "--output", str(tmp_path / "x.jsonl")]) == 2
    assert "error: --src" in capsys.readouterr().err
    assert tool.main(["--jsonl", str(REPO / "README.md"), "--output", str(tmp_path / "x.jsonl")]) == 2
    assert "README.md:1: expected a JSON object" in capsys.readouterr().err
