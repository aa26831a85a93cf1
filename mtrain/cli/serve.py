"""`mtrain serve`: translations over HTTP (mtrain.deploy.serve), with the limits a public
endpoint needs."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from mtrain.cli.options import (
    DeviceOption,
    EngineOption,
    ModelDirOption,
    PrecisionOption,
    QuantizationOption,
    ThreadsOption,
)
from mtrain.cli.shell import command
from mtrain.deploy.serve.worker import ServeLimits


@command(short_help="Serve translations over HTTP, with a page to try them.")
def serve(
    checkpoint: Optional[Path] = typer.Option(
        None, "--checkpoint", metavar="FILE", help="A checkpoint, e.g. runs/demo/checkpoint_avg.pt."
    ),
    model: Optional[Path] = ModelDirOption,
    engine: str = EngineOption,
    quantization: Optional[str] = QuantizationOption,
    host: str = typer.Option(
        "127.0.0.1",
        metavar="ADDRESS",
        help="Address to listen on; 127.0.0.1 keeps it on this machine (0.0.0.0: every interface).",
    ),
    port: int = typer.Option(8000, help="TCP port."),
    threads: int = ThreadsOption,
    device: str = DeviceOption,
    precision: str = PrecisionOption,
    max_sentences: int = typer.Option(ServeLimits.max_sentences, help="Most sentences in one request."),
    max_chars: int = typer.Option(ServeLimits.max_chars, help="Most characters in one sentence."),
    max_body_bytes: int = typer.Option(ServeLimits.max_body_bytes, help="Largest request body in bytes."),
    max_queue: int = typer.Option(
        ServeLimits.max_queue, help="Most sentences waiting for the model; beyond, requests get 503 + Retry-After."
    ),
    max_wait_ms: float = typer.Option(
        ServeLimits.max_wait_ms, help="How long a request may wait for others to share its batch."
    ),
    max_work: int = typer.Option(
        ServeLimits.max_work, help="Most decoding one request may ask for: its source characters x beam (else 413)."
    ),
    max_connections: int = typer.Option(
        ServeLimits.max_connections, help="Most open connections; beyond, new requests get 503."
    ),
    drain_seconds: float = typer.Option(
        ServeLimits.drain_seconds,
        help="After SIGTERM or Ctrl-C, how long the requests in flight may take before the server exits.",
    ),
    idle_seconds: float = typer.Option(
        ServeLimits.idle_seconds,
        help="Close a connection whose client sends nothing for this long while the server waits for its request.",
    ),
    receive_seconds: float = typer.Option(
        ServeLimits.receive_seconds,
        help="Close a connection whose request (line, headers, body) has not arrived whole this long after it began.",
    ),
) -> None:
    """Serve translations over HTTP: a page to try the model at /, POST /translate, POST /attention,
    GET /health, /info, /openapi.json.

    Needs the serve extra: pip install 'mtrain[serve]'. Example:
    curl -s localhost:8000/translate -H 'content-type: application/json' -d '{"text": ["A dog runs."]}'
    """
    from mtrain.deploy.engines import check_model_source, open_engine
    from mtrain.deploy.serve.app import serve_command

    check_model_source(checkpoint, model)  # before the server starts
    limits = ServeLimits(
        max_sentences,
        max_chars,
        max_body_bytes,
        max_queue,
        max_wait_ms,
        max_work=max_work,
        max_connections=max_connections,
        drain_seconds=drain_seconds,
        idle_seconds=idle_seconds,
        receive_seconds=receive_seconds,
    )
    engine_args = dict(checkpoint=checkpoint, model_dir=model, engine=engine, device=device, precision=precision)
    serve_command(lambda: open_engine(**engine_args, threads=threads, quantization=quantization), host, port, limits)
