"""Inline markup around translated text: parse, strip, translate the text, put the tags back.

The approach of Bergamot (Firefox's translations): a parser (Python's html.parser, not regular
expressions) splits a document into segments at block elements (p, li, td, headings, ...); each
segment's text goes to the model without its inline elements; every element is then put back
around the target words aligned to the source words it covered, keeping the source's nesting
and order, so the output is well-formed whenever the input is. Void elements (br, img), comments
and content the model must not see (pre, script, style, textarea) land, as written, before the
target word aligned to the source word that followed them. Inline content that must not be
translated (code, kbd, samp, var, translate="no") is shown to the model, so the sentence around it
stays whole, and the element as written replaces the target words aligned to it. Start tags,
attributes and entities are written back exactly as the source wrote them.
"""

from __future__ import annotations

import html
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from xml.parsers import expat

from mtrain.data.alignments import Links
from mtrain.errors import MtrainError

FORMATS = ("text", "html", "xml")
VOID_ELEMENTS = frozenset(
    {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
)
BLOCK_ELEMENTS = frozenset(
    {"address", "article", "aside", "blockquote", "body", "caption", "dd", "div", "dl", "dt", "figcaption",
     "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6", "head", "header", "html", "li", "main",
     "nav", "ol", "p", "section", "table", "tbody", "td", "tfoot", "th", "thead", "title", "tr", "ul"}
)  # fmt: skip
UNTRANSLATED_ELEMENTS = frozenset({"code", "kbd", "samp", "var"})  # and translate="no": kept as written
HIDDEN_ELEMENTS = frozenset({"pre", "script", "style", "textarea"})  # kept as written, not shown to the model
TAG_NAME = re.compile(r"<\s*([^\s/>]+)")
END_TAG_NAME = re.compile(r"</\s*([^\s>]+)")


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


Part = str | Segment  # a document: markup passed through as written, and segments to translate


def translate_markup(
    documents: list[str], fmt: str, translate: Callable[[list[str]], list[tuple[str, Links]]]
) -> list[str]:
    """Each document translated with its markup kept; `translate` maps texts to (translation,
    word alignment) pairs and sees every segment of every document in one call."""
    if fmt == "text":
        return [translation for translation, _ in translate(documents)]
    parsed = [parse(document, fmt) for document in documents]
    segments = [part for parts in parsed for part in parts if isinstance(part, Segment)]
    translated = iter(translate([segment.text for segment in segments]))
    return [
        "".join(part if isinstance(part, str) else render(part, *next(translated)) for part in parts)
        for parts in parsed
    ]


def parse(document: str, fmt: str) -> list[Part]:
    """The document's parts. XML must be well-formed (one-line error otherwise); HTML is repaired
    the way a browser's parser would: a stray end tag dropped, an element left open closed where
    its segment ends."""
    if fmt == "xml":
        _check_xml(document)
    parser = _MarkupParser(html_rules=fmt == "html")
    parser.feed(document)
    parser.close()
    return parser.finish()


def _check_xml(document: str) -> None:
    checker = expat.ParserCreate()
    try:
        checker.Parse(f"<mtrain-root>{document}</mtrain-root>", True)
    except expat.ExpatError as e:
        raise MtrainError(
            f"the input is not well-formed XML ({expat.ErrorString(e.code)} at column {max(e.offset - 14, 0)}); "
            "fix it or translate it as html"
        ) from None


class _Open:
    """An element being parsed: the Element and the character offsets of its content."""

    def __init__(self, element: Element, name: str, begin: int):
        self.element, self.name, self.begin = element, name, begin


class _MarkupParser(HTMLParser):
    """Collects a document's parts: raw markup between segments and, per segment, its text, its
    elements (character offsets, turned into word spans when the segment ends) and entities."""

    def __init__(self, html_rules: bool):
        super().__init__(convert_charrefs=False)
        self.html_rules = html_rules
        self.parts: list[Part] = []
        self._new_segment()
        self.untranslated: list[str] = []  # the raw text of an element passed through untouched
        self.untranslated_name, self.untranslated_depth = "", 0
        self.untranslated_shown, self.untranslated_begin = False, 0  # its text in the model's input, from

    def _new_segment(self) -> None:
        self.chunks: list[str] = []  # the segment's plain text
        self.raw: list[str] = []  # and as written
        self.length = 0
        self.top: list[Element] = []
        self.stack: list[_Open] = []
        self.spans: list[tuple[Element, int, int]] = []  # element, first and end character
        self.entities: dict[str, str] = {}

    # html.parser's callbacks

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self._start(tag, attrs, self.get_starttag_text(), void=self.html_rules and tag in VOID_ELEMENTS)

    def handle_startendtag(self, tag: str, attrs: list) -> None:
        self._start(tag, attrs, self.get_starttag_text(), void=True)

    def parse_endtag(self, i: int) -> int:
        """html.parser's, noting the end tag as written (it reports the name lower-cased)."""
        self.end_tag_text = self.rawdata[i : self.rawdata.find(">", i) + 1]
        return super().parse_endtag(i)

    def handle_endtag(self, tag: str) -> None:
        if self.untranslated_depth:
            self.untranslated.append(self.end_tag_text)
            self.untranslated_depth -= tag == self.untranslated_name
            if not self.untranslated_depth:
                self._untranslated_done()
            return
        if self.html_rules and tag in BLOCK_ELEMENTS:
            self._end_segment()
            self.parts.append(self.end_tag_text)
            return
        written = END_TAG_NAME.match(self.end_tag_text)
        wanted = tag if self.html_rules or not written else written.group(1)
        if wanted in (self._name(o) for o in self.stack):  # else a stray end tag: dropped
            while self._close_top() != wanted:
                pass

    def handle_data(self, data: str) -> None:
        if self.untranslated_depth:
            self._untranslated_text(data, data)
        else:
            self._text(data, data)

    def handle_entityref(self, name: str) -> None:
        self._entity(f"&{name};")

    def handle_charref(self, name: str) -> None:
        self._entity(f"&#{name};")

    def handle_comment(self, data: str) -> None:
        self._raw_at_position(f"<!--{data}-->")

    def handle_decl(self, decl: str) -> None:
        self._raw_at_position(f"<!{decl}>")

    def handle_pi(self, data: str) -> None:
        self._raw_at_position(f"<?{data}>")

    def finish(self) -> list[Part]:
        if self.untranslated_depth:  # an untranslated element left open: passed through as it was
            self.untranslated_depth = 0
            self._untranslated_done()
        self._end_segment()
        return self.parts

    # building a segment

    def _start(self, tag: str, attrs: list, raw: str, void: bool) -> None:
        if self.untranslated_depth:
            self.untranslated.append(raw)
            self.untranslated_depth += tag == self.untranslated_name and not void
            return
        if self.html_rules and tag in BLOCK_ELEMENTS:
            self._end_segment()
            self.parts.append(raw)
        elif self.html_rules and tag in HIDDEN_ELEMENTS | UNTRANSLATED_ELEMENTS or ("translate", "no") in attrs:
            if void:
                self._at_position(raw)
            else:
                self.untranslated, self.untranslated_name, self.untranslated_depth = [raw], tag, 1
                self.untranslated_shown = not (self.html_rules and tag in HIDDEN_ELEMENTS)
                self.untranslated_begin = self.length
        elif void:
            self._at_position(raw)
        else:
            name = TAG_NAME.match(raw).group(1)
            element = Element(start=raw, end=f"</{name}>")
            (self.stack[-1].element.children if self.stack else self.top).append(element)
            self.stack.append(_Open(element, name, self.length))
            self.raw.append(raw)

    def _close_top(self) -> str:
        opened = self.stack.pop()
        self.spans.append((opened.element, opened.begin, self.length))
        self.raw.append(opened.element.end)
        return self._name(opened)

    def _name(self, opened: _Open) -> str:
        """HTML names are case-insensitive (html.parser lower-cases them), XML names are not."""
        return opened.name.lower() if self.html_rules else opened.name

    def _at_position(self, raw: str) -> None:
        """An element without translatable content, placed between words."""
        element = Element(start=raw, end="")
        (self.stack[-1].element.children if self.stack else self.top).append(element)
        self.spans.append((element, self.length, self.length))
        self.raw.append(raw)

    def _untranslated_text(self, text: str, raw: str) -> None:
        self.untranslated.append(raw)
        if self.untranslated_shown:  # the model sees it, so that the sentence around it stays whole
            self.chunks.append(text)
            self.length += len(text)

    def _untranslated_done(self) -> None:
        raw = "".join(self.untranslated)
        if not self.untranslated_shown or not "".join(self.chunks)[self.untranslated_begin :].strip():
            self._at_position(raw)
            return
        element = Element(start=raw, end="", verbatim=True)
        (self.stack[-1].element.children if self.stack else self.top).append(element)
        self.spans.append((element, self.untranslated_begin, self.length))
        self.raw.append(raw)

    def _raw_at_position(self, raw: str) -> None:
        if self.untranslated_depth:
            self.untranslated.append(raw)
        else:
            self._at_position(raw)

    def _text(self, text: str, raw: str) -> None:
        self.chunks.append(text)
        self.raw.append(raw)
        self.length += len(text)

    def _entity(self, raw: str) -> None:
        character = html.unescape(raw)
        if self.untranslated_depth:
            self._untranslated_text(character, raw)
            return
        if character != raw:
            self.entities.setdefault(character, raw)
        self._text(character, raw)

    def _end_segment(self) -> None:
        while self.stack:
            self._close_top()
        text = "".join(self.chunks)
        if text.strip():
            self.parts.append(_segment(text, "".join(self.raw), self.top, self.spans, self.entities))
        elif self.raw:
            self.parts.append("".join(self.raw))
        self._new_segment()


def _segment(text: str, raw: str, top: list[Element], spans: list[tuple[Element, int, int]], entities: dict) -> Segment:
    """The segment with its elements' character spans turned into word spans, and the whitespace
    its markup began and ended with."""
    words = [m.span() for m in re.finditer(r"\S+", text)]
    for element, begin, end in spans:
        covered = [i for i, (s, e) in enumerate(words) if s < end and e > begin]
        if covered and end > begin:
            element.first, element.last = covered[0], covered[-1] + 1
            element.punct_before = _punctuation(text[words[covered[0]][0] : begin])
            element.punct_after = _punctuation(text[end : words[covered[-1]][1]])
        else:
            element.first = element.last = next((i for i, (s, _) in enumerate(words) if s >= begin), len(words))
            element.space_before = begin == 0 or text[begin - 1].isspace()
            element.space_after = begin == len(text) or text[begin].isspace()
    lead, trail = raw[: len(raw) - len(raw.lstrip())], raw[len(raw.rstrip()) :]
    return Segment(" ".join(text.split()), top, entities, lead, trail)


def _punctuation(text: str) -> bool:
    return bool(text) and all(unicodedata.category(c).startswith("P") for c in text)


def render(segment: Segment, translation: str, links: Links) -> str:
    """The translation with the segment's elements put back around the target words aligned to
    the source words each covered, nested and ordered as in the source."""
    words = translation.split()
    for element in _walk(segment.elements):
        _place(element, links, len(words))
    _fit(segment.elements, 0, len(words))
    out = _Output(segment.entities)
    _emit(segment.elements, 0, len(words), words, out)
    return segment.lead + out.text() + segment.trail


def _walk(elements: list[Element]):
    for element in elements:
        yield element
        yield from _walk(element.children)


def _place(element: Element, links: Links, target_words: int) -> None:
    """The element's target span: the target words aligned to its source words; an element at a
    position, or one whose words align to nothing, goes before the target word aligned to the
    next source word (the end when none follows)."""
    aligned = sorted(j for i, j in links if element.first <= i < element.last and j < target_words)
    if aligned and element.last > element.first:
        element.first, element.last = aligned[0], aligned[-1] + 1
        return
    following = [(i, j) for i, j in links if i >= element.first and j < target_words]
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
            (i for i, p in enumerate(self.pending) if isinstance(p, Element) and p.punct_before), len(self.pending)
        )
        self.out += [_tag(p) for p in self.pending[:inside]] + [lead]
        self.out += [_tag(p) for p in self.pending[inside:]] + [core, trail]
        self.punct_index, self.pending = len(self.out) - 1, []

    def text(self) -> str:
        tail = "".join(_tag(p) for p in self.pending).rstrip(" ")
        return "".join(self.out) + (" " if tail and self.punct_index >= 0 else "") + tail


def _tag(pending: Element | str) -> str:
    return pending.start if isinstance(pending, Element) else pending


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
