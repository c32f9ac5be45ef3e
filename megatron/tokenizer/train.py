"""Train tokenizers on local jsonl text and write Megatron's standard files, atomically.

GPT2BPETokenizer → vocab.json + merges.txt (GPT-2 layout: 256 byte symbols, merged tokens in merge
order, <|endoftext|> last); BertWordPiece* → vocab.txt; SentencePieceTokenizer → spm.model + spm.vocab.
"""
from __future__ import annotations

import gzip
import io
import json
import os
import tempfile
from typing import Iterable, Iterator

from tqdm import tqdm

from .base import TokenizerError
from .bert_wordpiece import BERT_SPECIAL_TOKENS
from .gpt2_bpe import EOD_TOKEN
from .reference_bpe import MERGES_HEADER, byte_alphabet
from .wordpiece_trainer import count_words, train_wordpiece_vocab

TRAINABLE_TYPES = ("GPT2BPETokenizer", "BertWordPieceLowerCase", "BertWordPieceCase",
                   "SentencePieceTokenizer")
# Special pieces of the trained SentencePiece model. The eos piece is named <EOD> so that Megatron's
# SentencePieceTokenizer finds its <EOD>/<CLS>/<SEP>/<MASK>/pad/bos/eos tokens inside the model and
# adds none: vocab_size stays exactly --vocab-size and eod == eos.
SPM_SPECIALS = {"unk_piece": "<unk>", "bos_piece": "<s>", "eos_piece": "<EOD>", "pad_piece": "<pad>"}
SPM_CONTROL_SYMBOLS = ["<CLS>", "<SEP>", "<MASK>"]


def iter_jsonl_texts(path: str, json_keys: list[str], limit: int | None = None,
                     progress: bool = True) -> Iterator[str]:
    """Yield the `json_keys` strings of each line of a .jsonl or .jsonl.gz file; bad lines raise."""
    if not os.path.isfile(path):
        raise TokenizerError(f"--input {path}: file not found")
    opener = gzip.open if path.endswith(".gz") else open
    docs = 0
    with opener(path, "rb") as f, tqdm(desc="reading", unit="doc", disable=not progress) as bar:
        for lineno, raw in enumerate(f, 1):
            if limit is not None and docs >= limit:
                return
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise TokenizerError(f"--input {path}:{lineno}: invalid UTF-8 ({e.reason} at byte "
                                     f"{e.start} of the line)") from None
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise TokenizerError(f"--input {path}:{lineno}: malformed JSON ({e.msg} at column "
                                     f"{e.colno})") from None
            if not isinstance(obj, dict):
                raise TokenizerError(f"--input {path}:{lineno}: expected a JSON object, got "
                                     f"{type(obj).__name__}")
            for key in json_keys:
                if key not in obj:
                    raise TokenizerError(f"--input {path}:{lineno}: missing key {key!r} (--json-keys)")
                if not isinstance(obj[key], str):
                    raise TokenizerError(f"--input {path}:{lineno}: key {key!r} must be a string, got "
                                         f"{type(obj[key]).__name__}")
                yield obj[key]
            docs += 1
            bar.update(1)
    if docs == 0:
        raise TokenizerError(f"--input {path}: no documents found")


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _atomic_write_bytes(path: str, data: bytes) -> None:
    """Write `data` to `path` via a temp file in the same directory and os.replace."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o666 & ~_current_umask())  # mkstemp creates 0600; use normal file permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _hf_model_dump(engine) -> dict:
    """The trained model section of an HF tokenizer's JSON serialization."""
    return json.loads(engine.to_str())["model"]


def train_gpt2_bpe(texts: Iterable[str], vocab_size: int, output_dir: str, min_frequency: int = 2,
                   progress: bool = True) -> dict[str, str]:
    """Train byte-level BPE and write GPT-2-format vocab.json + merges.txt; returns the written paths."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    if vocab_size < 257:
        raise TokenizerError(f"--vocab-size {vocab_size}: byte-level BPE needs at least 257 "
                             "(256 byte symbols + <|endoftext|>)")
    engine = Tokenizer(models.BPE())
    engine.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size - 1, min_frequency=min_frequency,
                                  show_progress=progress, special_tokens=[],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    engine.train_from_iterator(texts, trainer)
    dump = _hf_model_dump(engine)
    hf_vocab: dict[str, int] = dump["vocab"]
    merges = [m.split(" ") if isinstance(m, str) else list(m) for m in dump["merges"]]
    # GPT-2 layout: byte symbols first (in GPT-2 order), then learned tokens in creation order, eod last.
    alphabet = byte_alphabet()
    vocab: dict[str, int] = {c: i for i, c in enumerate(alphabet)}
    for tok, _ in sorted(hf_vocab.items(), key=lambda kv: kv[1]):
        vocab.setdefault(tok, len(vocab))
    if EOD_TOKEN not in vocab:  # (a corpus full of literal "<|endoftext|>" text may have learned it)
        vocab[EOD_TOKEN] = len(vocab)
    os.makedirs(output_dir, exist_ok=True)
    paths = {"vocab_file": os.path.join(output_dir, "vocab.json"),
             "merge_file": os.path.join(output_dir, "merges.txt")}
    _atomic_write_bytes(paths["vocab_file"], json.dumps(vocab, ensure_ascii=False).encode("utf-8"))
    merge_lines = [MERGES_HEADER] + [f"{a} {b}" for a, b in merges]
    _atomic_write_bytes(paths["merge_file"], ("\n".join(merge_lines) + "\n").encode("utf-8"))
    return paths


def train_bert_wordpiece(texts: Iterable[str], vocab_size: int, output_dir: str, lower_case: bool,
                         min_frequency: int = 2, progress: bool = True) -> dict[str, str]:
    """Train a BERT WordPiece vocab (specials first, deterministic) and write vocab.txt."""
    if vocab_size <= len(BERT_SPECIAL_TOKENS):
        raise TokenizerError(f"--vocab-size {vocab_size}: must exceed the {len(BERT_SPECIAL_TOKENS)} "
                             "special tokens")
    counts = count_words(texts, lower_case, progress)
    tokens = train_wordpiece_vocab(counts, vocab_size, list(BERT_SPECIAL_TOKENS), min_frequency,
                                   progress=progress)
    for t in tokens:  # vocab.txt is one token per line, read back with str.strip()
        if t != t.strip() or "\n" in t or not t:
            raise TokenizerError(f"trained WordPiece token {t!r} cannot be written to vocab.txt")
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, "vocab.txt")
    _atomic_write_bytes(path, ("\n".join(tokens) + "\n").encode("utf-8"))
    return {"vocab_file": path}


def _spm_sentences(texts: Iterable[str]) -> Iterator[str]:
    """SentencePiece trains on lines: split documents on newlines, drop blank lines."""
    for text in texts:
        for line in text.split("\n"):
            if line.strip():
                yield line


def train_sentencepiece(texts: Iterable[str], vocab_size: int, output_dir: str, model_type: str = "bpe",
                        progress: bool = True) -> dict[str, str]:
    """Train a SentencePiece model (byte fallback, identity normalization) → spm.model + spm.vocab."""
    import sentencepiece as spm
    model = io.BytesIO()  # train in memory: no temp files, and no temp path recorded in the model
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=_spm_sentences(texts), model_writer=model, model_type=model_type,
            vocab_size=vocab_size, character_coverage=0.9999, byte_fallback=True,
            normalization_rule_name="identity", remove_extra_whitespaces=False, split_digits=True,
            allow_whitespace_only_pieces=True, max_sentence_length=1 << 16,
            unk_id=0, bos_id=1, eos_id=2, pad_id=3, control_symbols=SPM_CONTROL_SYMBOLS,
            minloglevel=1 if progress else 2, **SPM_SPECIALS)
    except RuntimeError as e:  # sentencepiece reports bad settings (e.g. vocab too large) this way
        raise TokenizerError(f"SentencePiece training failed: {e}") from None
    proc = spm.SentencePieceProcessor(model_proto=model.getvalue())
    # spm.vocab: "piece<TAB>score" per id, as sentencepiece's own trainer writes it.
    vocab_lines = "".join(f"{proc.id_to_piece(i)}\t{proc.get_score(i):g}\n"
                          for i in range(proc.get_piece_size()))
    os.makedirs(output_dir, exist_ok=True)
    paths = {"tokenizer_model": os.path.join(output_dir, "spm.model"),
             "vocab": os.path.join(output_dir, "spm.vocab")}
    _atomic_write_bytes(paths["tokenizer_model"], model.getvalue())
    _atomic_write_bytes(paths["vocab"], vocab_lines.encode("utf-8"))
    return paths


def train_tokenizer(tokenizer_type: str, input_path: str, vocab_size: int, output_dir: str,
                    json_keys: list[str] | None = None, min_frequency: int = 2, limit: int | None = None,
                    progress: bool = True) -> dict[str, str]:
    """Train `tokenizer_type` on a jsonl(.gz) file and write its standard files into output_dir."""
    if tokenizer_type not in TRAINABLE_TYPES:
        raise TokenizerError(f"--tokenizer-type {tokenizer_type!r} cannot be trained; expected one of "
                             f"{', '.join(TRAINABLE_TYPES)}")
    if vocab_size < 1:
        raise TokenizerError(f"--vocab-size must be positive, got {vocab_size}")
    if min_frequency < 0:
        raise TokenizerError(f"--min-frequency must be >= 0, got {min_frequency}")
    # Read everything first: input errors then surface as our own clear error, not from inside a trainer.
    texts = list(iter_jsonl_texts(input_path, json_keys or ["text"], limit=limit, progress=progress))
    if tokenizer_type == "GPT2BPETokenizer":
        return train_gpt2_bpe(texts, vocab_size, output_dir, min_frequency, progress)
    if tokenizer_type == "SentencePieceTokenizer":
        return train_sentencepiece(texts, vocab_size, output_dir, progress=progress)
    lower = tokenizer_type == "BertWordPieceLowerCase"
    return train_bert_wordpiece(texts, vocab_size, output_dir, lower, min_frequency, progress)
