"""`mtrain distill`: the distilled corpus is the teacher's translation of every training source
(one model or an ensemble), an interrupted distillation resumes to the identical corpus, the
student trains on it and exports, and bad teachers are one-line errors."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from mtrain.config_io import save_config
from mtrain.deploy.engines import open_engine
from mtrain.errors import MtrainError
from mtrain.run import checkpoint
from mtrain.training import distillation as distill

from helpers import ROOT, run_cli, tiny_config

STUDENT_PAIRS = 240


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch):
    monkeypatch.setattr(distill, "CHUNK_LINES", 90)  # 240 sources: three chunks


def student(tmp_path: Path, **sections):
    return tiny_config(tmp_path / "student", data={"train": {"demo": STUDENT_PAIRS}}, **sections)


def translated_by_cli(teachers: list[Path], sources: list[str], tmp_path: Path) -> list[str]:
    source_file = tmp_path / "sources.en"
    source_file.write_text("".join(line + "\n" for line in sources), encoding="utf-8")
    options = [arg for path in teachers for arg in ("--checkpoint", str(path))]
    result = run_cli("translate", *options, "--input", str(source_file))
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


@pytest.mark.parametrize("members", [["checkpoint_avg.pt"], ["checkpoint_avg.pt", "checkpoint_last.pt"]])
def test_the_distilled_target_of_every_line_is_what_translate_gives(demo_run, tmp_path, members):
    teachers = [demo_run / name for name in members]
    config = student(tmp_path)
    sources = distill.training_sources(config)
    assert len(sources) == STUDENT_PAIRS
    engine = open_engine(teachers, device="cpu")
    prefix = distill.distill_corpus(engine, sources, tmp_path / "distilled", {"teachers": members}, "en", "de")
    assert (tmp_path / "distilled" / "train.en").read_text(encoding="utf-8").splitlines() == sources
    distilled = (tmp_path / "distilled" / "train.de").read_text(encoding="utf-8").splitlines()
    assert distilled == translated_by_cli(teachers, sources, tmp_path)
    assert prefix == tmp_path / "distilled" / "train" and not (tmp_path / "distilled" / "chunks").exists()


class Killed(Exception):
    pass


def test_an_interrupted_distillation_resumes_to_the_identical_corpus(demo_run, tmp_path):
    engine = open_engine(demo_run / "checkpoint_avg.pt", device="cpu")
    sources = distill.training_sources(student(tmp_path))
    whole = distill.distill_corpus(engine, sources, tmp_path / "whole", {"t": 1}, "en", "de")

    calls = []

    class DiesOnTheThirdChunk:
        config, info = engine.config, engine.info

        def translate(self, lines):
            calls.append(len(lines))
            if len(calls) == 3:
                raise Killed
            return engine.translate(lines)

    folder = tmp_path / "resumed"
    with pytest.raises(Killed):
        distill.distill_corpus(DiesOnTheThirdChunk(), sources, folder, {"t": 1}, "en", "de")
    assert sorted(p.name for p in (folder / "chunks").iterdir()) == ["000000.de", "000001.de"]  # whole chunks only
    assert not (folder / "train.de").exists()
    calls.clear()
    resumed = distill.distill_corpus(DiesOnTheThirdChunk(), sources, folder, {"t": 1}, "en", "de")
    assert calls == [60]  # only the unfinished chunk was translated
    for lang in ("en", "de"):
        assert Path(f"{resumed}.{lang}").read_bytes() == Path(f"{whole}.{lang}").read_bytes()
    with pytest.raises(Exception, match="holds a distillation of other sources, or by other teachers, engine"):
        distill.distill_corpus(engine, sources, folder, {"t": 2}, "en", "de")


def test_other_sources_of_the_same_count_are_distilled_again_not_reused(demo_run, tmp_path):
    """With the default engine (CTranslate2 int8, as `mtrain distill` chooses it), distill.json
    records what made the corpus; sources replaced by other sentences of the same count are
    refused, not reused."""
    sources = distill.training_sources(student(tmp_path))
    corpus = tmp_path / "corpus"
    for lang, lines in (("en", sources), ("de", sources)):
        Path(f"{corpus}.{lang}").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    config = tiny_config(tmp_path / "student", data={"train": {"path": str(corpus)}})
    teacher = demo_run / "checkpoint_avg.pt"

    def run():
        return distill.distill_command(
            config, [teacher], lambda _: open_engine(teacher, engine="ctranslate2"), lambda c: {}, None
        )

    run()
    record = json.loads((tmp_path / "student" / "distilled" / "distill.json").read_text())
    assert record["engine"]["name"] == "ctranslate2" and record["engine"]["quantization"] == "int8"
    assert record["sources"]["lines"] == STUDENT_PAIRS and len(record["sources"]["sha256"]) == 64
    run()  # the same sources: found complete
    shuffled = sources[1:] + sources[:1]  # other sentences in each line, the same count
    Path(f"{corpus}.en").write_text("".join(line + "\n" for line in shuffled), encoding="utf-8")
    with pytest.raises(MtrainError, match="holds a distillation of other sources"):
        run()


def test_the_student_trains_on_the_distilled_corpus_and_exports(demo_run, tmp_path):
    config_file = tmp_path / "student.yaml"
    save_config(student(tmp_path), config_file)
    teacher = str(demo_run / "checkpoint_avg.pt")
    result = run_cli("distill", "--config", str(config_file), "--teacher", teacher, "--engine", "torch")
    assert result.returncode == 0, result.stderr
    run = tmp_path / "student"
    assert len((run / "distilled" / "train.de").read_text(encoding="utf-8").splitlines()) == STUDENT_PAIRS
    trained = checkpoint.load(run / "checkpoint_avg.pt")["config"]["data"]["train"]
    assert [c["path"] for c in trained] == [str(run / "distilled" / "train")]
    assert (run / "ct2-int8" / "model.bin").is_file() and f"exported to {run / 'ct2-int8'}" in result.stdout
    again = run_cli("distill", "--config", str(config_file), "--teacher", teacher, "--engine", "torch")
    assert again.returncode == 0 and "distilled corpus found complete" in again.stderr
    assert "already finished at step 6" in again.stderr


def test_mixing_keeps_the_original_corpora_at_their_weight(tmp_path):
    config = student(tmp_path)
    mixed = distill.student_config(config, tmp_path / "d" / "train", 0.5)
    assert [(c.path, c.demo, c.weight) for c in mixed.data.train] == [
        (str(tmp_path / "d" / "train"), 0, 1.0),
        ("", STUDENT_PAIRS, 0.5),
    ]
    assert [c.path for c in distill.student_config(config, tmp_path / "d" / "train", 0).data.train] == [
        str(tmp_path / "d" / "train")
    ]


def test_bad_teachers_are_one_line_errors(demo_run, tmp_path):
    config_file = tmp_path / "student.yaml"
    save_config(student(tmp_path), config_file)
    state = checkpoint.load(demo_run / "checkpoint_avg.pt")
    state["config"]["data"]["src_lang"], state["config"]["data"]["tgt_lang"] = "de", "en"
    checkpoint.save(state, tmp_path / "reverse.pt")
    other_vocabulary = ROOT / "tests" / "fixtures" / "run-0.1.0" / "data" / "spm.model"
    save_config(
        dataclasses.replace(
            student(tmp_path), tokenizer=dataclasses.replace(student(tmp_path).tokenizer, model=str(other_vocabulary))
        ),
        tmp_path / "own-vocabulary.yaml",
    )
    cases = [
        (config_file, tmp_path / "missing.pt", f"checkpoint not found: {tmp_path / 'missing.pt'}"),
        (config_file, tmp_path / "reverse.pt", "translates de->en, the student config en->de"),
        (tmp_path / "own-vocabulary.yaml", demo_run / "checkpoint_avg.pt", "is not the teacher's vocabulary"),
    ]
    for config, teacher, message in cases:
        result = run_cli("distill", "--config", str(config), "--teacher", str(teacher))
        assert result.returncode == 2 and message in result.stderr and result.stderr.count("\n") == 1, result.stderr
    for weight in ("-1", "nan", "inf"):
        result = run_cli(
            "distill", "--config", str(config_file), "--teacher", str(demo_run / "checkpoint_avg.pt"),
            "--original-weight", weight,
        )  # fmt: skip
        assert result.returncode == 2 and "--original-weight must be a number >= 0" in result.stderr
