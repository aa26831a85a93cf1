"""Sentencepiece subword models: training (joint or per language) and a small wrapper.

The special ids are fixed (pad 0, unk 1, bos 2, eos 3) so the model, the batches and the
decoder agree without looking anything up. Models travel as bytes: they are written into the
prepared data directory and copied into every checkpoint, so a checkpoint alone can translate.
"""

from __future__ import annotations

import functools
import io
import os
import random
import re
from pathlib import Path
from typing import Iterable, Iterator

import sentencepiece as spm

from mtrain.config import TokenizerConfig
from mtrain.data import casing, noise
from mtrain.data.languages import LANGUAGE_TOKEN, language_token, token_languages
from mtrain.errors import MtrainError
from mtrain.special import BOS, EOS, PAD, UNK

# An imported Marian model's text goes in and out as MarianTokenizer's does: a leading ">>fra<<"
# (a multilingual model's target language) is one piece, whatever sentencepiece would cut; pieces
# the vocabulary has but the target sentencepiece model lacks decode with their "▁" as a space;
# the special pieces (<unk> included) are left out, as `decode(..., skip_special_tokens=True)` does.
MARIAN_LANGUAGE_CODE = re.compile(">>.+<<")
WORD_START = "\u2581"
SPECIAL_IDS = frozenset((PAD, UNK, BOS, EOS))
CASE_TAG_PIECES = frozenset(casing.CASE_TAGS.values())
VOCABULARY_FILE = "vocabulary.json"  # an imported model's pieces in id order, {"src": [...], "tgt": [...]}


def train_model(lines: Iterable[str], config: TokenizerConfig, seed: int, user_symbols: list[str] = ()) -> bytes:
    """Train a sentencepiece model on all of `lines` (the caller samples them). Each of
    `user_symbols` (corpus tags such as <BT>) becomes one piece that is never split."""
    spm.set_random_generator_seed(seed)
    buffer = io.BytesIO()
    source = _InterruptibleLines(lines)
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=source,
            model_writer=buffer,
            model_type=config.type,
            vocab_size=config.vocab_size,
            character_coverage=config.character_coverage,
            pad_id=PAD,
            unk_id=UNK,
            bos_id=BOS,
            eos_id=EOS,
            user_defined_symbols=list(user_symbols),
            num_threads=os.cpu_count() or 1,
            minloglevel=2,
        )
    except RuntimeError as e:
        message = str(e).strip().splitlines()[-1]
        if "Vocabulary size" in message:
            raise MtrainError(
                f"tokenizer.vocab_size {config.vocab_size} is too large for this training corpus ({message}); lower "
                "tokenizer.vocab_size"
            ) from None
        raise MtrainError(f"sentencepiece training failed: {message}") from None
    if source.interrupted:
        raise KeyboardInterrupt
    return buffer.getvalue()


class _InterruptibleLines:
    """The training lines for sentencepiece, which reads them from C++ and takes an exception from
    the iterator (Ctrl-C while it reads) for the end of the input: it would train on what it had
    read, and prepare would go on. The interruption is kept here and raised after training."""

    def __init__(self, lines: Iterable[str]):
        self.lines, self.interrupted = iter(lines), False

    def __iter__(self) -> "_InterruptibleLines":
        return self

    def __next__(self) -> str:
        try:
            return next(self.lines)
        except KeyboardInterrupt:
            self.interrupted = True
            raise StopIteration from None


def with_case_variants(lines: Iterable[str], shares: dict[str, float], seed: int) -> Iterator[str]:
    """`lines`, then UPPER CASE copies of a share `shares["upper"]` of them and Title Case copies of
    a share `shares["title"]` (data/noise.py's definitions), drawn with `seed`: sentencepiece then
    learns pieces for upper-cased and title-cased words in about the proportion the model trains on
    them (data.augment), instead of cutting every such word into letters."""
    rng = random.Random(seed)
    upper, title = [], []
    for line in lines:
        draw = rng.random()
        if draw < shares["upper"]:
            upper.append(line)
        elif draw < shares["upper"] + shares["title"]:
            title.append(line)
        yield line
    yield from (noise.upper(line) for line in upper)
    yield from (noise.title(line) for line in title)


def with_case_forms(lines: Iterable[str], shares: dict[str, float], seed: int) -> Iterator[str]:
    """What sentencepiece trains on when data.augment changes case: `with_case_variants`, then
    `with_case_counterparts`."""
    return with_case_counterparts(with_case_variants(lines, shares, seed))


def with_case_counterparts(lines: Iterable[str]) -> Iterator[str]:
    """`lines`, then one line of the upper- and lower-case forms of their letters that they lack:
    a model trained on them covers every letter case augmentation writes (an "Ü" where the corpus
    only has "ü"), where it would otherwise encode <unk> (with character_coverage 1.0)."""
    seen: set[str] = set()
    for line in lines:
        seen.update(line)
        yield line
    missing = {c for letter in seen for c in letter.upper() + letter.lower()} - seen
    if missing:
        yield " ".join(sorted(missing))


def load_model_file(path: str) -> bytes:
    """An existing sentencepiece model given in the config, checked for our special ids."""
    if not Path(path).is_file():
        raise MtrainError(f"sentencepiece model not found: {path} (tokenizer.model / tokenizer.tgt_model)")
    data = Path(path).read_bytes()
    processor = _processor(data, path)
    ids = (processor.pad_id(), processor.unk_id(), processor.bos_id(), processor.eos_id())
    if ids != (PAD, UNK, BOS, EOS):
        raise MtrainError(
            f"{path}: special ids are pad/unk/bos/eos={ids}, mtrain needs (0, 1, 2, 3); retrain it with --pad_id=0 "
            "--unk_id=1 --bos_id=2 --eos_id=3"
        )
    return data


def _processor(model: bytes, name: str = "model") -> spm.SentencePieceProcessor:
    processor = spm.SentencePieceProcessor()
    try:
        processor.LoadFromSerializedProto(model)
    except RuntimeError:
        raise MtrainError(f"{name} is not a sentencepiece model") from None
    return processor


class Tokenizer:
    """Source and target sentencepiece processors (the same one with a joint vocabulary).

    Models trained by mtrain use the sentencepiece ids as they are. An imported model (Marian's
    OPUS-MT) indexes its own vocabulary: `vocab` ({"src": pieces, "tgt": pieces}, in id order) maps
    the pieces sentencepiece cuts to the model's ids (pieces it lacks become <unk>) and back."""

    def __init__(self, src_model: bytes, tgt_model: bytes | None = None, vocab: dict | None = None):
        self.src_model = src_model
        self.tgt_model = tgt_model  # None: joint vocabulary
        self.src = _processor(src_model)
        self.tgt = _processor(tgt_model) if tgt_model is not None else self.src
        self.vocab = vocab
        self._ids = {side: {p: i for i, p in enumerate(pieces)} for side, pieces in vocab.items()} if vocab else None
        self._case_ids = {
            side: self._case_tag_ids(processor) for side, processor in (("src", self.src), ("tgt", self.tgt))
        }

    def _case_tag_ids(self, processor: spm.SentencePieceProcessor) -> dict[str, int]:
        """{case: id} of the case tags, where the model has both as pieces (tokenizer.case_tags), else {}."""
        ids = {case: processor.piece_to_id(tag) for case, tag in casing.CASE_TAGS.items()}
        if self.vocab is not None or any(processor.id_to_piece(i) != casing.CASE_TAGS[c] for c, i in ids.items()):
            return {}
        return ids

    @property
    def case_tags(self) -> bool:
        """Whether the model reads and writes the case of a whole sentence as a tag (data/casing.py)."""
        return bool(self._case_ids["src"] and self._case_ids["tgt"])

    @classmethod
    def from_state(cls, spm: dict) -> Tokenizer:
        """From a checkpoint's "spm" entry: {"src": bytes, "tgt": bytes | None, "vocab": ... | None}."""
        return cls(spm["src"], spm["tgt"], spm.get("vocab"))

    def state(self) -> dict:
        return {"src": self.src_model, "tgt": self.tgt_model, "vocab": self.vocab}

    @property
    def shared_ids(self) -> bool:
        """Whether source and target share one id space (what tied source/target embeddings need)."""
        return self.vocab["src"] == self.vocab["tgt"] if self.vocab else self.tgt_model is None

    @property
    def src_vocab_size(self) -> int:
        return len(self.vocab["src"]) if self.vocab else self.src.get_piece_size()

    @property
    def tgt_vocab_size(self) -> int:
        return len(self.vocab["tgt"]) if self.vocab else self.tgt.get_piece_size()

    def encode_src(self, lines: list[str], threads: int | None = None) -> list[list[int]]:
        return self._encode(self.src, "src", lines, threads)

    def encode_input(self, lines: list[str], language: str = "") -> list[list[int]]:
        """The source ids of the text a user sends: encode_src, except that with case tags a
        sentence in UPPER CASE or Title Case becomes its tag and its sentence-cased text, and that
        `language` (one of target_languages) puts its token first. A line typed with a language
        token of the model first (`>>fra<< ...`) keeps it whole when no `language` is given."""
        if not language and self.target_languages and self._ids is None:
            typed = [
                m if (m := LANGUAGE_TOKEN.match(line)) and m[1] in self.target_languages else None for line in lines
            ]
            if any(typed):
                rest = self.encode_input([line[m.end() :].lstrip() if m else line for line, m in zip(lines, typed)])
                return [[self.tag_id(m[0]), *ids] if m else ids for m, ids in zip(typed, rest)]
        if self.case_tags:
            cases = [casing.sentence_case_of(line) for line in lines]
            ids = self.encode_src([casing.sentence_cased(line) if case else line for line, case in zip(lines, cases)])
            ids = [self.with_case_tag(seq, case, "src") for seq, case in zip(ids, cases)]
        else:
            ids = self.encode_src(lines)
        if not language:
            return ids
        token = self.tag_id(language_token(language))  # one piece of the source vocabulary, as a corpus tag
        return [[token, *seq] for seq in ids]

    @functools.cached_property
    def target_languages(self) -> list[str]:
        """The codes of the model's target-language tokens (`>>fra<<`: data/languages.py); none: a bilingual model."""
        pieces = self.vocab["src"] if self.vocab else map(self.src.id_to_piece, range(self.src.get_piece_size()))
        return token_languages(pieces)

    def with_case_tag(self, ids: list[int], case: str | None, side: str) -> list[int]:
        """`ids` after the tag of `case` ("upper", "title"; None: no tag) of the `side` ("src", "tgt") model."""
        return [self._case_ids[side][case], *ids] if case else ids

    def encode_tgt(self, lines: list[str], threads: int | None = None) -> list[list[int]]:
        return self._encode(self.tgt, "tgt", lines, threads)

    def _encode(self, processor: spm.SentencePieceProcessor, side: str, lines: list[str], threads: int | None):
        threads = threads or os.cpu_count() or 1
        if self._ids is None:
            return processor.encode(lines, out_type=int, num_threads=threads)
        ids = self._ids[side]
        codes = [MARIAN_LANGUAGE_CODE.match(line) for line in lines]
        texts = [MARIAN_LANGUAGE_CODE.sub("", line) for line in lines]
        return [
            [ids.get(p, UNK) for p in ([code.group(0)] if code else []) + pieces]
            for code, pieces in zip(codes, processor.encode(texts, out_type=str, num_threads=threads))
        ]

    def decode_tgt(self, ids: list[int]) -> str:
        return self.decode_tgt_batch([ids])[0]

    def decode_src_batch(self, sequences: list[list[int]]) -> list[str]:
        return self._decode(self.src, "src", sequences)

    def decode_tgt_batch(self, sequences: list[list[int]]) -> list[str]:
        """Target ids to text; with case tags, an output that starts with one comes in its case."""
        if not self.case_tags:
            return self._decode(self.tgt, "tgt", sequences)
        tags = {i: case for case, i in self._case_ids["tgt"].items()}
        cases = [tags.get(int(ids[0])) if len(ids) else None for ids in sequences]
        texts = self._decode(self.tgt, "tgt", [[i for i in ids if int(i) not in tags] for ids in sequences])
        return [casing.recased(text, case) for text, case in zip(texts, cases)]

    def _decode(self, processor: spm.SentencePieceProcessor, side: str, sequences: list[list[int]]) -> list[str]:
        if not sequences:
            return []
        if self.vocab is None:
            return processor.decode(sequences)
        pieces = self.vocab[side]
        return [
            processor.decode_pieces([pieces[i] for i in ids if i not in SPECIAL_IDS]).replace(WORD_START, " ").strip()
            for ids in sequences
        ]

    def src_piece(self, token: int) -> str:
        return self.vocab["src"][token] if self.vocab else self.src.id_to_piece(token)

    def tgt_piece(self, token: int) -> str:
        return self.vocab["tgt"][token] if self.vocab else self.tgt.id_to_piece(token)

    def tgt_id(self, piece: str) -> int:
        return self._ids["tgt"].get(piece, UNK) if self._ids else self.tgt.piece_to_id(piece)

    def tag_id(self, tag: str) -> int:
        """The id of a corpus tag, which must be a single piece of the source vocabulary."""
        piece = self._ids["src"].get(tag, UNK) if self._ids else self.src.piece_to_id(tag)
        if piece == UNK or self.src_piece(piece) != tag:
            raise MtrainError(
                f"the corpus tag '{tag}' is not a piece of the source sentencepiece model; let mtrain train the model "
                f"(tags become user-defined symbols) or retrain yours with --user_defined_symbols={tag}"
            )
        return piece


def word_numbers(pieces: list[str]) -> list[int]:
    """The word index of each piece: a piece starting with '▁' (WORD_START) begins a new word; a
    case tag (data/casing.py) belongs to the word after it."""
    numbers, word = [], -1
    for piece in pieces:
        if piece in CASE_TAG_PIECES:
            numbers.append(word + 1)
            continue
        word += piece.startswith(WORD_START) or word < 0
        numbers.append(word)
    return numbers
