"""The documentation: generated references current, every config field explained, a short README,
--help without Python types, and the MkDocs site built strictly (a broken link fails)."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from helpers import ROOT

spec = importlib.util.spec_from_file_location("docs_reference", ROOT / "scripts" / "docs_reference.py")
docs_reference = importlib.util.module_from_spec(spec)
spec.loader.exec_module(docs_reference)


def test_every_config_field_has_a_help_text():
    assert docs_reference.missing_help() == []


@pytest.mark.parametrize("page", sorted(docs_reference.PAGES))
def test_the_generated_reference_pages_are_current(page):
    rendered = docs_reference.render()[page]
    assert docs_reference.PAGES[page].read_text() == rendered, "stale: run python scripts/docs_reference.py"


def test_help_texts_show_no_python_types():
    cli = docs_reference.cli_page()
    assert not re.search(r"<(int|float|str|text|path|list\[[^]]*\])>", cli, re.I)
    assert not re.search(r"\{[A-Z_ |.]+\}\.\.\.", cli)  # no `{RUN_DIR | CHECKPOINT...}...` usage lines
    assert "..." not in cli.split("Commands:")[1].split("```")[0]  # `mtrain --help` cuts no description


def test_the_readme_is_short_and_links_into_the_docs():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 150
    for link in re.findall(r"\]\((docs/[^)#]+)", readme):
        assert (ROOT / link).exists(), f"README links to a missing {link}"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The documentation site, built strictly (a broken link or anchor fails the build)."""
    pytest.importorskip("mkdocs")
    out = tmp_path_factory.mktemp("site")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def test_the_site_builds_strictly(site):
    assert (site / "index.html").is_file() and (site / "guides" / "training.html").is_file()


VISUAL_PAGES = ["index.html", "guides/training.html", "reference/configuration.html", "results.html"]


def test_the_site_opened_from_disk_fits_a_laptop_and_a_phone(site, tmp_path):
    """Opened from disk (file://, no server), at 1280 px and at phone width: nothing wider than the
    window (long tables and code scroll inside their own boxes). Screenshots in tmp_path (and, with
    MTRAIN_SCREENSHOTS=DIR, there too)."""
    from test_page import BROWSER_REQUIRED, CHROMIUM, launch_chromium

    if CHROMIUM is None and not BROWSER_REQUIRED:
        pytest.skip("no Chromium here (Debian: apt install chromium); .ci/run installs it")
    from playwright.sync_api import sync_playwright

    wide = []
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        for width, height in ((1280, 900), (390, 844)):
            page = browser.new_page(viewport={"width": width, "height": height})
            for name in VISUAL_PAGES:
                page.goto((site / name).as_uri())
                overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
                if overflow > 0:
                    wide.append(f"{name} at {width} px: {overflow} px too wide")
                shot = tmp_path / f"{name.replace('/', '-').removesuffix('.html')}-{width}.png"
                page.screenshot(path=str(shot))
                if os.environ.get("MTRAIN_SCREENSHOTS"):
                    shutil.copy(shot, Path(os.environ["MTRAIN_SCREENSHOTS"]) / f"site-{shot.name}")
            page.close()
        browser.close()
    assert not wide, wide


def test_the_readme_results_table_follows_the_results_page():
    """One source of truth: a figure changed on the results page shows in the README's table."""
    results = (ROOT / "docs/results.md").read_text()
    readme = docs_reference.readme_page()
    for line in results.splitlines():
        if line.startswith("| EN->DE | "):
            bleu = line.split("|")[2].strip()
            assert f"| EN->DE | {bleu} |" in readme


# What a guide says is how to do a thing and what to expect; whether a goal of the work was met, what
# was asked for, and "(tested)" after a clause belong to the trials page and the changelog.
NOTEBOOK = re.compile(
    r"\b(targets?|goals?|lines?) (is|are|was|were) (not )?(met|reached)\b|\bneither target\b|\bthe targets? ask"
    r"|\b(lines?|figures?) asked for\b|\(tested\)|\bacceptance line|\bthe issue (asks|says)",
    re.IGNORECASE,
)


def test_no_page_speaks_of_targets_met_or_lines_asked_for():
    pages = [p for p in (ROOT / "docs").rglob("*.md") if p.name not in ("trials.md", "changelog.md")]
    found = [
        f"{p.relative_to(ROOT)}:{n}: {line.strip()}"
        for p in pages
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if NOTEBOOK.search(line)
    ]
    assert not found, found


def documented_commands() -> list[tuple[str, list[str]]]:
    """Every `mtrain ...` command line in a code block of the README and the docs (continuation
    lines joined, comments and a leading `$ ` dropped), as (where, words after `mtrain`)."""
    import shlex

    found = []
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        if page.parent.name == "reference":  # generated from the app itself
            continue
        block, pending, start = False, "", 0
        for number, line in enumerate(page.read_text().splitlines(), 1):
            if line.lstrip().startswith("```"):
                block = not block
                continue
            text = pending + line.strip().removeprefix("$ ")
            if not block or not text.startswith("mtrain "):
                pending = ""
                continue
            start = start if pending else number
            if text.endswith("\\"):
                pending = text[:-1] + " "
                continue
            pending = ""
            words = shlex.split(text.split(" #")[0], comments=False)
            found.append((f"{page.relative_to(ROOT)}:{start}", words[1:]))
    return found


def test_every_documented_command_and_option_exists():
    """A command or an option the docs show that the command line no longer has fails here."""
    import typer

    from mtrain.cli import app

    group, missing = typer.main.get_command(app), []
    assert len(documented_commands()) > 30
    for where, words in documented_commands():
        command, rest = group, list(words)
        while rest and hasattr(command, "commands") and rest[0] in command.commands:
            command = command.commands[rest.pop(0)]
        if hasattr(command, "commands"):
            missing.append(f"{where}: no command {' '.join(words[:2])}")
            continue
        options = {name for param in command.params for name in (*param.opts, *param.secondary_opts)}
        for word in rest:
            option = word.split("=")[0].strip("[]")
            if option.startswith("-") and option not in options:
                missing.append(f"{where}: mtrain {command.name} has no {option}")
    assert not missing, missing


# The demo-sized examples of the README and the guides (every documented command on runs/demo or a
# configs/demo*.yaml, but the long-running `serve`), run in the order the pages show them on a copy
# of the suite's small demo model standing in for runs/demo, with fewer steps and pairs.
QUICK = ["--set", "train.max_steps=6", "--set", "data.train.demo=600", "--set", "train.valid_every=0"]
MUST_RUN = {  # the guides' own demo-sized paths: a page that drops one fails here
    "docs/guides/fine-tuning.md": "train --config configs/demo-finetune.yaml",
    "docs/guides/distillation.md": "distill --config configs/demo-student.yaml --teacher runs/demo/checkpoint_avg.pt",
}


def demo_examples() -> list[tuple[str, list[str]]]:
    return [
        (where, words)
        for where, words in documented_commands()
        if words[0] != "serve" and any(w.startswith(("runs/demo", "configs/demo")) for w in words)
    ]


def test_the_demo_examples_of_the_readme_and_the_guides_run(demo_run, tmp_path):
    from helpers import run_cli

    shown = {(where.split(":")[0], " ".join(words)) for where, words in demo_examples()}
    assert set(MUST_RUN.items()) <= shown
    shutil.copytree(demo_run, tmp_path / "runs" / "demo", ignore=shutil.ignore_patterns(".mtrain.lock"))
    for where, words in demo_examples():
        words = [w.replace("runs/", f"{tmp_path}/runs/").replace("models/", f"{tmp_path}/models/") for w in words]
        if words[0] in ("train", "distill"):
            out_dir = yaml.safe_load((ROOT / next(w for w in words if w.endswith(".yaml"))).read_text())["out_dir"]
            out_dir = "runs/demo-example" if out_dir == "runs/demo" else out_dir  # runs/demo: the model stood in
            words += [*QUICK, "--set", f"out_dir={tmp_path}/{out_dir}"]
            if "finetune" in out_dir:
                words += ["--set", f"train.init_from={tmp_path}/runs/demo/checkpoint_avg.pt"]
        result = run_cli(*words)
        assert result.returncode == 0, (where, " ".join(words), result.stderr)
        if words[0] == "eval-bleu":
            assert "BLEU = " in result.stdout, where
