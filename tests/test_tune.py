"""mtrain tune: the grid is decoded on validation data, the best setting is the one written."""

from __future__ import annotations

import re

import pytest

from mtrain.evaluation.bootstrap import p_values, resample_indices, resampled_bleu, sentence_statistics
from mtrain.evaluation.scores import corpus_scores
from mtrain.evaluation.tune import edge_notes, holdout_split, parse_beams, parse_lenpens, robust_choice
from mtrain.inference.translator import open_translator
from mtrain.run import checkpoint
from mtrain.training.session import train

from helpers import run_cli, tiny_config


def test_tune_decodes_the_grid_and_writes_the_best_setting(demo_run, tmp_path):
    tuned = tmp_path / "tuned.pt"
    result = run_cli(
        "tune",
        "--checkpoint",
        str(demo_run / "checkpoint_avg.pt"),
        "--beam",
        "1,3",
        "--lenpen",
        "0:2:1",
        "--write",
        "-o",
        str(tuned),
        "--rule",
        "argmax",
    )
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines() if line[:4].strip().isdigit()]
    assert [(int(r[0]), float(r[1])) for r in rows] == [(b, a) for b in (1, 3) for a in (0.0, 1.0, 2.0)]
    # each row is what translating the validation set with that setting scores
    sources = (demo_run / "data" / "valid.en.txt").read_text().splitlines()
    references = (demo_run / "data" / "valid.de.txt").read_text().splitlines()
    for beam, lenpen, bleu in [(int(r[0]), float(r[1]), float(r[2])) for r in rows[4:5]]:  # beam 3, lenpen 1
        hyps = open_translator(demo_run / "checkpoint_avg.pt", beam=beam, lenpen=lenpen).translate(sources)
        assert corpus_scores(hyps, [references])["bleu"] == pytest.approx(bleu, abs=0.006)
    best = max(rows, key=lambda r: float(r[2]))
    decode = checkpoint.load(tuned)["config"]["decode"]
    assert (decode["beam"], decode["lenpen"]) == (int(best[0]), float(best[1]))
    assert f"chosen: beam {decode['beam']}" in result.stdout
    notes = [line for line in result.stdout.splitlines() if line.startswith("note:")]
    assert notes == edge_notes(decode, [1, 3], [0.0, 1.0, 2.0])
    # the original is untouched, and translate uses the written setting without flags
    assert checkpoint.load(demo_run / "checkpoint_avg.pt")["config"]["decode"]["lenpen"] == 0.6
    assert open_translator(tuned).config.lenpen == decode["lenpen"]


def test_grids_parse_and_bad_ones_are_refused():
    assert parse_beams("4,5,6") == [4, 5, 6]
    assert parse_lenpens("0.4:1.4:0.1") == pytest.approx([0.4 + 0.1 * i for i in range(11)])
    assert parse_lenpens("0.6,1") == [0.6, 1.0]


def test_a_best_setting_on_the_border_of_the_grid_is_pointed_out():
    lenpens = [0.4, 1.0, 2.0]
    assert edge_notes({"beam": 4, "lenpen": 1.0}, [4], lenpens) == []
    assert edge_notes({"beam": 4, "lenpen": 2.0}, [4], lenpens) == [
        "note: the chosen lenpen 2 is the largest in the grid; widen --lenpen to look beyond it"
    ]
    assert edge_notes({"beam": 6, "lenpen": 0.4}, [4, 5, 6], lenpens) == [
        "note: the chosen beam 6 is the largest in the grid; widen --beam to look beyond it",
        "note: the chosen lenpen 0.4 is the smallest in the grid; widen --lenpen to look beyond it",
    ]
    # nothing lies below beam 1 or length penalty 0
    assert edge_notes({"beam": 1, "lenpen": 0.0}, [1, 4], [0.0, 1.0]) == []


@pytest.mark.parametrize(
    "options, message",
    [
        (["--lenpen", "1.4:0.4:0.1"], "error: --lenpen '1.4:0.4:0.1': expected START:STOP:STEP"),
        (["--lenpen", "a,b"], "error: --lenpen 'a,b': expected"),
        (["--lenpen", "0:1:0"], "error: --lenpen '0:1:0': expected"),
        (["--beam", "0,4"], "error: --beam '0,4': expected beam sizes from 1 to 1024"),
        (["--beam", "4,5000"], "error: --beam '4,5000': expected beam sizes from 1 to 1024"),
        (["--src", "missing.en", "--ref", "missing.de"], "error: no validation data: missing.en not found"),
        (["--src", "x.en"], "error: give both --src and --ref"),
        (["--output", "x.pt"], "error: --output names where --write puts the tuned checkpoint; add --write"),
        (["--rule", "best"], "error: --rule 'best' is not one of robust, argmax"),
        (["--holdout-fraction", "1.5"], "error: --holdout-fraction must be between 0 and 1 (exclusive)"),
        (["--holdout-fraction", "0.0001"], "error: --holdout-fraction 0.0001 of 300 sentences leaves none"),
    ],
)
def test_bad_tune_options_are_one_line_errors(demo_run, options, message):
    result = run_cli("tune", "--checkpoint", str(demo_run / "checkpoint_avg.pt"), *options)
    assert result.returncode == 2 and result.stderr.startswith(message) and result.stderr.count("\n") == 1


def test_tune_without_prepared_validation_data_says_what_to_give(demo_run, tmp_path):
    copy = tmp_path / "elsewhere.pt"
    copy.write_bytes((demo_run / "checkpoint_avg.pt").read_bytes())
    result = run_cli("tune", "--checkpoint", str(copy))
    assert result.returncode == 2
    assert result.stderr == (
        f"error: no validation data: {tmp_path / 'data' / 'valid.en.txt'} not found; give --src FILE --ref FILE "
        "(the validation set; never tune on the test set)\n"
    )


def test_tune_and_report_find_the_validation_data_of_a_run_with_its_own_data_dir(tmp_path):
    """A run whose config sets data.dir keeps its prepared data there, not in {out_dir}/data."""
    data = {"dir": str(tmp_path / "prepared"), "train": {"demo": 2000}, "valid": {"demo": 30}, "test": {"demo": 30}}
    config = tiny_config(tmp_path / "run", data=data, train={"valid_every": 3})
    train(config)
    result = run_cli("tune", "--checkpoint", str(tmp_path / "run" / "checkpoint_avg.pt"), "--lenpen", "0.6")
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.strip().splitlines()) >= 2  # the header and the one setting
    report = run_cli("report", str(tmp_path / "run"), "-o", str(tmp_path / "r.html"), "--max-sentences", "2")
    assert report.returncode == 0, report.stderr
    page = (tmp_path / "r.html").read_text()
    assert "2 test sentences" in page and "no test or validation set" not in page


def row(lenpen: float, bleu: float, ratio: float, beam: int = 4) -> dict:
    return {"beam": beam, "lenpen": lenpen, "bleu": bleu, "chrf": 60.0, "length_ratio": ratio}


def test_the_tie_rule_prefers_the_length_nearest_the_references_within_the_interval():
    """The grid's edge wins the argmax by a hair with a long output; a setting the bootstrap cannot
    tell from it, with the right length, is chosen; a clearly worse one is not in the tied set."""
    rows = [row(0.4, 39.00, 0.950), row(1.0, 40.80, 1.001), row(1.2, 40.85, 1.004), row(2.0, 40.97, 1.024)]
    p = [0.01, 0.29, 0.34, 1.0]  # paired bootstrap p-values of each one's difference from the best (lenpen 2.0)
    chosen, tied = robust_choice(rows, p)
    assert chosen["lenpen"] == 1.0 and [r["lenpen"] for r in tied] == [1.0, 1.2, 2.0]
    # equal distance to the reference length: the smaller length penalty, then the smaller beam
    chosen, _ = robust_choice([row(1.4, 40.0, 0.99), row(0.8, 40.0, 1.01), row(0.8, 40.1, 1.01, beam=2)], [0.5] * 3)
    assert (chosen["lenpen"], chosen["beam"]) == (0.8, 2)


def test_bootstrap_ties_come_from_per_sentence_statistics():
    references = [f"the {w} dog runs to the {v} house today" for w in ("big", "small", "red", "old") for v in "abcde"]
    same_but_one = list(references)
    same_but_one[3] = "a dog runs"
    worse = ["the dog" for _ in references]
    statistics = [sentence_statistics(h, references) for h in (references, same_but_one, worse)]
    # summed over all sentences the statistics give sacreBLEU's corpus score; over any subset, that subset's
    everything = resample_indices(len(references), samples=1)
    everything[0] = range(len(references))
    assert resampled_bleu(statistics[1], everything)[0] == pytest.approx(
        corpus_scores(same_but_one, [references])["bleu"]
    )
    subset = [0, 0, 3, 7]
    assert resampled_bleu(statistics[1], [subset])[0] == pytest.approx(
        corpus_scores([same_but_one[i] for i in subset], [[references[i] for i in subset]])["bleu"]
    )
    p = p_values(statistics, 0, resample_indices(len(references)))
    assert p[0] == 1.0 and p[1] >= 0.05 > p[2]  # one changed sentence of 20 is a tie; "the dog" is not


def test_tune_and_eval_bleu_share_one_p_value_definition():
    """tune's p-values are sacreBLEU's paired bootstrap ones (what eval-bleu --baseline reports):
    the same resamples give the same p-value."""
    from sacrebleu.metrics import BLEU
    from sacrebleu.significance import PairedTest

    references = [f"the {w} dog runs to the {v} house" for w in ("big", "small", "red", "old", "new") for v in "abcdef"]
    system = [r if i % 3 else r.replace("dog", "cat") for i, r in enumerate(references)]
    baseline = [r if i % 4 else "a dog runs" for i, r in enumerate(references)]
    test = PairedTest([("baseline", baseline), ("system", system)], {"bleu": BLEU()}, [references], test_type="bs",
                      n_samples=1000)  # fmt: skip
    _, results = test()
    theirs = results["BLEU"][1].p_value
    indices = resample_indices(len(references))  # sacreBLEU's resamples: its seed, its draw
    statistics = [sentence_statistics(h, references) for h in (system, baseline)]
    assert p_values(statistics, 0, indices)[1] == pytest.approx(theirs)


def test_the_holdout_split_is_deterministic_and_disjoint():
    tuned, held = holdout_split(10, 0.3)
    assert (tuned, held) == holdout_split(10, 0.3) and len(held) == 3
    assert sorted(tuned + held) == list(range(10))
    assert holdout_split(10, 0.3, seed=2) != (tuned, held)


def test_tune_reports_the_tied_set_and_the_held_out_scores(demo_run):
    result = run_cli(
        "tune",
        "--checkpoint",
        str(demo_run / "checkpoint_avg.pt"),
        "--beam",
        "1",
        "--lenpen",
        "0.6,1.0",
        "--holdout-fraction",
        "0.5",
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].endswith("(150 sentences): 2 settings")
    assert any(line.startswith("tied with the best (BLEU ") for line in lines)
    (held,) = [line for line in lines if line.startswith("held out (150 sentences, not used for the choice)")]
    assert "the checkpoint's own setting beam 4 lenpen 0.6" in held
    assert re.search(r"; [+-]\d+\.\d\d BLEU, p = [01]\.\d{4} \(paired bootstrap\): ", held), held


def test_the_held_out_references_cannot_change_the_choice(demo_run, tmp_path):
    """Garbling every held-out reference leaves the table, the tied set and the choice as they were;
    only the held-out line changes."""
    src, ref = demo_run / "data" / "valid.en.txt", demo_run / "data" / "valid.de.txt"
    references = ref.read_text().splitlines()
    _, held = holdout_split(len(references), 0.5)
    for i in held:
        references[i] = "xyz"
    garbled = tmp_path / "garbled.de"
    garbled.write_text("\n".join(references) + "\n")
    args = ["--checkpoint", str(demo_run / "checkpoint_avg.pt"), "--beam", "1", "--lenpen", "0,0.6,2"]
    args += ["--holdout-fraction", "0.5", "--src", str(src)]
    outputs = [run_cli("tune", *args, "--ref", str(path)) for path in (ref, garbled)]
    assert all(result.returncode == 0 for result in outputs), outputs[1].stderr

    def choice(stdout: str) -> list[str]:  # every line but the held-out one; table rows without their seconds
        lines = [line for line in stdout.splitlines() if not line.startswith("held out")]
        return [line.rsplit(None, 1)[0] if line[:4].strip().isdigit() else line for line in lines]

    kept, changed = (choice(r.stdout) for r in outputs)
    assert kept == changed and any(line.startswith("chosen: ") for line in kept)
    assert outputs[0].stdout != outputs[1].stdout  # the held-out scores did see the garbled references
