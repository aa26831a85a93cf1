"""The data section of the configuration (corpora, filters, augmentation, language pairs), and
`setting`, the field helper every section uses; config.py holds the other sections and the whole.

The dataclasses are the single source of every default, as in config.py. No torch here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import MISSING, dataclass, field
from typing import Any


def setting(default: Any = MISSING, help: str = "", *, factory: Callable[[], Any] | None = None) -> Any:
    """A config field with its help text, which the configuration reference prints
    (docs/reference/configuration.md, written by scripts/docs_reference.py)."""
    if factory is not None:
        return field(default_factory=factory, metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass
class CorpusConfig:
    """Where one corpus comes from. Set exactly one of `path`, `dataset` or `demo`.

    `weight` and `tag` are for training corpora (data.train may be a list of them): an epoch
    draws from each corpus in proportion to its weight (a small corpus with a high weight is
    upsampled), and a tagged corpus gets its tag token (e.g. <BT> for back-translated data,
    Caswell et al. 2019) in front of every source sentence."""

    path: str = setting("", "Plain text: the files {path}.{lang} or {path}.{lang}.gz, one sentence a line.")
    dataset: str = setting(
        "", "A Hugging Face `datasets` name (wmt/wmt14) or a local loader (parquet, json, csv, arrow)."
    )
    name: str = setting("", "The `datasets` configuration name, e.g. de-en.")
    split: str = setting("", "The `datasets` split, e.g. train, validation, test.")
    data_files: list[str] = setting(factory=list, help="Local files for a loader dataset (parquet, json, csv, arrow).")
    demo: int = setting(0, "Sentence pairs from the built-in synthetic demo generator (0: not a demo corpus).")
    weight: float = setting(
        1.0,
        "Training corpora: this corpus's share of an epoch, relative to the other corpora's weights (> 1 upsamples).",
    )
    tag: str = setting(
        "", "Training corpora: a token put before every source sentence, e.g. <BT> for back-translated data."
    )
    augment: AugmentConfig | None = setting(
        None,
        "Training corpora: this corpus's own data.augment settings instead of data.augment's, e.g. {} for none "
        "on back-translated data; unset: data.augment's.",
    )
    skip_filters: list[str] = setting(
        factory=list,
        help="Training corpora: data.filters not applied to this corpus (a clean one need not pay for langid), "
        "e.g. [langid].",
    )
    src_lang: str = setting(
        "", "Training corpora of a multilingual model: this corpus's source language; '': data.src_lang."
    )
    tgt_lang: str = setting(
        "",
        "Training corpora of a multilingual model: this corpus's target language; '': data.tgt_lang. Corpora "
        "into more than one target language make a multilingual model, each source led by its target-language "
        "token (>>deu<<).",
    )

    @property
    def name_for_logs(self) -> str:
        return self.path or (f"{self.dataset} {self.name}".strip() if self.dataset else f"demo {self.demo}")

    def is_set(self) -> bool:
        return bool(self.path or self.dataset or self.demo)


@dataclass
class FilterConfig:
    """Filters for training data as it comes from the web (ParaCrawl, Common Crawl, CCMatrix): each
    off by default, each with its own count of dropped pairs. Validation and test data are never
    filtered."""

    langid: bool = setting(
        False,
        "Keep a pair only when language identification (CLD2 through pycld2, its tables inside the package; "
        "pip install 'mtrain[filters]') finds each side's language.",
    )
    langid_threshold: float = setting(
        0.5, "langid: the least share of a side that must be in its language (CLD2's estimate)."
    )
    copy: bool = setting(
        False, "Drop pairs whose sides are the same text (or nearly: see copy_similarity), e.g. untranslated lines."
    )
    copy_similarity: float = setting(
        0.9, "copy: sides at least this similar (difflib ratio of their lowercased letters and digits) are copies."
    )
    control_chars: bool = setting(
        False, "Drop pairs with control characters, U+FFFD (undecodable bytes) or unassigned code points."
    )
    min_letters: float = setting(
        0.0, "Drop pairs where a side's share of letters among its non-space characters is below this; 0: off."
    )
    max_other_script: float = setting(
        1.0,
        "Drop pairs where a side's share of letters outside its language's scripts (Latin for en, Cyrillic for "
        "ru, ...) is above this; 1: off.",
    )
    max_token_chars: int = setting(
        0, "Drop pairs with a space-separated token longer than this (URLs, hashes, junk); 0: off."
    )
    numbers: bool = setting(False, "Drop pairs whose sides hold different numbers (1,000 and 1.000 are the same).")


@dataclass
class AugmentConfig:
    """Training pairs changed on the fly into the text users send (after OpusTrainer's modifiers),
    each with the probability that a pair is changed that way; every epoch draws anew from the
    run's seed and the epoch (exact on resume, one draw on every DDP rank). Validation and test
    data are never changed. At most one of upper, title and lower changes a pair; strip_punct and
    typos are drawn independently and come after the case."""

    upper: float = setting(0.0, "UPPER CASE on both sides (str.upper: German ß becomes SS).")
    title: float = setting(
        0.0,
        "Title Case on both sides: the first letter of every space-separated word upper-cased, the rest of the "
        "word unchanged (acronyms and German nouns keep their capitals).",
    )
    lower: float = setting(0.0, "lower case on the source only (chat-style input; the target keeps its case).")
    typos: float = setting(
        0.0,
        "Typos on the source only: one character edit (swap two letters, drop one, double one, or a QWERTY "
        "neighbour key) in each of 15% of its words (at least one); words with digits, URLs and addresses untouched.",
    )
    strip_punct: float = setting(0.0, "The final punctuation removed from both sides.")
    terms: float = setting(
        0.0,
        "Term annotation on the source only (Dinu et al., 2019): a source word with aligned target words (data."
        "alignments) gets their translation after it, `word <t> Wort </t>`, so that the model learns to use terms "
        "given that way (translate --glossary FILE --terminology soft). Only pairs no other modifier changes.",
    )
    terms_per_pair: int = setting(
        1,
        "Words annotated in each pair that terms changes, at most; each drawn with a chance in proportion to the "
        "pieces of its target words, so that the rarer words a glossary brings are the ones most copied in training.",
    )
    term_mask: float = setting(
        0.0,
        "Of the term annotations, the share whose source word is left out, `<t> Wort </t>` in its place: the "
        "annotation is then the only way to the target word, which teaches the copying (after Ailem et al., 2021).",
    )

    def is_on(self) -> bool:
        return any(getattr(self, name) for name in AUGMENT_MODIFIERS)

    def changes_case(self) -> bool:
        return bool(self.upper or self.title or self.lower)


AUGMENT_MODIFIERS = ("upper", "title", "lower", "typos", "strip_punct", "terms")


@dataclass
class DataConfig:
    src_lang: str = setting(
        "en", "Source language code: the file suffix of plain-text corpora and the key in `datasets` records."
    )
    tgt_lang: str = setting("de", "Target language code, as src_lang.")
    train: list[CorpusConfig] = setting(
        factory=list, help="The training corpus (a mapping) or a list of corpora, each with its weight and tag."
    )
    valid: CorpusConfig = setting(
        factory=CorpusConfig,
        help="The validation corpus: validation loss, BLEU, best checkpoint, tuning. A multilingual model's is "
        "read once per language pair ({path}.{lang} files; a `datasets` name may hold {src_lang} and {tgt_lang}).",
    )
    test: CorpusConfig = setting(
        factory=CorpusConfig, help="The test corpus (optional): decoded once per final recipe, never used for choices."
    )
    dir: str = setting("", "Where prepared data goes; empty: {out_dir}/data. Runs that share it share one preparation.")
    min_len: int = setting(1, "Training-pair cleaning (as Moses clean-corpus-n): fewest words per side.")
    max_len: int = setting(250, "Training-pair cleaning: most words per side.")
    max_len_ratio: float = setting(
        9.0, "Training-pair cleaning: the longer side's words over the shorter side's, at most."
    )
    dedup: bool = setting(False, "Drop exact duplicate training pairs (validation and test are never filtered).")
    filters: FilterConfig = setting(
        factory=FilterConfig, help="Language, copy and noise filters for the training pairs; all off by default."
    )
    augment: AugmentConfig = setting(
        factory=AugmentConfig,
        help="Case, typo and punctuation changes to training pairs, drawn anew every epoch; all off by default.",
    )
    alignment_units: str = setting(
        "pieces",
        "What data.alignments aligns: pieces (the subword pieces the model attends over) or words (the "
        "pairs' words, lowercased; each piece of a word then links to each piece of the words it is linked to).",
    )
    temperature: float = setting(
        0.0,
        "Several language pairs: each pair's share of an epoch proportional to n^(1/T), n its training pairs "
        "(1: as they come; 5: the small pairs upsampled, as fairseq's multilingual task); corpora of one pair "
        "share it by weight. 0: every corpus's share by its weight alone.",
    )
    alignments: str = setting(
        "",
        "Word alignments of the training pairs on their subword pieces, made at prepare time (for "
        "train.guided_alignment): eflomal (pip install 'mtrain[align]'; symmetrized grow-diag-final-and); '': none.",
    )

    def direction(self, corpus: CorpusConfig) -> tuple[str, str]:
        """The (source, target) languages of a training corpus: its own, or data's."""
        return corpus.src_lang or self.src_lang, corpus.tgt_lang or self.tgt_lang

    def directions(self) -> list[tuple[str, str]]:
        """The training corpora's (source, target) language pairs, in the order they first appear."""
        return list(dict.fromkeys(self.direction(c) for c in self.train)) or [(self.src_lang, self.tgt_lang)]

    def is_multilingual(self) -> bool:
        """Whether the model translates into more than one language (and reads a target-language token)."""
        return len({tgt for _, tgt in self.directions()}) > 1

    def corpus_augments(self) -> list[AugmentConfig]:
        """Each training corpus's augmentation: its own, or data.augment's."""
        return [c.augment if c.augment is not None else self.augment for c in self.train]

    def annotates_terms(self) -> bool:
        """Whether any training corpus learns soft terms (data.augment.terms): the source
        sentencepiece model then has the term markers as pieces of their own."""
        return any(a.terms > 0 for a in self.corpus_augments())
