"""Inline markup around translated text: parse, strip, translate the text, put the tags back.

The approach of Bergamot (Firefox's translations): a parser (Python's html.parser, not regular
expressions) splits a document into segments at block elements (p, li, td, headings, ...); each
segment's text goes to the model without its inline elements; every element is then put back
around the target words aligned to the source words it covered, keeping the source's nesting
and order, so the output is well-formed whenever the input is (data/placement.py). Void elements (br, img), comments
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
from html.parser import HTMLParser
from xml.parsers import expat

from mtrain.data.alignments import Links
from mtrain.data.placement import Element, Segment, render
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


Part = str | Segment  # a document: markup passed through as written, and segments to translate


def translate_markup(
    documents: list[str], fmt: str, translate: Callable[[list[str]], list[tuple[str, Links, Links]]]
) -> list[str]:
    """Each document translated with its markup kept; `translate` maps texts to (translation, sure
    word links, fallback word links) and sees every segment of every document in one call."""
    if fmt == "text":
        return [translation for translation, *_ in translate(documents)]
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
