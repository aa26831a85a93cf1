"""The data pipeline: sources, cleaning, sentencepiece, binarization, batching, bad input."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
import torch

from mtrain.data.batching import Prefetcher, TrainBatches, eval_batches
from mtrain.data.demo import generate
from mtrain.data.prepare import prepare
from mtrain.errors import MtrainError
from mtrain.special import BOS, EOS, PAD

from helpers import data_files, run_cli, tiny_config, two_corpora

EN, DE = generate(1500, seed=5)


def write_text(prefix, en=EN, de=DE, gz=False):
    for lang, lines in (("en", en), ("de", de)):
        data = "".join(line + "\n" for line in lines).encode()
        if gz:
            (prefix.parent / f"{prefix.name}.{lang}.gz").write_bytes(gzip.compress(data))
        else:
            (prefix.parent / f"{prefix.name}.{lang}").write_bytes(data)


def text_config(tmp_path, **data):
    write_text(tmp_path / "train")
    write_text(tmp_path / "valid", EN[:50], DE[:50])
    corpus = {"train": {"path": str(tmp_path / "train")}, "valid": {"path": str(tmp_path / "valid")}, "test": {}}
    return tiny_config(tmp_path / "run", data={**corpus, **data})


def test_prepare_text_files_and_skip_when_unchanged(tmp_path, caplog):
    config = text_config(tmp_path)
    data = prepare(config)
    manifest = data.manifest
    assert manifest["splits"]["train"]["pairs"] == 1500 and manifest["splits"]["valid"]["pairs"] == 50
    assert manifest["special_ids"] == {"pad": 0, "unk": 1, "bos": 2, "eos": 3}
    train = data.split("train")
    tokenizer = data.tokenizer()
    assert tokenizer.src.decode(train.src[7].tolist()) == EN[7]
    assert tokenizer.decode_tgt(train.tgt[7].tolist()) == DE[7]
    assert train.src.data.dtype == np.uint16
    assert data.raw_text("valid", "de") == DE[:50]
    before = {p.name: p.stat().st_mtime_ns for p in config.data_dir.iterdir()}
    caplog.clear()
    with caplog.at_level("INFO", logger="mtrain"):
        prepare(config)
    assert "up to date" in caplog.text
    assert {p.name: p.stat().st_mtime_ns for p in config.data_dir.iterdir()} == before
    # a changed input rebuilds
    write_text(tmp_path / "train", EN[:1000], DE[:1000])
    assert prepare(config).manifest["splits"]["train"]["pairs"] == 1000


def test_reverse_direction_and_gzip(tmp_path):
    write_text(tmp_path / "train", gz=True)
    config = tiny_config(
        tmp_path / "run",
        data={"src_lang": "de", "tgt_lang": "en", "train": {"path": str(tmp_path / "train")}, "valid": {}, "test": {}},
    )
    data = prepare(config)
    assert data.tokenizer().src.decode(data.split("train").src[3].tolist()) == DE[3]


def test_cleaning_counts_each_reason(tmp_path):
    en = ["a b c", "", "x " * 40, "one two three four five six seven eight", "a b c", "  spaced   out  "]
    de = ["d e f", "nonempty", "y", "eins", "d e f", "ganz   weit"]
    write_text(tmp_path / "train", en * 20, de * 20)
    config = tiny_config(
        tmp_path / "run",
        data={
            "train": {"path": str(tmp_path / "train")},
            "valid": {},
            "test": {},
            "max_len": 30,
            "max_len_ratio": 3.0,
            "dedup": True,
        },
        tokenizer={"vocab_size": 40},
    )
    counts = prepare(config).manifest["clean"]
    assert counts == {
        "input": 120,
        "empty": 20,
        "too_short": 0,
        "too_long": 20,
        "ratio": 20,
        "duplicate": 58,
        "kept": 2,
    }


def test_datasets_parquet_and_json_give_identical_data(tmp_path):
    datasets = pytest.importorskip("datasets")
    reference = prepare(text_config(tmp_path))
    rows = [{"translation": {"de": d, "en": e}} for e, d in zip(EN, DE)]
    valid_rows = rows[:50]
    datasets.Dataset.from_list(rows).to_parquet(str(tmp_path / "train.parquet"))
    datasets.Dataset.from_list(valid_rows).to_parquet(str(tmp_path / "valid.parquet"))
    with open(tmp_path / "train.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    with open(tmp_path / "valid.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in valid_rows)
    for loader, ext in (("parquet", "parquet"), ("json", "jsonl")):
        config = tiny_config(
            tmp_path / f"run-{loader}",
            data={
                "train": {"dataset": loader, "data_files": [str(tmp_path / f"train.{ext}")]},
                "valid": {"dataset": loader, "data_files": [str(tmp_path / f"valid.{ext}")]},
                "test": {},
            },
        )
        assert data_files(prepare(config).dir) == data_files(reference.dir), loader


def test_dataset_unknown_split_and_language(tmp_path):
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_list([{"translation": {"de": d, "en": e}} for e, d in zip(EN, DE)]).to_parquet(
        str(tmp_path / "t.parquet")
    )
    spec = {"dataset": "parquet", "data_files": [str(tmp_path / "t.parquet")]}
    with pytest.raises(MtrainError, match="has no split 'validation'; it has: train"):
        prepare(tiny_config(tmp_path / "a", data={"train": {**spec, "split": "validation"}, "valid": {}, "test": {}}))
    with pytest.raises(MtrainError, match="no language 'fr' .* it has: de, en"):
        prepare(tiny_config(tmp_path / "b", data={"tgt_lang": "fr", "train": spec, "valid": {}, "test": {}}))
    assert not (tmp_path / "a").exists() or not any((tmp_path / "a").iterdir())


def assert_nothing_left(run_dir):
    leftovers = [p.name for p in run_dir.iterdir()] if run_dir.exists() else []
    assert leftovers == [], leftovers


def test_line_count_mismatch(tmp_path):
    write_text(tmp_path / "train", EN, DE[:-3])
    config = tiny_config(tmp_path / "run", data={"train": {"path": str(tmp_path / "train")}, "valid": {}, "test": {}})
    with pytest.raises(MtrainError, match=r"train\.en has 1500 lines but .*train\.de has 1497"):
        prepare(config)
    assert_nothing_left(tmp_path / "run")


def test_invalid_utf8_names_file_and_line(tmp_path):
    write_text(tmp_path / "train")
    raw = (tmp_path / "train.de").read_bytes().split(b"\n")
    raw[41] = b"Gr\xfc\xdfe"
    (tmp_path / "train.de").write_bytes(b"\n".join(raw))
    config = tiny_config(tmp_path / "run", data={"train": {"path": str(tmp_path / "train")}, "valid": {}, "test": {}})
    with pytest.raises(MtrainError, match=r"train\.de: line 42 is not valid UTF-8"):
        prepare(config)
    assert_nothing_left(tmp_path / "run")


def test_missing_file_and_empty_corpus(tmp_path):
    config = tiny_config(tmp_path / "run", data={"train": {"path": str(tmp_path / "nothing")}, "valid": {}, "test": {}})
    with pytest.raises(MtrainError, match="data file not found: .*nothing.en"):
        prepare(config)
    write_text(tmp_path / "empty", ["", "  "], ["x", ""])
    config = tiny_config(tmp_path / "run", data={"train": {"path": str(tmp_path / "empty")}, "valid": {}, "test": {}})
    with pytest.raises(MtrainError, match="empty after cleaning"):
        prepare(config)
    assert_nothing_left(tmp_path / "run")


def test_interrupted_prepare_leaves_old_data_trusted_and_no_temp(tmp_path, monkeypatch):
    config = text_config(tmp_path)
    prepare(config)
    before = data_files(config.data_dir)
    write_text(tmp_path / "train", EN[:900], DE[:900])
    import mtrain.data.prepare as prep

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(prep, "_swap_in", boom)
    with pytest.raises(KeyboardInterrupt):
        prepare(config)
    assert data_files(config.data_dir) == before  # the old, complete data is untouched
    assert sorted(p.name for p in config.data_dir.parent.iterdir()) == ["data"]  # no temp dir left
    monkeypatch.undo()
    assert prepare(config).manifest["splits"]["train"]["pairs"] == 900


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return prepare(tiny_config(tmp_path_factory.mktemp("batching")))


def test_batches_respect_budget_and_cover_the_epoch(prepared):
    split = prepared.split("train")
    schedule = TrainBatches(split, max_tokens=500, seed=3, max_len=128)
    batches = schedule.batches(1)
    assert sorted(np.concatenate(batches).tolist()) == list(range(len(split)))
    for ids in batches:
        width = max(max(split.src.lengths[ids]), max(split.tgt.lengths[ids])) + 1
        assert width * len(ids) <= 500
    b = schedule.step(1, 0)[0]
    assert (b.src[:, -1] != PAD).any() and (b.tgt_in[:, 0] == BOS).all()
    row = int(np.argmax(b.ids == b.ids[0]))
    n = int(split.tgt.lengths[b.ids[row]])
    assert b.tgt_out[row, n] == EOS and b.tgt_in[row, 1 : n + 1].tolist() == b.tgt_out[row, :n].tolist()


def test_batches_are_deterministic_per_epoch_and_differ_across_epochs(prepared):
    split = prepared.split("train")
    a, b = TrainBatches(split, 500, seed=3, max_len=128), TrainBatches(split, 500, seed=3, max_len=128)
    assert all(np.array_equal(x, y) for x, y in zip(a.batches(2), b.batches(2)))
    assert not all(np.array_equal(x, y) for x, y in zip(a.batches(1), a.batches(2)))
    # resuming at (epoch, step) gives the same step as getting there from the start
    c = TrainBatches(split, 500, seed=3, max_len=128)
    assert np.array_equal(a.step(2, 5)[0].ids, c.step(2, 5)[0].ids)


def test_ranks_get_distinct_batches_whose_union_is_the_single_process_step(prepared):
    split = prepared.split("train")
    single = TrainBatches(split, 500, seed=3, max_len=128, update_freq=2)
    rank0 = TrainBatches(split, 500, seed=3, max_len=128, world_size=2, rank=0)
    rank1 = TrainBatches(split, 500, seed=3, max_len=128, world_size=2, rank=1)
    assert single.steps_in_epoch(1) == rank0.steps_in_epoch(1) == rank1.steps_in_epoch(1)
    for step in range(3):
        ids0, ids1 = rank0.step(1, step)[0].ids, rank1.step(1, step)[0].ids
        assert not set(ids0) & set(ids1)
        assert [b.ids.tolist() for b in single.step(1, step)] == [ids0.tolist(), ids1.tolist()]


def test_prefetcher_answers_every_request_with_the_schedules_step(prepared):
    """In order, out of order (a resume) and across an epoch's end: what the schedule says."""
    schedule = TrainBatches(prepared.split("train"), 500, seed=3, max_len=128)
    loader = Prefetcher(TrainBatches(prepared.split("train"), 500, seed=3, max_len=128), pin=False)
    last = schedule.steps_in_epoch(1) - 1
    try:
        for epoch, step in [(1, 0), (1, 1), (1, 2), (1, 7), (1, 8), (1, last), (2, 0), (2, 1), (1, 3)]:
            got, want = loader.step(epoch, step), schedule.step(epoch, step)
            assert [b.ids.tolist() for b in got] == [b.ids.tolist() for b in want]
            assert all(torch.equal(g.src, w.src) and torch.equal(g.tgt_out, w.tgt_out) for g, w in zip(got, want))
    finally:
        loader.close()


def test_eval_batches_keep_every_sentence(prepared):
    split = prepared.split("valid")
    ids = np.concatenate([b.ids for b in eval_batches(split, 300, 128)])
    assert sorted(ids.tolist()) == list(range(len(split)))


def test_demo_held_out_sets_never_contain_training_sentences(tmp_path):
    data = prepare(tiny_config(tmp_path))
    train = set(
        data.tokenizer().src.decode(data.split("train").src[i].tolist()) for i in range(len(data.split("train")))
    )
    assert not train & set(data.raw_text("test", "en"))


# ----------------------------------------------------------------------------- several corpora


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """Two training corpora: 1200 demo pairs (weight 1) and 300 other pairs tagged <X> (weight 3)."""
    tmp = tmp_path_factory.mktemp("mixed")
    return prepare(tiny_config(tmp / "run", data={"train": two_corpora(tmp), "valid": {"demo": 50}}))


def test_an_epoch_draws_each_corpus_by_its_weight(mixed):
    split = mixed.split("train")
    sizes = np.bincount(split.corpus)
    assert sizes.tolist() == [c["pairs"] for c in mixed.corpora] and len(sizes) == 2
    schedule = TrainBatches(split, 2000, seed=3, max_len=128, weights=[1.0, 3.0])
    for epoch in (1, 2):
        pairs = np.concatenate(schedule.batches(epoch))
        drawn = np.bincount(split.corpus[pairs], minlength=2)
        assert drawn.sum() == sizes.sum()  # an epoch holds as many pairs as the corpora together
        assert drawn[1] / drawn.sum() == pytest.approx(0.75, abs=1 / sizes.sum())
        times = np.bincount(pairs, minlength=len(split))
        # the small corpus is upsampled: every pair 3 or 4 times (3/4 of 1500 = 1125 = 3.75 x 300)
        assert set(times[split.corpus == 1].tolist()) == {3, 4}
        # the big one is subsampled without repeats, a different subset each epoch
        assert set(times[split.corpus == 0].tolist()) == {0, 1}
    first, second = (set(np.concatenate(schedule.batches(e)).tolist()) for e in (1, 2))
    assert first != second
    # one corpus: the epoch is every pair once, whatever its weight
    single = TrainBatches(split, 2000, seed=3, max_len=128, weights=[5.0])
    assert sorted(np.concatenate(single.batches(1)).tolist()) == list(range(len(split)))


def test_only_tagged_corpora_get_the_tag_before_their_sources(mixed):
    split, tokenizer = mixed.split("train"), mixed.tokenizer()
    tag_id = mixed.corpora[1]["tag_id"]
    assert tokenizer.src.id_to_piece(tag_id) == "<X>" and mixed.corpora[0]["tag_id"] is None
    starts = np.array([split.src[i][0] for i in range(len(split))])
    assert (starts[split.corpus == 1] == tag_id).all()
    assert not (np.concatenate([split.src[i] for i in np.flatnonzero(split.corpus == 0)]) == tag_id).any()
    assert not (split.tgt.data == tag_id).any()
    valid = mixed.split("valid")
    assert not (valid.src.data == tag_id).any()
    assert tag_id in tokenizer.encode_src(["<X> a man"])[0]  # typed into a translation, it is one piece too


def test_streaming_prepare_writes_what_the_whole_corpus_in_memory_writes(tmp_path, monkeypatch):
    """Chunks of 7 pairs (and a sentencepiece sample drawn from the stream) give byte-identical files."""
    import mtrain.data.clean as clean
    import mtrain.data.prepare as prep

    def build(name, chunk):
        monkeypatch.setattr(prep, "CHUNK_PAIRS", chunk)
        monkeypatch.setattr(clean, "CHUNK_PAIRS", chunk)
        data = {"train": two_corpora(tmp_path), "valid": {"demo": 50}, "dedup": True}
        config = tiny_config(tmp_path / name, data=data, tokenizer={"vocab_size": 200, "input_sentence_size": 700})
        return prepare(config).dir

    whole, streamed = build("whole", 10**9), build("streamed", 7)
    assert data_files(whole) == data_files(streamed)
    manifest = lambda d: json.loads((d / "manifest.json").read_text())
    assert manifest(whole) == manifest(streamed)
    assert manifest(whole)["corpora"][0]["clean"]["input"] == 1200


def test_the_sentencepiece_sample_is_uniform_and_drawn_from_the_seed():
    from mtrain.data.spm_training import _sample_mask

    chosen = _sample_mask(10_000, 100, seed=4)
    assert chosen.sum() == 100 and np.flatnonzero(chosen).mean() == pytest.approx(5000, rel=0.15)
    assert (chosen == _sample_mask(10_000, 100, seed=4)).all() and (chosen != _sample_mask(10_000, 100, seed=5)).any()
    assert _sample_mask(100, 100, seed=4) is None  # no more pairs than the sample size: all of them


def test_two_processes_prepare_the_same_vocabulary_and_ids(tmp_path):
    """The sample is mtrain's, not sentencepiece's (whose sampler differs between processes)."""
    data = {"train": {"demo": 1500}, "valid": {"demo": 20}, "test": {}}
    config = {"out_dir": "x", "data": data, "tokenizer": {"vocab_size": 200, "input_sentence_size": 400}}
    for name in ("a", "b"):
        path = tmp_path / f"{name}.yaml"
        path.write_text(json.dumps({**config, "out_dir": str(tmp_path / name)}))
        result = run_cli("prepare", "-c", str(path))
        assert result.returncode == 0, result.stderr
    assert "on 200 of 1500 pairs" in result.stderr  # joint: 200 pairs give 400 sentences
    assert data_files(tmp_path / "a" / "data") == data_files(tmp_path / "b" / "data")


def test_subword_sampling_is_a_function_of_seed_and_epoch(tmp_path):
    from mtrain.data.subword import SubwordSampler

    tmp = tmp_path
    config = tiny_config(
        tmp / "run",
        data={"train": two_corpora(tmp), "valid": {"demo": 50}},
        tokenizer={"vocab_size": 200, "type": "unigram"},
    )
    data = prepare(config)
    split, tokenizer = data.split("train"), data.tokenizer()
    tags = [c["tag_id"] for c in data.corpora]
    sampler = lambda: SubwordSampler(split, tokenizer.src, tokenizer.tgt, tags, alpha=0.2, seed=1)
    one, again, other = sampler()(2), sampler()(2), sampler()(3)
    for side in ("src", "tgt"):
        a, b, c = getattr(one, side), getattr(again, side), getattr(other, side)
        assert np.array_equal(a.data, b.data) and np.array_equal(a.offsets, b.offsets)
        assert not np.array_equal(a.offsets, c.offsets)
        best = getattr(split, side)
        assert not np.array_equal(a.offsets, best.offsets) and a.data.dtype == best.data.dtype
        # another segmentation of the same text
        decode = tokenizer.src.decode if side == "src" else tokenizer.tgt.decode
        skip = lambda i: 1 if side == "src" and split.corpus[i] == 1 else 0
        for i in range(0, len(split), 97):
            assert decode(a[i][skip(i) :].tolist()) == decode(best[i][skip(i) :].tolist())
    tag_id = tags[1]
    assert all(one.src[i][0] == tag_id for i in np.flatnonzero(split.corpus == 1))
    assert one.src.lengths.sum() > split.src.lengths.sum()  # sampled segmentations are longer


@pytest.mark.parametrize(
    "data, message",
    [
        ({"train": [{"demo": 10, "weight": 0}]}, "data.train.weight must be a finite number > 0"),
        ({"train": [{"demo": 10}, {"demo": 10, "weight": -1}]}, "data.train.1.weight must be"),
        ({"train": [{"demo": 10, "tag": "<B T>"}]}, "must be one word"),
        ({"train": [{"demo": 10, "tag": "</s>"}]}, "must be one word and not one of"),
        ({"train": [{"demo": 10}, {}]}, "data.train.1 is empty"),
        (
            {"train": [{"demo": 10}], "valid": {"demo": 10, "tag": "<BT>"}},
            "data.valid: weight, tag, skip_filters, augment, src_lang and tgt_lang are for training",
        ),
        ({"train": []}, "data.train is empty"),
    ],
)
def test_bad_corpus_lists_are_refused_in_one_line(tmp_path, data, message):
    with pytest.raises(MtrainError, match=message):
        tiny_config(tmp_path, data=data)


def test_set_reaches_into_a_list_of_corpora(tmp_path):
    from mtrain.config_io import from_dict

    values = {"data": {"train": [{"demo": 10}, {"demo": 20}]}}
    assert from_dict(values, ["data.train.1.weight=3"]).data.train[1].weight == 3.0
    assert from_dict({"data": {"train": {"demo": 10}}}, ["data.train.demo=5"]).data.train[0].demo == 5
    with pytest.raises(MtrainError, match="'train' is a list; name an item|name an item of the list"):
        from_dict(values, ["data.train.weight=3"])
    with pytest.raises(MtrainError, match="not an item of the list"):
        from_dict(values, ["data.train.5.weight=3"])


def test_subword_sampling_needs_a_unigram_model(tmp_path):
    from mtrain.training.session import train

    config = tiny_config(tmp_path, tokenizer={"vocab_size": 200, "sampling_alpha": 0.1})
    with pytest.raises(MtrainError, match="not a unigram model; set tokenizer.type: unigram"):
        train(config)
