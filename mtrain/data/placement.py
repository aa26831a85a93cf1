"""A segment of marked-up text and its elements (data/markup.py parses them), and putting the
elements back around the segment's translation.

Each element goes around the span from the first to the last target word aligned to its source
words (by the sure links; by the fallback links where its words have none); an element at a
position (void, hidden, or whose words align to nothing) goes before the
target word aligned to the next source word. Spans are then clipped so that children stay inside
their parent and siblings keep the source's order: the output is well-formed by construction.
Punctuation the source kept outside an element stays outside it.
"""

from __future__ import annotations

import html
import unicodedata
from dataclasses import dataclass, field

from mtrain.data.alignments import Links


@dataclass
class Element:
    """An inline element of a segment: its tags as written and the source words it covers
    (`first` to `last`, one past; equal: an element at a position between words)."""

    start: str
    end: str
    first: int = 0
    last: int = 0
    children: list[Element] = field(default_factory=list)
    punct_before: bool = False  # the source opens it after its first word's leading punctuation ("<b>dog</b>")
    punct_after: bool = False  # and closes it before its last word's trailing punctuation ("<b>dog</b>.")
    space_before: bool = True  # an element at a position: written after a space (else glued to the word before)
    space_after: bool = True  # and followed by one
    verbatim: bool = False  # `start` is the whole untranslated element: it replaces the target words aligned to it


@dataclass
class Segment:
    """Text translated as one unit: its words, the inline elements over them, the entities its text
    was written with (character -> entity), and the whitespace around it."""

    text: str
    elements: list[Element]
    entities: dict[str, str]
    lead: str = ""
    trail: str = ""


def render(segment: Segment, translation: str, links: Links, fallback: Links = frozenset()) -> str:
    """The translation with the segment's elements put back around the target words aligned to
    the source words each covered, nested and ordered as in the source: by `links`, or by
    `fallback` for an element whose words `links` leaves out."""
    words = translation.split()
    for element in _walk(segment.elements):
        _place(element, links, fallback, len(words))
    _fit(segment.elements, 0, len(words))
    out = _Output(segment.entities)
    _emit(segment.elements, 0, len(words), words, out)
    return segment.lead + out.text() + segment.trail


def _walk(elements: list[Element]):
    for element in elements:
        yield element
        yield from _walk(element.children)


def _place(element: Element, links: Links, fallback: Links, target_words: int) -> None:
    """The element's target span: the target words aligned to its source words (by `links`, else
    by `fallback`); an element at a position, or one whose words align to nothing, goes before the
    target word aligned to the next source word (the end when none follows)."""
    covers_words = element.last > element.first
    for linked in (links, fallback) if covers_words else ():
        aligned = sorted(j for i, j in linked if element.first <= i < element.last and j < target_words)
        if aligned:
            element.first, element.last = aligned[0], aligned[-1] + 1
            return
    following = [(i, j) for i, j in links | fallback if i >= element.first and j < target_words]
    position = min(following)[1] if following else target_words  # the first following source word's first link
    element.first = element.last = position


def _fit(elements: list[Element], low: int, high: int) -> None:
    """Clip spans so that children stay inside their parent and siblings keep the source's order
    without overlapping: the output is well-formed by construction."""
    cursor = low
    for element in elements:
        element.first = min(max(element.first, cursor), high)
        element.last = min(max(element.last, element.first), high)
        cursor = element.last
        _fit(element.children, element.first, element.last)


def _emit(elements: list[Element], low: int, high: int, words: list[str], out: _Output) -> None:
    """Words and tags in output order."""
    position = low
    for element in elements:
        for word in words[position : element.first]:
            out.word(*_split_punctuation(word))
        if element.verbatim and element.last > element.first:
            out.verbatim(element, words[element.first : element.last])
        elif element.end:
            out.open(element)
            _emit(element.children, element.first, element.last, words, out)
            out.close(element)
        else:
            out.void(element)
        position = element.last
    for word in words[position:high]:
        out.word(*_split_punctuation(word))


class _Output:
    """The rendered segment: words separated by spaces, opening tags glued to the next word (after
    its leading punctuation where the source opened after it), closing tags to the previous one
    (before its trailing punctuation where the source closed before it)."""

    def __init__(self, entities: dict[str, str]):
        self.entities = entities
        self.out: list[str] = []
        self.pending: list[Element | str] = []  # opened (or written whole) before the next word
        self.punct_index = -1  # where the last word's trailing punctuation sits in `out`

    def open(self, element: Element) -> None:
        self.pending.append(element)

    def void(self, element: Element) -> None:
        if not element.space_before and self.punct_index >= 0:
            self.out.append(element.start)  # glued to the word before, as in the source
        else:
            self.pending.append(element.start + " " * element.space_after)

    def close(self, element: Element) -> None:
        index = next((i for i, p in enumerate(self.pending) if p is element), None)
        if index is not None:  # closed before any word: an empty element
            inner = "".join(_tag(p) for p in self.pending[index + 1 :])
            self.pending[index:] = [element.start + inner + element.end + " " * element.space_after]
        elif element.punct_after and self.punct_index == len(self.out) - 1 and self.out[self.punct_index]:
            self.out.insert(self.punct_index, element.end)
            self.punct_index += 1
        else:
            self.out.append(element.end)

    def word(self, lead: str, core: str, trail: str) -> None:
        self._write(_escape(lead, self.entities), _escape(core, self.entities), _escape(trail, self.entities))

    def verbatim(self, element: Element, replaced: list[str]) -> None:
        """The untranslated element in place of the target words aligned to it, keeping their
        outer punctuation where the source had it outside the element."""
        lead = _split_punctuation(replaced[0])[0] if element.punct_before else ""
        trail = _split_punctuation(replaced[-1])[2] if element.punct_after else ""
        self._write(_escape(lead, self.entities), element.start, _escape(trail, self.entities))

    def _write(self, lead: str, core: str, trail: str) -> None:
        self.out.append(" " if self.punct_index >= 0 else "")
        inside = next(
            (i for i, p in enumerate(self.pending) if not isinstance(p, str) and p.punct_before), len(self.pending)
        )
        self.out += [_tag(p) for p in self.pending[:inside]] + [lead]
        self.out += [_tag(p) for p in self.pending[inside:]] + [core, trail]
        self.punct_index, self.pending = len(self.out) - 1, []

    def text(self) -> str:
        tail = "".join(_tag(p) for p in self.pending).rstrip(" ")
        return "".join(self.out) + (" " if tail and self.punct_index >= 0 else "") + tail


def _tag(pending: Element | str) -> str:
    return pending if isinstance(pending, str) else pending.start


def _split_punctuation(word: str) -> tuple[str, str, str]:
    """A word's leading punctuation, its core and its trailing punctuation ("(dog)." -> "(", "dog", ").")."""
    start, end = 0, len(word)
    while start < end and unicodedata.category(word[start]).startswith("P"):
        start += 1
    while end > start and unicodedata.category(word[end - 1]).startswith("P"):
        end -= 1
    return word[:start], word[start:end], word[end:]


def _escape(text: str, entities: dict[str, str]) -> str:
    """Text as markup: &, < and > escaped; characters the source wrote as entities written so again."""
    escaped = html.escape(text, quote=False)
    for character, entity in entities.items():
        if character not in "&<>":
            escaped = escaped.replace(character, entity)
    return escaped
