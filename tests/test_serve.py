"""`mtrain serve`: same translations as `mtrain translate`, no mix-ups under concurrency, a clean
4xx for every bad input, a bounded queue, and a graceful SIGTERM. Loopback only, bounded."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import pytest

from mtrain.data.store import PreparedData
from mtrain.deploy.engines import open_engine
from mtrain.deploy.serve.app import create_app
from mtrain.deploy.serve.connections import OncePerInterval, waiting_for_client
from mtrain.deploy.serve.responses import result_unless_client_left
from mtrain.deploy.serve.worker import BatchingWorker, QueueFull, ServeLimits
from mtrain.inference.search import Hypothesis

from helpers import free_port, run_cli, serve_process

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402


@pytest.fixture(scope="module")
def demo(demo_run):
    lines = PreparedData(demo_run / "data").raw_text("test", "en")[:120]
    return demo_run / "checkpoint_avg.pt", lines


@pytest.fixture(scope="module")
def client(demo):
    app = create_app(
        lambda: open_engine(demo[0], device="cpu"),
        ServeLimits(max_sentences=8, max_chars=300, max_body_bytes=4000, max_work=3000),
    )
    with TestClient(app) as c:
        deadline = time.time() + 60
        while c.get("/health").status_code != 200 and time.time() < deadline:
            time.sleep(0.1)
        yield c


def worker_queue_size(app) -> int:
    """Sentences waiting for the model in an app's batching worker (0 until it is loaded)."""
    worker = app.state.mtrain["worker"]
    return worker.waiting if worker is not None else 0


@pytest.fixture(scope="module")
def server(demo):
    """A real `mtrain serve` process on a free loopback port."""
    options = ("--max-wait-ms", "20", "--drain-seconds", "4", "--idle-seconds", "1", "--receive-seconds", "3")
    with serve_process(demo[0], *options) as (url, process):
        yield url, process


def test_responses_equal_mtrain_translate(demo, server, tmp_path):
    ckpt, lines = demo
    src = tmp_path / "src.en"
    src.write_text("\n".join(lines) + "\n")
    expected = run_cli("translate", "--checkpoint", str(ckpt), "--input", str(src)).stdout.splitlines()
    url, _ = server
    got = []
    for start in range(0, len(lines), 30):
        response = httpx.post(f"{url}/translate", json={"text": lines[start : start + 30]}, timeout=120)
        assert response.status_code == 200
        got += response.json()["translations"]
    assert got == expected


def test_sixteen_concurrent_clients_get_their_own_translations(demo, server):
    ckpt, lines = demo
    url, _ = server
    expected = open_engine(ckpt, device="cpu").translate(lines[:64])

    def client(i: int) -> tuple[int, list[str]]:
        mine = [lines[j] for j in range(i, 64, 16)]  # 4 distinct sentences per client
        response = httpx.post(f"{url}/translate", json={"text": mine}, timeout=120)
        assert response.status_code == 200, response.text
        return i, response.json()["translations"]

    with ThreadPoolExecutor(16) as pool:
        for i, translations in pool.map(client, range(16)):
            assert translations == [expected[j] for j in range(i, 64, 16)]


def test_health_info_and_docs(client):
    assert client.get("/health").json() == {"status": "ok"}
    info = client.get("/info").json()
    assert (info["src_lang"], info["tgt_lang"], info["engine"]) == ("en", "de", "torch")
    assert info["src_vocab_size"] == 400 and info["model"]["d_model"] == 64 and info["step"] > 0
    assert info["checkpoint"] == "checkpoint_avg.pt"  # its name, not where it lies
    assert client.get("/docs").status_code == 404  # its scripts would come from a CDN
    assert "/translate" in client.get("/openapi.json").json()["paths"]


def test_a_bilingual_model_serves_its_own_target_language(client):
    text = ["The dog sees a cat.", "A cat sees the dog."]
    plain = client.post("/translate", json={"text": text}).json()["translations"]
    assert client.post("/translate", json={"text": text, "tgt_lang": "deu"}).json()["translations"] == plain
    assert client.get("/info").json()["target_languages"] == []


def test_nbest_returns_scored_hypotheses_best_first(client):
    result = client.post("/translate", json={"text": ["The dog sees a cat.", ""], "nbest": 3}).json()["translations"]
    assert len(result) == 2 and len(result[0]) == 3
    assert [h["score"] for h in result[0]] == sorted((h["score"] for h in result[0]), reverse=True)


def test_format_html_keeps_the_markup_as_translate_does(client, demo, tmp_path):
    tagged = [
        'The <b>dog</b> sees a <a href="/cat?x=1&amp;y=2">cat</a>.',
        "<p>The cat sees a dog.</p><p>A <i>dog</i>.</p>",
    ]
    response = client.post("/translate", json={"text": tagged, "format": "html"})
    assert response.status_code == 200, response.text
    (tmp_path / "in.en").write_text("".join(t + "\n" for t in tagged), encoding="utf-8")
    cli = run_cli("translate", "--checkpoint", str(demo[0]), "-i", str(tmp_path / "in.en"), "--format", "html")
    assert response.json()["translations"] == cli.stdout.splitlines()
    assert response.json()["translations"][0] == 'Der <b>Hund</b> sieht eine <a href="/cat?x=1&amp;y=2">Katze</a>.'


BAD_REQUESTS = [
    (b'{"text": ["a"', 400, "not valid JSON"),
    ('{"text": ["\xff"]}'.encode("latin-1"), 400, "not valid JSON"),
    (b'{"text": "one string"}', 422, "text: Input should be a valid list"),
    (b'{"text": [1, 2]}', 422, "text.0: Input should be a valid string"),
    (b'{"sentences": ["a"]}', 422, "text: Field required"),
    (b'{"text": ["a"], "beam": 0}', 422, "beam: Input should be greater than or equal to 1"),
    (b'{"text": ["a"], "beam": "4"}', 422, "beam: Input should be a valid integer"),
    (b'{"text": ["a"], "beam": 2, "nbest": 3}', 422, "nbest (3) must not exceed the beam (2)"),
    (b'{"text": []}', 422, "at least one sentence"),
    (b'{"text": ["a"], "format": "rtf"}', 422, "format: Input should be 'text', 'html' or 'xml'"),
    (b'{"text": ["a"], "format": "html", "nbest": 2}', 422, "format html gives one translation per sentence"),
    (b'{"text": ["a <b>c</i>"], "format": "xml"}', 422, "not well-formed XML (mismatched tag at column 7)"),
    (b'{"text": ["a"], "tgt_lang": "fr"}', 422, "this model translates into 'de' only and has no target-language"),
    (json.dumps({"text": ["a"] * 9}).encode(), 413, "at most 8 (--max-sentences)"),
    (json.dumps({"text": ["a" * 301]}).encode(), 413, "at most 300 (--max-chars)"),
    (json.dumps({"text": ["a" * 250] * 20}).encode(), 413, "over 4000 bytes"),
    (
        json.dumps({"text": ["a" * 300] * 3, "beam": 4}).encode(),
        413,
        "3600 characters x beam of decoding; at most 3000",
    ),
]


@pytest.mark.parametrize("body,status,message", BAD_REQUESTS, ids=[m for _, _, m in BAD_REQUESTS])
def test_bad_input_is_a_one_line_json_error_and_the_server_keeps_serving(client, body, status, message):
    response = client.post("/translate", content=body, headers={"content-type": "application/json"})
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert message in error and "\n" not in error and "Traceback" not in response.text
    assert client.post("/translate", json={"text": ["The dog sees a cat."]}).json()["translations"] == [
        "Der Hund sieht eine Katze."
    ]


def test_a_full_queue_is_refused_not_grown():
    started, release = threading.Event(), threading.Event()

    class SlowTranslator:
        config = type("C", (), {"beam": 1, "max_tokens": 100})()

        def translate_nbest(self, lines, beam=None, nbest=1):
            started.set()
            release.wait(30)
            return [[None] for _ in lines]

    worker = BatchingWorker(SlowTranslator(), ServeLimits(max_queue=5, max_wait_ms=0))
    first = worker.submit(["a"] * 3, 1, 1)  # taken by the worker, which then blocks
    assert started.wait(10)
    worker.submit(["b"] * 5, 1, 1)  # waits: the queue now holds 5 sentences
    with pytest.raises(QueueFull):
        worker.submit(["c"], 1, 1)
    release.set()
    assert len(first.result(timeout=10)) == 3
    worker.stop()


def test_a_full_queue_answers_503_with_retry_after_over_http():
    started, release = threading.Event(), threading.Event()

    class SlowTranslator:
        config = type("C", (), {"beam": 1, "max_tokens": 100})()
        tokenizer = type("T", (), {"decode_tgt": staticmethod(lambda ids: "ok")})()
        info: dict = {}

        def translate_nbest(self, lines, beam=None, nbest=1):
            started.set()
            release.wait(30)
            return [[Hypothesis([], 0.0, 0.0)] for _ in lines]

    app = create_app(lambda: SlowTranslator(), ServeLimits(max_queue=2, max_wait_ms=0))
    answers = []
    with TestClient(app) as http:
        while http.get("/health").status_code != 200:
            time.sleep(0.05)
        send = lambda text: answers.append(http.post("/translate", json={"text": text}).status_code)  # noqa: E731
        busy = threading.Thread(target=send, args=(["a", "b"],))  # taken by the model, which then waits
        busy.start()
        assert started.wait(10)
        waiting = threading.Thread(target=send, args=(["c", "d"],))  # fills the queue (2 sentences)
        waiting.start()
        deadline = time.time() + 10
        while worker_queue_size(app) < 2 and time.time() < deadline:  # until the second request is queued
            time.sleep(0.01)
        refused = http.post("/translate", json={"text": ["e"]})
        release.set()
        busy.join(30)
        waiting.join(30)
    assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
    assert refused.json() == {"error": "the server is busy (translation queue full); retry shortly"}
    assert answers == [200, 200]


def test_requests_arriving_together_share_one_model_call():
    calls = []

    class CountingTranslator:
        config = type("C", (), {"beam": 1, "max_tokens": 100})()

        def translate_nbest(self, lines, beam=None, nbest=1):
            calls.append(len(lines))
            return [[line] for line in lines]

    worker = BatchingWorker(CountingTranslator(), ServeLimits(max_wait_ms=200))
    with worker.condition:  # all ten wait together, however slowly a loaded machine submits them
        futures = [worker.submit([f"s{i}"], 1, 1) for i in range(10)]
    assert [f.result(timeout=10) for f in futures] == [[[f"s{i}"]] for i in range(10)]
    assert calls == [10]
    worker.stop()


def test_merging_keeps_settings_apart_and_bounds_a_call():
    calls = []

    class RecordingTranslator:
        config = type("C", (), {"beam": 1, "max_tokens": 100})()

        def translate_nbest(self, lines, beam=None, nbest=1):
            calls.append((beam, len(lines)))
            return [[(beam, line)] for line in lines]

    worker = BatchingWorker(RecordingTranslator(), ServeLimits(max_wait_ms=300, max_sentences=1000))
    with worker.condition:  # the worker sees all 300 at once, however slowly a loaded machine submits them
        futures = [worker.submit([f"s{i}"], 1 + i % 2, 1) for i in range(300)]
    for i, future in enumerate(futures):
        assert future.result(timeout=10) == [[(1 + i % 2, f"s{i}")]]
    assert sorted(calls) == [(1, 150), (2, 150)]
    calls.clear()
    with worker.condition:
        futures = [worker.submit([f"t{i}"], 1, 1) for i in range(300)]
    [f.result(timeout=10) for f in futures]
    assert calls == [(1, 256), (1, 44)]
    calls.clear()  # and by work: one call decodes at most one request's --max-work
    worker.limits = ServeLimits(max_wait_ms=300, max_sentences=1000, max_work=1000)
    with worker.condition:
        futures = [worker.submit(["x" * 100] * 4, 2, 1) for i in range(5)]  # 800 characters x beam each
    [f.result(timeout=10) for f in futures]
    assert calls == [(2, 4)] * 5
    worker.stop()


def test_a_request_that_breaks_a_merged_call_fails_alone():
    calls = []

    class FragileTranslator:
        config = type("C", (), {"beam": 1, "max_tokens": 100})()

        def translate_nbest(self, lines, beam=None, nbest=1):
            calls.append(len(lines))
            if "bad" in lines:
                raise RuntimeError("the model broke on this input")
            return [[line.upper()] for line in lines]

    worker = BatchingWorker(FragileTranslator(), ServeLimits(max_wait_ms=300))
    with worker.condition:  # all three are merged into one call
        futures = [worker.submit(lines, 1, 1) for lines in (["a", "b"], ["bad"], ["c"])]
    assert futures[0].result(timeout=10) == [["A"], ["B"]] and futures[2].result(timeout=10) == [["C"]]
    with pytest.raises(RuntimeError, match="the model broke"):
        futures[1].result(timeout=10)
    assert calls == [4, 2, 1, 1]  # the merged call, then each request apart
    worker.stop()


class BlockingTranslator:
    """Holds the model's thread on its first call until released; records every call's lines."""

    config = type("C", (), {"beam": 1, "max_tokens": 100})()

    def __init__(self):
        self.started, self.release, self.calls = threading.Event(), threading.Event(), []

    def translate_nbest(self, lines, beam=None, nbest=1):
        self.calls.append(list(lines))
        self.started.set()
        self.release.wait(30)
        return [[line.upper()] for line in lines]


def test_a_cancelled_request_is_dropped_and_the_worker_lives_on():
    """A client that goes away cancels its job's future: the worker drops it unrun and keeps serving
    (it once died on set_result of a cancelled future, and every later request hung)."""
    translator = BlockingTranslator()
    worker = BatchingWorker(translator, ServeLimits(max_wait_ms=0))
    first = worker.submit(["a"], 1, 1)
    assert translator.started.wait(10)
    gone = worker.submit(["gone"], 1, 1)
    assert gone.cancel()
    translator.release.set()
    assert first.result(timeout=10) == [["A"]]
    assert worker.submit(["c"], 1, 1).result(timeout=10) == [["C"]] and worker.alive()
    assert translator.calls == [["a"], ["c"]]
    worker.stop()


def test_a_request_whose_client_left_is_never_decoded():
    translator = BlockingTranslator()
    worker = BatchingWorker(translator, ServeLimits(max_wait_ms=0))
    worker.submit(["busy"], 1, 1)
    assert translator.started.wait(10)

    async def client_leaves_at_once():
        return {"type": "http.disconnect"}

    future = worker.submit(["left"], 1, 1)
    assert asyncio.run(result_unless_client_left(future, client_leaves_at_once)) == (False, None)
    translator.release.set()
    assert worker.submit(["next"], 1, 1).result(timeout=10) == [["NEXT"]]
    assert translator.calls == [["busy"], ["next"]]
    worker.stop()


def test_health_reports_a_dead_worker(demo):
    app = create_app(lambda: open_engine(demo[0], device="cpu"), ServeLimits())
    with TestClient(app) as c:
        deadline = time.time() + 60
        while c.get("/health").status_code != 200 and time.time() < deadline:
            time.sleep(0.1)
        app.state.mtrain["worker"].stop()  # the thread ends, as one killed by a bug would
        response = c.get("/health")
        assert response.status_code == 503 and "worker thread has stopped" in response.json()["error"]


def test_a_chunked_body_over_the_limit_is_413_and_one_under_it_is_read(client):
    too_big = client.post("/translate", content=iter([b'{"text": ["' + b"a" * 3000, b"a" * 3000 + b'"]}']))
    assert too_big.status_code == 413 and "--max-body-bytes" in too_big.json()["error"]
    fine = client.post(
        "/translate", content=iter([b'{"text": ', b'["A dog."]}']), headers={"content-type": "application/json"}
    )
    assert fine.status_code == 200 and len(fine.json()["translations"]) == 1


def test_a_client_sending_a_byte_at_a_time_is_closed_after_receive_seconds(server):
    """Never idle for --idle-seconds (1), yet its request is not whole after --receive-seconds (3)."""
    url, _ = server
    slow = socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])))
    opened, closed = time.time(), False
    request = b"POST /translate HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n" + b" " * 100
    for byte in request:
        try:
            slow.sendall(bytes([byte]))
        except OSError:
            closed = True
            break
        slow.settimeout(0.4)
        try:
            if slow.recv(1000) == b"":
                closed = True
                break
        except socket.timeout:
            pass
        except ConnectionResetError:
            closed = True
            break
    assert closed and 2.5 < time.time() - opened < 8
    slow.close()


def closed_by_server(connection: socket.socket) -> bool:
    """Whether the server closed this connection (within 10 s) without answering it."""
    connection.settimeout(10)
    try:
        return connection.recv(1000) == b""
    except ConnectionResetError:
        return True


def test_silent_and_half_sent_connections_are_closed_after_idle_seconds(server):
    url, _ = server
    address = ("127.0.0.1", int(url.rsplit(":", 1)[1]))
    silent, half_headers, half_body = (socket.create_connection(address) for _ in range(3))
    half_headers.sendall(b"POST /translate HTTP/1.1\r\nhost: x\r\n")
    half_body.sendall(b"POST /translate HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n" + b'{"text": ')
    opened = time.time()
    assert all(closed_by_server(c) for c in (silent, half_headers, half_body))
    assert 0.5 < time.time() - opened < 6  # --idle-seconds 1
    for connection in (silent, half_headers, half_body):
        connection.close()


def test_a_request_being_answered_is_never_cut_off():
    def cycle(more_body: bool, response_complete: bool) -> SimpleNamespace:
        return SimpleNamespace(more_body=more_body, response_complete=response_complete)

    assert waiting_for_client(None)  # nothing sent yet, or half a request line or headers
    assert waiting_for_client(cycle(more_body=True, response_complete=False))  # half a body
    assert not waiting_for_client(cycle(more_body=False, response_complete=False))  # whole: being translated
    assert waiting_for_client(cycle(more_body=False, response_complete=True))  # answered; keep-alive


def test_sigterm_lets_the_requests_in_flight_finish_then_exits_zero(demo, server):
    ckpt, lines = demo
    url, process = server
    finished = []

    def request(i: int) -> int:
        response = httpx.post(f"{url}/translate", json={"text": lines[8 * i : 8 * i + 8], "beam": 16}, timeout=120)
        finished.append(time.time())
        return response.status_code

    half_sent = socket.create_connection((url.split("//")[1].split(":")[0], int(url.rsplit(":", 1)[1])))
    half_sent.sendall(b"POST /translate HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n" + b'{"text": ')
    with ThreadPoolExecutor(6) as pool:
        statuses = [pool.submit(request, i) for i in range(6)]
        time.sleep(0.3)
        signalled = time.time()
        process.send_signal(signal.SIGTERM)
        assert [s.result(120) for s in statuses] == [200] * 6
    assert max(finished) > signalled  # some of them were still being translated when the signal came
    assert process.wait(60) == 0
    assert time.time() - signalled < 4 + 10  # the client that never finishes its body held it --drain-seconds at most
    half_sent.close()
    assert "mtrain serve stopped" in process.stderr.read()


def test_requests_cut_off_by_the_end_of_the_drain_get_503_and_no_traceback(demo):
    """--drain-seconds over with requests still decoding: uvicorn cancels them; each gets a 503 (or
    its connection closes) and the log shows no CancelledError traceback."""
    ckpt, lines = demo
    with serve_process(ckpt, "--drain-seconds", "1", "--max-wait-ms", "1") as (url, process):

        def request(i: int) -> int:
            body = {"text": lines[(16 * i) % 128 :][:16], "beam": 16}
            try:
                return httpx.post(f"{url}/translate", json=body, timeout=60).status_code
            except httpx.TransportError:
                return 0  # closed without an answer

        with ThreadPoolExecutor(24) as pool:
            statuses = [pool.submit(request, i) for i in range(24)]
            time.sleep(0.5)
            process.send_signal(signal.SIGTERM)
            statuses = [s.result(60) for s in statuses]
        assert process.wait(60) == 0
        log = process.stderr.read()
    assert set(statuses) - {200} and set(statuses) <= {200, 503, 0}, statuses  # the drain did cut some off
    assert "Traceback" not in log and "CancelledError" not in log, log


def test_a_flood_of_one_error_is_logged_once_per_interval(caplog):
    logger = logging.getLogger("test-flood")
    logger.addFilter(OncePerInterval(interval=0.5))
    with caplog.at_level("ERROR", logger="test-flood"):
        for _ in range(1000):
            logger.error("socket.accept() out of system resource")
        time.sleep(0.6)
        logger.error("socket.accept() out of system resource")
        logger.error("another error")
    assert [r.getMessage() for r in caplog.records] == [
        "socket.accept() out of system resource",
        "socket.accept() out of system resource (999 more like it in the last 0.5 s not logged)",
        "another error",
    ]


def test_an_unloadable_model_ends_the_server_with_a_one_line_error(tmp_path):
    result = run_cli("serve", "--checkpoint", str(tmp_path / "missing.pt"), "--port", str(free_port()), timeout=120)
    assert result.returncode == 2
    assert (
        result.stderr.strip().splitlines()[-1]
        == f"error: could not load the model: checkpoint not found: {tmp_path / 'missing.pt'}"
    )


def test_a_port_out_of_range_is_a_one_line_error(tmp_path):
    checkpoint = tmp_path / "model.pt"
    checkpoint.write_bytes(b"")
    result = run_cli("serve", "--checkpoint", str(checkpoint), "--port", "99999")
    assert result.returncode == 2
    assert result.stderr == "error: --port must be a TCP port from 0 to 65535, got 99999\n"
