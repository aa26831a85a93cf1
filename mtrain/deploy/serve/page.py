"""The page `mtrain serve` answers GET / with: type a sentence, see its translations and the
cross-attention that produced the best one.

The page is three files in static/ (HTML, CSS, JavaScript) served by mtrain itself: no CDN, no
build step, nothing fetched from elsewhere. Its Content-Security-Policy allows only those files and
requests to this server, and its script inserts every text from the user or the model with
`textContent`, never as HTML. The heatmap's weights come from POST /attention, computed by the code
of `mtrain attention` (insight/attention.py); its word alignment is that of `translate --alignment`.
"""

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

from mtrain.data.alignments import pharaoh
from mtrain.data.tokenizer import word_numbers
from mtrain.deploy.serve.responses import busy_response, error_response, is_unicode_text, loading_response
from mtrain.deploy.serve.worker import QueueFull, ServeLimits
from mtrain.errors import MtrainError
from mtrain.inference.translator import Translator
from mtrain.insight.alignment import align_words, alignment_source
from mtrain.insight.attention import attention_maps

if TYPE_CHECKING:  # FastAPI is an optional extra: mtrain serve imports it when it starts
    from fastapi import FastAPI

STATIC = Path(__file__).with_name("static")
ASSETS = {
    "page.css": "text/css; charset=utf-8",
    "page.js": "text/javascript; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
MAX_ATTENTION_PIECES = 200  # source subwords: the weights grow with source x target x layers x heads
NO_ATTENTION = "attention maps need mtrain's own PyTorch model (one --checkpoint, --engine torch)"


def attention_payload(translator: Translator, text: str, beam: int | None) -> dict:
    """The best translation of `text` with the cross-attention that produced it (every layer and
    head, rows: the target pieces it produced, then </s>; columns: the source pieces, then </s>) and
    the word alignment `translate --alignment` gives for it."""
    pieces = len(translator.tokenizer.encode_src([" ".join(text.split())])[0])
    if pieces > MAX_ATTENTION_PIECES:
        raise MtrainError(f"attention is drawn for at most {MAX_ATTENTION_PIECES} source subwords; this has {pieces}")
    maps = attention_maps(translator, text, beam)
    layer, head = alignment_source(translator)
    source, target = maps.source[:-1], maps.produced[:-1]
    links = align_words(maps.cross[layer - 1].mean(0) if head is None else maps.cross[layer - 1, head], source, target)
    return {
        "translation": maps.translation,
        "source": maps.source,
        "target": maps.produced,
        "source_word": word_numbers(source) + [None],  # the word each piece belongs to (</s>: none)
        "target_word": word_numbers(target) + [None],
        "alignment_layer": layer,
        "alignment_head": head,  # the guided head (train.guided_alignment), or None: the mean of the layer's heads
        "alignment": pharaoh(links),
        "weights": [[[[round(x, 4) for x in row] for row in head] for head in lay] for lay in maps.cross.tolist()],
        "shape": "layers x heads x target pieces x source pieces",
    }


def add_page_routes(app: "FastAPI", state: dict, limits: ServeLimits) -> None:
    """GET / (the page), GET /static/<file> (its stylesheet and script), POST /attention."""
    from fastapi.responses import Response
    from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

    class AttentionRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")
        text: StrictStr = Field(description="One sentence.", examples=["A man rides a bike."])
        beam: StrictInt | None = Field(None, ge=1, le=limits.max_beam, description="Beam size (default: the model's).")
        tgt_lang: StrictStr | None = Field(None, description="A multilingual model's target language (fr, fra, ...).")

    @app.get("/", include_in_schema=False)
    async def page():
        html = (STATIC / "index.html").read_bytes()
        return Response(html, media_type="text/html; charset=utf-8", headers=SECURITY_HEADERS)

    @app.get("/static/{name}", include_in_schema=False)
    async def asset(name: str):
        if name not in ASSETS:
            return error_response(404, f"no such file: {name}")
        return Response((STATIC / name).read_bytes(), media_type=ASSETS[name], headers=SECURITY_HEADERS)

    @app.post("/attention")
    async def attention(body: AttentionRequest):
        """The best translation of one sentence with its cross-attention weights and word alignment."""
        worker = state["worker"]
        if worker is None:
            return loading_response()
        if not isinstance(worker.translator, Translator):
            return error_response(501, NO_ATTENTION)
        if not body.text.strip():
            return error_response(422, "text is empty; give a sentence to translate")
        if not is_unicode_text(body.text):
            return error_response(400, "text is not valid Unicode (it holds a lone surrogate); send UTF-8 text")
        if len(body.text) > limits.max_chars:
            return error_response(
                413, f"text has {len(body.text)} characters; at most {limits.max_chars} (--max-chars)"
            )
        too_much = limits.over_work_limit([body.text], body.beam or worker.translator.config.beam)
        if too_much:
            return error_response(*too_much)
        try:
            worker.engine_for(body.tgt_lang or "")  # a language the model lacks: 422 before any work
        except MtrainError as e:
            return error_response(422, str(e))
        try:
            future = worker.submit_task(
                lambda translator: attention_payload(translator, body.text, body.beam), body.tgt_lang or ""
            )
        except QueueFull:
            return busy_response()
        try:
            return await asyncio.wrap_future(future)
        except MtrainError as e:
            return error_response(413, str(e))
