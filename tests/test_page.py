"""The page `mtrain serve` answers GET / with, and its POST /attention: the API in-process, then the
page in a real headless Chromium (Debian's, driven by Playwright) against a real server process."""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path

import pytest

from mtrain.data.store import PreparedData
from mtrain.deploy.engines import open_engine
from mtrain.deploy.serve.app import create_app
from mtrain.deploy.serve.worker import ServeLimits

from helpers import run_cli, serve_process

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# .ci/run sets it: there, a missing browser fails the test instead of skipping it
BROWSER_REQUIRED = os.environ.get("MTRAIN_REQUIRE_BROWSER") == "1"
INJECTION = '<img src=x onerror="window.pwned=1"> <script>window.pwned=2</script> a dog'


@pytest.fixture(scope="module")
def demo(demo_run):
    lines = PreparedData(demo_run / "data").raw_text("test", "en")
    return demo_run / "checkpoint_avg.pt", lines


@pytest.fixture(scope="module")
def client(demo):
    app = create_app(lambda: open_engine(demo[0], device="cpu"), ServeLimits(max_chars=600))
    with TestClient(app) as c:
        deadline = time.time() + 60
        while c.get("/health").status_code != 200 and time.time() < deadline:
            time.sleep(0.1)
        yield c


def translate_cli(checkpoint: Path, line: str, tmp_path: Path, *options: str) -> str:
    source = tmp_path / "one.en"
    source.write_text(line + "\n")
    return run_cli("translate", "--checkpoint", str(checkpoint), "--input", str(source), *options).stdout.rstrip("\n")


def test_attention_is_the_translation_the_api_gives_with_weights_and_the_cli_alignment(demo, client, tmp_path):
    checkpoint, lines = demo
    info = client.get("/info").json()
    assert info["attention"] is True
    body = client.post("/attention", json={"text": lines[3]}).json()
    assert body["translation"] == client.post("/translate", json={"text": [lines[3]]}).json()["translations"][0]
    model = info["model"]
    weights = body["weights"]
    assert (len(weights), len(weights[0])) == (model["decoder_layers"], model["heads"])
    assert [len(weights[0][0]), len(weights[0][0][0])] == [len(body["target"]), len(body["source"])]
    for row in weights[-1][0]:
        assert sum(row) == pytest.approx(1.0, abs=1e-3)  # each row is a softmax over the source
    assert body["source"][-1] == "</s>" and body["target"][-1] == "</s>"
    assert body["alignment_layer"] == model["decoder_layers"]
    assert body["translation"] + " ||| " + body["alignment"] == translate_cli(
        checkpoint, lines[3], tmp_path, "--alignment"
    )


def test_a_lone_surrogate_is_refused_alone_and_the_server_keeps_serving(client):
    body = '{"text": ["a dog", "\\ud800"]}'  # valid JSON, not encodable as UTF-8
    response = client.post("/translate", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400 and "text.1 is not valid Unicode" in response.json()["error"]
    response = client.post("/attention", content='{"text": "\\udfff"}', headers={"content-type": "application/json"})
    assert response.status_code == 400 and "not valid Unicode" in response.json()["error"]
    assert client.post("/translate", json={"text": ["a dog"]}).status_code == 200


def test_nbest_gives_every_sentence_nbest_hypotheses_an_empty_one_too(client):
    result = client.post("/translate", json={"text": ["", "a dog"], "beam": 2, "nbest": 2}).json()["translations"]
    assert [len(hyps) for hyps in result] == [2, 2] and [h["text"] for h in result[0]] == ["", ""]


def test_translate_gives_scores_and_confidences_with_one_hypothesis_when_asked(client):
    result = client.post("/translate", json={"text": ["a big dog", ""], "scores": True}).json()["translations"]
    (best,), (empty,) = result
    assert set(best) == {"text", "score", "confidence", "words"}
    assert " ".join(w["word"] for w in best["words"]) == best["text"] and 0 < best["confidence"] <= 1
    assert all(0 < w["confidence"] <= 1 for w in best["words"])
    assert empty == {"text": "", "score": 0.0, "confidence": 1.0, "words": []}
    assert "geometric mean" in client.get("/info").json()["confidence_meaning"]


BAD_ATTENTION = [
    ({"text": "   "}, 422, "text is empty"),
    ({"text": ["a"]}, 422, "text: Input should be a valid string"),
    ({"text": "a", "beam": 0}, 422, "beam: Input should be greater than or equal to 1"),
    ({"text": "a", "layer": 1}, 422, "layer: Extra inputs are not permitted"),
    ({"text": "a" * 601}, 413, "at most 600 (--max-chars)"),
    ({"text": "a " * 250}, 413, "at most 200 source subwords; this has 250"),
]


@pytest.mark.parametrize("body,status,message", BAD_ATTENTION, ids=[m for _, _, m in BAD_ATTENTION])
def test_bad_attention_requests_are_one_line_json_errors(client, body, status, message):
    response = client.post("/attention", content=json.dumps(body), headers={"content-type": "application/json"})
    assert response.status_code == status, response.text
    assert message in response.json()["error"] and "\n" not in response.json()["error"]


def test_the_page_and_its_files_come_from_mtrain_with_a_strict_content_security_policy(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "script-src 'self'" in policy and "unsafe" not in policy
    assert not re.search(r"(src|href)=\"(?!/static/)", page.text)  # no CDN, nothing from elsewhere
    for name, kind in (("page.js", "javascript"), ("page.css", "css"), ("favicon.svg", "svg")):
        asset = client.get(f"/static/{name}")
        assert asset.status_code == 200 and kind in asset.headers["content-type"]
    script = client.get("/static/page.js").text  # text goes in as text: no HTML sinks
    assert not re.search(r"\.(inner|outer)HTML\s*=|insertAdjacentHTML|document\.write|eval\(", script)
    assert client.get("/static/../page.py").status_code == 404
    assert client.get("/static/secret.txt").json()["error"] == "no such file: secret.txt"


def test_an_engine_without_attention_says_so_and_the_page_hides_the_heatmap():
    class NoAttention:  # the CTranslate2 engine's shape: translations, no attention
        tokenizer, config, info = None, None, {"engine": "ctranslate2"}

    app = create_app(lambda: NoAttention(), ServeLimits())
    with TestClient(app) as c:
        deadline = time.time() + 10
        while c.app.state.mtrain["worker"] is None and time.time() < deadline:
            time.sleep(0.05)
        response = c.post("/attention", json={"text": "a dog"})
        assert response.status_code == 501
        assert response.json()["error"].startswith("attention maps need mtrain's own PyTorch model")


# ----------------------------------------------------------------------------- the page in Chromium
def launch_chromium(playwright):
    return playwright.chromium.launch(
        executable_path=CHROMIUM,
        args=[
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
        ],
    )


def heatmap_weights(page) -> list[str]:
    return page.eval_on_selector_all("#heatmap td", "cells => cells.map(c => c.dataset.weight)")


def translate_on_page(page, text: str, press_keys: bool = False) -> None:
    page.fill("#source", text)
    page.evaluate("document.getElementById('status').textContent = ''")
    if press_keys:
        page.press("#source", "Control+Enter")
    else:
        page.click("#translate")
    # a locator waits without evaluating strings in the page, which its Content-Security-Policy forbids
    page.locator("#status", has_text=re.compile(r"^(Done\.|.*error.*)$", re.I)).wait_for(timeout=60_000)
    assert page.inner_text("#status") == "Done."


@pytest.fixture(scope="module")
def browser_page(demo):
    if CHROMIUM is None and not BROWSER_REQUIRED:
        pytest.skip("no Chromium here (Debian: apt install chromium); .ci/run installs it")
    assert CHROMIUM is not None, "MTRAIN_REQUIRE_BROWSER=1 but no chromium on PATH"
    from playwright.sync_api import sync_playwright

    with serve_process(demo[0]) as (url, _), sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.goto(url)
        page.wait_for_selector("#translate:enabled", timeout=60_000)
        yield page, errors
        browser.close()


def test_the_page_translates_like_mtrain_translate_and_draws_attention(demo, browser_page, tmp_path):
    checkpoint, lines = demo
    page, errors = browser_page
    assert page.inner_text("#src-lang") == "(en)" and "step" in page.inner_text("#model")
    translate_on_page(page, lines[5])
    assert page.inner_text("#translations li .translation") == translate_cli(checkpoint, lines[5], tmp_path)
    assert "score" in page.inner_text("#translations li .score")
    assert re.fullmatch(r"confidence [01]\.\d\d", page.inner_text("#translations li .confidence"))
    assert page.locator("#translations li .word").count() == len(
        page.inner_text("#translations li .translation").split()
    )
    titles = page.eval_on_selector_all("#translations li .word", "words => words.map(w => w.title)")
    assert all(re.fullmatch(r"word probability [01]\.\d\d", t) for t in titles)
    assert "Confidence: the geometric mean" in page.inner_text("#confidence-meaning")
    expected_alignment = translate_cli(checkpoint, lines[5], tmp_path, "--alignment").split(" ||| ")[1]
    links = page.eval_on_selector_all("#alignment li", "items => items.map(i => i.dataset.link)")
    assert " ".join(links) == expected_alignment

    last_layer = heatmap_weights(page)
    page.select_option("#layer", "0")
    first_layer = heatmap_weights(page)
    page.select_option("#head", "0")
    first_head = heatmap_weights(page)
    assert len(set(map(len, (last_layer, first_layer, first_head)))) == 1  # same grid, other weights
    assert last_layer != first_layer and first_layer != first_head

    page.hover("#heatmap tbody th[data-row='0']")
    assert page.locator("#heatmap thead th.attended").count() >= 1
    assert page.locator("#heatmap tbody tr.current").count() == 1
    assert "attends most to" in page.inner_text("#focus")
    page.focus("#heatmap tbody th[data-row='1']")  # the keyboard reaches the same view
    assert page.locator("#heatmap tbody tr.current th").inner_text() == page.inner_text(
        "#heatmap tbody th[data-row='1']"
    )
    page.screenshot(path=str(tmp_path / "desktop.png"), full_page=True)
    save_screenshot(tmp_path / "desktop.png", "serve-page.png")
    assert errors == []


def test_the_page_glossary_box_makes_the_translation_use_the_terms(browser_page, demo):
    page, errors = browser_page
    line = next(line for line in demo[1] if "dog" in line.split())
    page.click("#glossary-box summary")
    page.fill("#glossary", "dog = Katze\n")
    translate_on_page(page, line)
    assert re.search(r"\bKatze\b", page.inner_text("#translations li .translation"))
    page.fill("#glossary", "dog Katze")
    page.click("#translate")
    page.locator("#status", has_text="Glossary line 1").wait_for(timeout=10_000)
    page.fill("#glossary", "")
    assert errors == []


def test_the_page_markup_toggle_shows_the_tagged_output_rendered_and_as_source(browser_page, demo, tmp_path):
    page, errors = browser_page
    tagged = (
        'The <b>dog</b> sees <a href="javascript:window.pwned=3">a cat</a> &amp; <img src=x onerror="window.pwned=4">.'
    )
    expected = translate_cli(demo[0], tagged, tmp_path, "--format", "html")
    page.check("#markup")
    translate_on_page(page, tagged)
    assert page.inner_text("#translations li .markup-source") == expected
    rendered = page.locator("#translations li .rendered")
    assert rendered.locator("b").count() == 1 and rendered.locator("b").inner_text() in expected
    assert rendered.locator("a").count() == 0 and rendered.locator(".link").count() == 1  # no href, nowhere to go
    assert page.locator("main img").count() == 0 and "<img" in rendered.inner_text()  # other tags stay text
    page.click("#translations li .rendered .link")
    assert page.evaluate("window.pwned") is None and page.locator("#attention").is_hidden()
    page.uncheck("#markup")
    assert errors == []


def test_the_page_shows_injected_markup_as_text_and_runs_nothing(browser_page):
    page, errors = browser_page
    translate_on_page(page, INJECTION, press_keys=True)  # Ctrl+Enter translates too
    assert page.evaluate("window.pwned") is None
    assert page.locator("main img").count() == 0 and page.locator("main script").count() == 0
    # the demo vocabulary has no '<': its pieces come back as "<unk>", which shows as text, not as a tag
    pieces = page.eval_on_selector_all("#heatmap thead th", "cells => cells.map(c => c.textContent)")
    assert "<unk>" in pieces and page.locator("#heatmap unk").count() == 0
    assert errors == []


def test_the_page_fits_a_phone_screen(browser_page, demo, tmp_path):
    page, _ = browser_page
    page.set_viewport_size({"width": 390, "height": 844})
    translate_on_page(page, demo[1][7])
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    page.screenshot(path=str(tmp_path / "phone.png"), full_page=True)
    save_screenshot(tmp_path / "phone.png", "serve-page-phone.png")


def save_screenshot(path: Path, name: str) -> None:
    """MTRAIN_SCREENSHOTS=docs/images keeps the screenshots the docs show."""
    if folder := os.environ.get("MTRAIN_SCREENSHOTS"):
        shutil.copy(path, Path(folder) / name)
