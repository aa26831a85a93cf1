"""The documentation: generated references current, every config field explained, a short README,
--help without Python types, and the MkDocs site built strictly (a broken link fails)."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys

import pytest

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


def test_the_site_builds_strictly(tmp_path):
    pytest.importorskip("mkdocs")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]


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
