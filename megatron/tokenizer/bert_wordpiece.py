"""BertWordPieceLowerCase / BertWordPieceCase from a BERT vocab.txt, encoded by HF `tokenizers`.

Megatron semantics: vocab.txt is one token per line (id = line number, token = line.strip());
[BOS], [EOS] and `vocab_extra_ids` tokens <extra_id_i> are appended when the file lacks them (so
vocab_size counts them); eod is [SEP]. Special-token strings in the input text are NOT special:
"[CLS]" in text is split like any other punctuation + word, as BERT's original tokenizer does.
"""
from __future__ import annotations

import functools
import unicodedata
from typing import Iterable

from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers

from .base import AbstractTokenizer, TokenizerError, check_file
from .reference_wordpiece import ReferenceBertTokenizer, is_cjk, is_control

# The specials a trained vocab starts with; [BOS]/[EOS] are included so Megatron adds nothing.
BERT_SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[BOS]", "[EOS]")
REQUIRED_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
MAX_CHARS_PER_WORD = 200  # BERT's original WordPiece limit (HF's default is 100)
# Code points whose Unicode category changed in a way the engine's steps cannot undo (the engine strips
# or splits them, Python's tables do not). Texts containing one are encoded by the reference instead.
# Found by probing every code point with Python 3.11 (Unicode 14) and tokenizers 0.23;
# tests/unit/test_tokenizer.py re-probes and fails if another version pair changes the list.
ENGINE_DIVERGENT_CHARS = {
    True: "\u166d\u1734\U00011938",   # lowercase: U+166D So, U+1734 / U+11938 Mc (engine strips them)
    False: "\u166d\U000111c9",         # cased: U+166D So, U+111C9 Mn (engine splits them off)
}


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


def _ranges_to_class(codepoints: list[int]) -> str:
    """A regex character class (oniguruma syntax) matching exactly the sorted `codepoints`."""
    parts: list[str] = []
    i = 0
    while i < len(codepoints):
        j = i
        while j + 1 < len(codepoints) and codepoints[j + 1] == codepoints[j] + 1:
            j += 1
        parts.append(f"\\x{{{codepoints[i]:X}}}-\\x{{{codepoints[j]:X}}}")
        i = j + 1
    return "[" + "".join(parts) + "]" if parts else ""


@functools.lru_cache(maxsize=1)
def unicode_classes() -> dict[str, str]:
    """Character classes from Python's Unicode tables (one pass over all code points):
    'control' = what BERT deletes ('C*' but tab/newline/CR), 'mark' = Mn (deleted by accent stripping),
    'isolate' = non-ASCII punctuation and CJK ideographs (BERT makes each its own token)."""
    control: list[int] = []
    mark: list[int] = []
    isolate: list[int] = []
    for cp in range(0x80, 0x110000):
        if 0xD800 <= cp <= 0xDFFF:
            continue
        ch = chr(cp)
        cat = unicodedata.category(ch)
        if cat[0] == "C":
            control.append(cp)
        elif cat == "Mn":
            mark.append(cp)
        elif cat[0] == "P" or is_cjk(ch):
            isolate.append(cp)
    ascii_control = [cp for cp in range(0x80) if is_control(chr(cp))]
    return {"control": _ranges_to_class(ascii_control + control), "mark": _ranges_to_class(mark),
            "isolate": _ranges_to_class(isolate)}


def build_wordpiece_engine(vocab: dict[str, int], lower_case: bool) -> Tokenizer:
    """An HF `tokenizers` pipeline that splits like BERT's original basic + WordPiece tokenizer."""
    engine = Tokenizer(models.WordPiece(vocab=dict(vocab), unk_token="[UNK]",
                                        max_input_chars_per_word=MAX_CHARS_PER_WORD))
    # HF's BertNormalizer/BertPreTokenizer use older Unicode tables than Python (and skip CJK block
    # U+2B820-2B91F); the extra Replace/Split steps apply the reference's tables, so the ids agree
    # with the Python algorithm of Megatron's BERT tokenizer for every assigned character.
    classes = unicode_classes()
    removed = classes["control"][:-1] + (classes["mark"][1:] if lower_case else "]")
    engine.normalizer = normalizers.Sequence([
        normalizers.Replace(Regex(removed), ""),
        normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                   strip_accents=lower_case, lowercase=lower_case),
    ])
    engine.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.BertPreTokenizer(),
        pre_tokenizers.Split(Regex(classes["isolate"]), behavior="isolated"),
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
        self._divergent = ENGINE_DIVERGENT_CHARS[lower_case]
        self._reference = ReferenceBertTokenizer(self._vocab, lower_case=lower_case,
                                                 max_chars=MAX_CHARS_PER_WORD)
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
        return self.tokenize_batch([text])[0]

    def _needs_reference(self, text: str) -> bool:
        return not text.isascii() and any(c in text for c in self._divergent)

    def tokenize_batch(self, texts: list[str]) -> list[list[int]]:
        """Encode many texts with the engine's batch path (threads inside the engine)."""
        texts = list(texts)
        for t in texts:
            if not isinstance(t, str):
                raise TokenizerError(f"cannot tokenize a {type(t).__name__}; expected str")
        slow = {i for i, t in enumerate(texts) if self._needs_reference(t)}
        fast = [i for i in range(len(texts)) if i not in slow]
        out: list[list[int]] = [[] for _ in texts]
        try:
            encoded = self._engine.encode_batch_fast([texts[i] for i in fast], add_special_tokens=False)
        except TypeError:  # lone surrogates: the engine refuses them, BERT deletes them (category Cs)
            slow = set(range(len(texts)))
        else:
            for i, enc in zip(fast, encoded):
                out[i] = enc.ids
        for i in slow:
            out[i] = self._reference.encode(texts[i])
        return out

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
