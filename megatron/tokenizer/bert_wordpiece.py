"""BertWordPieceLowerCase / BertWordPieceCase from a BERT vocab.txt, encoded by HF `tokenizers`.

Megatron semantics: vocab.txt is one token per line (id = line number, token = line.strip());
[BOS], [EOS] and `vocab_extra_ids` tokens <extra_id_i> are appended when the file lacks them (so
vocab_size counts them); eod is [SEP]. Special-token strings in the input text are NOT special:
"[CLS]" in text is split like any other punctuation + word, as BERT's original tokenizer does.
"""
from __future__ import annotations

import functools
import unicodedata
from typing import Callable, Iterable

from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers

from .base import AbstractTokenizer, TokenizerError, check_file
from .reference_wordpiece import is_cjk, is_control, is_punctuation

# The specials a trained vocab starts with; [BOS]/[EOS] are included so Megatron adds nothing.
BERT_SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[BOS]", "[EOS]")
REQUIRED_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
MAX_CHARS_PER_WORD = 200  # BERT's original WordPiece limit (HF's default is 100)


def read_vocab_txt(path: str, flag: str = "--vocab-file") -> dict[str, int]:
    """Read a BERT vocab.txt: token on line i (stripped) gets id i - 1."""
    vocab: dict[str, int] = {}
    try:
        with open(path, encoding="utf-8") as f:
            for index, line in enumerate(f):
                vocab[line.strip()] = index
    except UnicodeDecodeError as e:
        raise TokenizerError(f"{flag} {path}: not valid UTF-8 ({e.reason} at byte {e.start})") from None
    if not vocab:
        raise TokenizerError(f"{flag} {path}: empty vocab file")
    return vocab


def _char_class(predicate: Callable[[str], bool]) -> str:
    """A regex character class (onig syntax) of every code point for which `predicate` holds."""
    ranges: list[tuple[int, int]] = []
    start = None
    for cp in range(0x110001):
        hit = cp <= 0x10FFFF and not 0xD800 <= cp <= 0xDFFF and predicate(chr(cp))
        if hit and start is None:
            start = cp
        elif not hit and start is not None:
            ranges.append((start, cp - 1))
            start = None
    return "[" + "".join(f"\\x{{{lo:X}}}-\\x{{{hi:X}}}" for lo, hi in ranges) + "]"


@functools.lru_cache(maxsize=2)
def removed_char_class(lower_case: bool) -> str:
    """Characters BERT deletes: controls/format/unassigned ('C*'), plus combining marks (Mn) when
    lowercasing (accent stripping) — per the running Python's Unicode tables, like the reference."""
    drop = ("Mn",) if lower_case else ()
    return _char_class(lambda c: (is_control(c) or unicodedata.category(c) in drop))


@functools.lru_cache(maxsize=1)
def isolated_char_class() -> str:
    """Characters BERT makes single tokens: non-ASCII punctuation ('P*') and CJK ideographs."""
    return _char_class(lambda c: ord(c) > 127 and (is_punctuation(c) or is_cjk(c)))


def build_wordpiece_engine(vocab: dict[str, int], lower_case: bool) -> Tokenizer:
    """An HF `tokenizers` pipeline that splits like BERT's original basic + WordPiece tokenizer."""
    engine = Tokenizer(models.WordPiece(vocab=dict(vocab), unk_token="[UNK]",
                                        max_input_chars_per_word=MAX_CHARS_PER_WORD))
    # HF's BertNormalizer/BertPreTokenizer use older Unicode tables than Python (and skip CJK block
    # U+2B820-2B91F); the extra Replace/Split steps apply the reference's tables, so the ids agree
    # with the Python algorithm of Megatron's BERT tokenizer for every assigned character.
    engine.normalizer = normalizers.Sequence([
        normalizers.Replace(Regex(removed_char_class(lower_case)), ""),
        normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                   strip_accents=lower_case, lowercase=lower_case),
    ])
    engine.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.BertPreTokenizer(),
        pre_tokenizers.Split(Regex(isolated_char_class()), behavior="isolated"),
    ])
    return engine


class BertWordPieceTokenizer(AbstractTokenizer):
    """BERT WordPiece tokenizer (Megatron's _BertWordPieceTokenizer); cased or lowercase."""

    def __init__(self, vocab_file: str, lower_case: bool = True, vocab_extra_ids: int = 0) -> None:
        tokenizer_type = "BertWordPieceLowerCase" if lower_case else "BertWordPieceCase"
        super().__init__("BERT Lower Case" if lower_case else "BERT Upper Case")
        vocab_file = check_file(vocab_file, "--vocab-file", tokenizer_type)
        self.vocab_file = vocab_file
        self.lower_case = lower_case
        self._vocab = read_vocab_txt(vocab_file)
        missing = [t for t in REQUIRED_TOKENS if t not in self._vocab]
        if missing:
            raise TokenizerError(f"--vocab-file {vocab_file}: missing BERT special token(s) "
                                 f"{', '.join(missing)}; expected a BERT vocab.txt")
        self._engine = build_wordpiece_engine(self._vocab, lower_case)
        self._inv_vocab = {i: t for t, i in self._vocab.items()}
        self.cls_id = self._vocab["[CLS]"]
        self.sep_id = self._vocab["[SEP]"]
        self.pad_id = self._vocab["[PAD]"]
        self.mask_id = self._vocab["[MASK]"]
        self.bos_token, self.eos_token = "[BOS]", "[EOS]"
        self._add_token(self.bos_token)
        self._add_token(self.eos_token)
        self.additional_special_tokens = [f"<extra_id_{i}>" for i in range(vocab_extra_ids)]
        for tok in self.additional_special_tokens:
            self._add_token(tok)

    def _add_token(self, token: str) -> None:
        """Append `token` with the next id unless the vocab already has it (Megatron's add_token)."""
        if token not in self._vocab:
            new_id = len(self._vocab)
            self._vocab[token] = new_id
            self._inv_vocab[new_id] = token

    @property
    def vocab(self) -> dict[str, int]:
        """Token → id, including appended [BOS]/[EOS]/<extra_id_i>."""
        return self._vocab

    @property
    def inv_vocab(self) -> dict[int, str]:
        """Id → token."""
        return self._inv_vocab

    def tokenize(self, text: str) -> list[int]:
        """Encode text into WordPiece ids (no [CLS]/[SEP] added)."""
        return self._engine.encode_batch_fast([text], add_special_tokens=False)[0].ids

    def tokenize_batch(self, texts: list[str]) -> list[list[int]]:
        """Encode many texts with the engine's batch path."""
        return [e.ids for e in self._engine.encode_batch_fast(list(texts), add_special_tokens=False)]

    def _tokens(self, token_ids: Iterable[int]) -> list[str]:
        out = []
        for i in token_ids:
            tok = self._inv_vocab.get(int(i))
            if tok is None:
                raise TokenizerError(f"detokenize: id {int(i)} is not in the vocabulary "
                                     f"(vocab_size {self.vocab_size})")
            out.append(tok)
        return out

    def detokenize(self, token_ids: Iterable[int]) -> str:
        """Join tokens with spaces and glue '##' continuations (BERT's convert_tokens_to_string)."""
        return " ".join(self._tokens(token_ids)).replace(" ##", "").strip()

    def decode_token_ids(self, token_ids: Iterable[int]) -> str:
        """Like detokenize but drops [PAD]/[CLS] and keeps a leading space per word (Megatron's helper)."""
        out = ""
        for tok in self._tokens(token_ids):
            if tok in ("[PAD]", "[CLS]"):
                continue
            out += tok[2:] if tok.startswith("##") else " " + tok
        return out

    @property
    def cls(self) -> int:
        """[CLS] id."""
        return self.cls_id

    @property
    def sep(self) -> int:
        """[SEP] id."""
        return self.sep_id

    @property
    def pad(self) -> int:
        """[PAD] id."""
        return self.pad_id

    @property
    def mask(self) -> int:
        """[MASK] id."""
        return self.mask_id

    @property
    def eod(self) -> int:
        """End of document = [SEP] (as in Megatron)."""
        return self.sep_id

    @property
    def bos(self) -> int:
        """[BOS] id."""
        return self._vocab[self.bos_token]

    @property
    def eos(self) -> int:
        """[EOS] id."""
        return self._vocab[self.eos_token]

    bos_token_id = bos
    eos_token_id = eos

    @property
    def additional_special_tokens_ids(self) -> list[int]:
        """Ids of the <extra_id_i> tokens."""
        return [self._vocab[t] for t in self.additional_special_tokens]
