"""`mtrain serve`: an HTTP translation service (FastAPI + uvicorn) with dynamic batching.

    POST /translate  {"text": ["...", ...], "beam": 4, "nbest": 1}  ->  {"translations": [...]}
                     {"text": ["A <b>big</b> dog."], "format": "html"}: the tags kept (insight/markup.py)
                     {"text": [...], "glossary": [["dog", "Hund"]]}: the terms used (inference/terminology.py)
    POST /attention  {"text": "...", "beam": 4, "tgt_lang": "fr"}  ->  the best translation, its attention, alignment
    GET  /           a page to try the model in a browser: translate, n-best, attention (page.py)
    GET  /health     200 once the model is loaded, 503 before
    GET  /info       languages, vocabulary sizes, model shape, engine, checkpoint step
    GET  /openapi.json  the OpenAPI schema FastAPI generates (no /docs page: its scripts come from a CDN)

One worker thread owns the model (worker.py), so concurrency never duplicates model memory, and
requests that arrive together are merged into one call. The queue is bounded: when it is full a
request gets 503 with Retry-After instead of growing memory without limit. Every user mistake
is a 4xx with a one-line JSON `{"error": ...}`; nothing returns a traceback. SIGTERM stops
accepting connections, lets the requests in flight finish (for at most --drain-seconds: a
client that sends half a request cannot hold the server), then exits 0 (uvicorn's graceful
shutdown). Open connections are bounded (--max-connections) and idle keep-alive connections
close after 5 s.
"""

import contextlib
import itertools
import logging
import signal
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING

from mtrain.deploy.serve.connections import OncePerInterval, idle_closing_protocol
from mtrain.deploy.serve.middleware import AnswerWhenCancelled, BodySizeLimit
from mtrain.deploy.serve.page import add_page_routes
from mtrain.deploy.serve.responses import (
    CLIENT_GONE,
    busy_response,
    error_response,
    loading_response,
    over_limit,
    result_unless_client_left,
    translations_response,
)
from mtrain.deploy.serve.worker import BatchingWorker, QueueFull, ServeLimits
from mtrain.errors import MtrainError
from mtrain.extras import require
from mtrain.inference.confidence import meaning
from mtrain.inference.engine import TranslationEngine
from mtrain.inference.translator import Translator

if TYPE_CHECKING:  # FastAPI is an optional extra: mtrain serve imports it when it starts
    from fastapi import FastAPI, Request

log = logging.getLogger("mtrain")


def _require_fastapi() -> None:
    for module in ("fastapi", "uvicorn"):
        require(module, "serve", "mtrain serve")


def create_app(
    load_translator: Callable[[], TranslationEngine],
    limits: ServeLimits,
    on_load_error: Callable[[str], None] | None = None,
) -> "FastAPI":
    """The FastAPI application. `load_translator()` runs in a background thread at start-up, so
    the server answers /health (503, loading) at once and becomes ready when the model is;
    if loading fails, `on_load_error(message)` is called."""
    _require_fastapi()
    from contextlib import asynccontextmanager

    from fastapi import FastAPI

    state: dict = {"worker": None, "error": None}

    def load() -> None:
        try:
            state["worker"] = BatchingWorker(load_translator(), limits)
            log.info("model loaded; serving")
        except Exception as e:  # noqa: BLE001 - /health reports it; `serve_command` stops the server
            state["error"] = str(e)
            log.error("error: could not load the model: %s", e)
            if on_load_error is not None:
                on_load_error(str(e))

    @asynccontextmanager
    async def lifespan(app: "FastAPI") -> AsyncIterator[None]:
        loader = threading.Thread(target=load, name="mtrain-load", daemon=True)
        loader.start()
        yield
        loader.join()
        if state["worker"] is not None:
            state["worker"].stop()

    app = FastAPI(
        title="mtrain",
        description="Machine translation with a Transformer trained by mtrain.",
        lifespan=lifespan,
        docs_url=None,  # FastAPI's documentation pages load their scripts from a CDN; /openapi.json stays
        redoc_url=None,
    )
    app.state.mtrain = state  # the worker (once loaded) and the load error, for tests and embedding apps
    _add_error_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=limits.max_body_bytes)
    app.add_middleware(AnswerWhenCancelled)  # added last: the outermost
    _add_routes(app, state, limits)
    add_page_routes(app, state, limits)
    return app


def _add_error_handlers(app: "FastAPI") -> None:
    """Validation problems and stray exceptions become one-line JSON errors, never tracebacks."""
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException

    not_json = 'the request body is not valid JSON (UTF-8); send e.g. {"text": ["Hello."]}'

    @app.exception_handler(RequestValidationError)
    async def invalid(request: "Request", exc: RequestValidationError):
        first = exc.errors()[0]
        if first.get("type") == "json_invalid":
            return error_response(400, not_json)
        where = ".".join(str(part) for part in first.get("loc", ()) if part != "body") or "body"
        return error_response(422, f"{where}: {first.get('msg', 'invalid value')}")

    @app.exception_handler(HTTPException)
    async def http_error(request: "Request", exc: HTTPException):
        if exc.status_code == 400 and "parsing the body" in str(exc.detail):  # bytes that are not UTF-8
            return error_response(400, not_json)
        return error_response(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def bug(request: "Request", exc: Exception):
        log.exception("internal error")
        return error_response(500, "internal error; see the server log")


def _translate_request(limits: ServeLimits) -> type:
    """The body of POST /translate, its bounds from the server's limits."""
    from typing import Literal

    from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

    class TranslateRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")
        text: list[StrictStr] = Field(
            description="Sentences to translate, one per item.", examples=[["A man rides a bike."]]
        )
        beam: StrictInt | None = Field(None, ge=1, le=limits.max_beam, description="Beam size (default: the model's).")
        nbest: StrictInt = Field(
            1, ge=1, le=limits.max_beam, description="Hypotheses per sentence, with scores when > 1."
        )
        scores: StrictBool = Field(
            False,
            description="Give {text, score, confidence, words} objects even when nbest is 1: the confidence in "
            "[0, 1] (its meaning: GET /info's confidence_meaning) and each word's (docs/guides/confidence.md).",
        )
        format: Literal["text", "html", "xml"] = Field(
            "text", description="html or xml: inline markup kept around the aligned words (docs/guides/markup.md)."
        )
        glossary: list[tuple[StrictStr, StrictStr]] | None = Field(
            None,
            description="[source term, target term] pairs every translation must use where the source term "
            "occurs (constrained beam search; docs/guides/terminology.md).",
            max_length=limits.max_sentences * 10,
        )
        tgt_lang: StrictStr | None = Field(
            None,
            description="Multilingual models: the language to translate into (fr, fra, ...; GET /info's "
            "target_languages); a bilingual model takes its own only.",
        )
        terminology: Literal["hard", "soft"] = Field(
            "hard",
            description="How the glossary applies: hard (constrained search, PyTorch engine) or soft (the terms "
            "written into the source, for a model trained with data.augment.terms).",
        )

    return TranslateRequest


def _add_routes(app: "FastAPI", state: dict, limits: ServeLimits) -> None:
    from fastapi import Request

    TranslateRequest = _translate_request(limits)
    request_ids = itertools.count(1)

    def ready_worker() -> BatchingWorker | None:
        return state["worker"]

    @app.get("/health")
    async def health():
        if state["error"]:
            return error_response(503, f"the model could not be loaded: {state['error']}")
        if ready_worker() is None:
            return loading_response()
        if not ready_worker().alive():
            return error_response(503, "the model's worker thread has stopped; restart the server (see its log)")
        return {"status": "ok"}

    @app.get("/info")
    async def info():
        worker = ready_worker()
        if worker is None:
            return loading_response()
        t = worker.translator
        return {
            **t.info,
            # the file names only: a server does not tell its clients where its files are
            "checkpoint": " + ".join(Path(c).name for c in str(t.info.get("checkpoint", "")).split(" + ")),
            "src_vocab_size": t.tokenizer.src_vocab_size,
            "tgt_vocab_size": t.tokenizer.tgt_vocab_size,
            "decode": vars(t.config),
            "limits": vars(limits),
            "target_languages": t.tokenizer.target_languages,  # a multilingual model's (tgt_lang of /translate)
            "attention": isinstance(t, Translator),  # POST /attention and the page's heatmap need the PyTorch model
            "confidence_meaning": meaning(t.info),
        }

    @app.post("/translate")
    async def translate(body: TranslateRequest, request: Request):
        worker = ready_worker()
        if worker is None:
            return loading_response()
        problem = over_limit(body.text, limits)
        if problem:
            return error_response(*problem)
        beam = body.beam or worker.translator.config.beam
        if body.nbest > beam:
            return error_response(422, f"nbest ({body.nbest}) must not exceed the beam ({beam})")
        problem = limits.over_work_limit(body.text, beam)
        if problem:
            return error_response(*problem)
        try:
            worker.engine_for(body.tgt_lang or "")  # a language the model lacks: 422 before any work
        except MtrainError as e:
            return error_response(422, str(e))
        if body.format != "text" and body.glossary:
            return error_response(422, f"glossary works with format text; leave it out with format {body.format}")
        if body.format != "text":
            return await _translate_markup(worker, body, request)
        return await _translate_text(worker, body, request, beam, next(request_ids))


async def _translate_text(worker: BatchingWorker, body: object, request: "Request", beam: int, request_id: int):
    """POST /translate as text: merged with other requests by the worker, or (a hard glossary) a
    constrained search of its own."""
    start, lines = time.perf_counter(), body.text
    try:
        if body.glossary and body.terminology == "hard":
            future = _submit_with_glossary(worker, body, beam)
        else:
            lines = _with_soft_terms(worker, body) if body.glossary else lines
            future = worker.submit(lines, beam, body.nbest, body.scores, body.tgt_lang or "")
        answered, results = await result_unless_client_left(future, request.receive)
    except QueueFull:
        return busy_response()
    except MtrainError as e:  # the request's own mistake, found before or while translating it
        return error_response(422, str(e))
    if not answered:
        return error_response(CLIENT_GONE, "the client closed the connection; the request was dropped")
    t = worker.translator
    return translations_response(t.tokenizer, lines, results, body.nbest, body.scores, t.info, request_id, start)


def _with_soft_terms(worker: BatchingWorker, body: object) -> list[str]:
    """The request's sentences with its glossary's terms written in (MtrainError: the request's 422)."""
    from mtrain.data.glossary import glossary_from_pairs
    from mtrain.inference.terminology import check_soft_terms

    check_soft_terms(worker.translator.tokenizer)
    glossary = glossary_from_pairs(body.glossary, [f"glossary.{i}" for i in range(len(body.glossary))])
    return [glossary.annotate(line, worker.translator.config.soft_terms) for line in body.text]


def _submit_with_glossary(worker: BatchingWorker, body: object, beam: int) -> Future:
    """A /translate request with a glossary: checked here (MtrainError: the request's 422), then
    translated on the model's thread with the constrained search."""
    from mtrain.data.glossary import glossary_from_pairs
    from mtrain.inference.terminology import translate_with_glossary

    if not isinstance(worker.translator, Translator):
        raise MtrainError("glossary constrains mtrain's own beam search; serve the --checkpoint with --engine torch")
    glossary = glossary_from_pairs(body.glossary, [f"glossary.{i}" for i in range(len(body.glossary))])
    return worker.submit_task(
        lambda translator: translate_with_glossary(translator, body.text, glossary, beam, body.nbest).results,
        body.tgt_lang or "",
    )


async def _translate_markup(worker: BatchingWorker, body: object, request: "Request") -> object:
    """POST /translate with format html or xml: one translation per sentence, its tags put back."""
    from mtrain.insight.markup import MarkupTranslator

    if body.nbest != 1 or body.scores:
        return error_response(
            422, f"format {body.format} gives one translation per sentence; leave out nbest and scores"
        )
    if not isinstance(worker.translator, Translator):
        return error_response(422, f"format {body.format} needs the PyTorch model (it aligns through its attention)")
    try:
        future = worker.submit_task(
            lambda translator: MarkupTranslator(translator, body.format, beam=body.beam)(body.text), body.tgt_lang or ""
        )
    except QueueFull:
        return busy_response()
    try:
        answered, translations = await result_unless_client_left(future, request.receive)
    except MtrainError as e:
        return error_response(422, str(e))
    if not answered:
        return error_response(CLIENT_GONE, "the client closed the connection; the request was dropped")
    return {"translations": translations}


def _draining_server_class():
    import uvicorn

    class DrainingServer(uvicorn.Server):
        """uvicorn's server, but SIGTERM/SIGINT end it with status 0 once the requests in flight are
        answered (uvicorn re-raises the signal after its graceful shutdown; a drained server has
        nothing to report)."""

        @contextlib.contextmanager
        def capture_signals(self):
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    return DrainingServer


def serve_command(load_translator: Callable[[], TranslationEngine], host: str, port: int, limits: ServeLimits) -> None:
    """Run the server until SIGTERM / Ctrl-C; in-flight requests finish first."""
    limits.check()
    if not 0 <= port <= 65535:
        raise MtrainError(f"--port must be a TCP port from 0 to 65535, got {port}")
    _require_fastapi()
    import uvicorn

    if host not in ("127.0.0.1", "localhost", "::1"):
        log.warning(
            "serving on %s: reachable from other machines; mtrain serve has no authentication, "
            "put it behind a reverse proxy for public use",
            host,
        )
    flood = OncePerInterval()  # 'Too many open files' and the like: one line per interval, not per event
    for name in ("asyncio", "uvicorn.error"):
        logging.getLogger(name).addFilter(flood)
    failure: list[str] = []
    server = _draining_server_class()(
        uvicorn.Config(
            None,
            host=host,
            port=port,
            log_level="warning",
            access_log=False,
            timeout_keep_alive=5,
            http=idle_closing_protocol(limits.idle_seconds, limits.receive_seconds),
            limit_concurrency=limits.max_connections,
            timeout_graceful_shutdown=limits.drain_seconds,
        )
    )

    def stop(message: str) -> None:
        failure.append(message)
        server.should_exit = True

    server.config.app = create_app(load_translator, limits, on_load_error=stop)
    log.info("mtrain serve on http://%s:%d; loading the model", host, port)
    server.run()
    log.info("mtrain serve stopped")
    if failure:
        raise MtrainError(f"could not load the model: {failure[0]}")
