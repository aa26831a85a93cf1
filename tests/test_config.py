"""Config loading: defaults, overrides, and one-line errors for every kind of mistake."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pytest
import yaml

from mtrain.config import Config
from mtrain.config_io import load_config
from mtrain.errors import MtrainError

from helpers import ROOT, run_cli


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_load(path):
    config = load_config(path)
    assert config.model.d_model % config.model.heads == 0


def test_base_yaml_is_the_paper_and_the_dataclass_defaults():
    base = load_config(ROOT / "configs/base.yaml")
    m, t, tok, dec = base.model, base.train, base.tokenizer, base.decode
    assert (m.d_model, m.heads, m.encoder_layers, m.decoder_layers, m.d_ff, m.dropout) == (512, 8, 6, 6, 2048, 0.1)
    assert (tok.vocab_size, tok.joint, t.label_smoothing, t.warmup_steps, t.max_steps) == (
        37000,
        True,
        0.1,
        4000,
        100000,
    )
    assert (t.adam_beta1, t.adam_beta2, t.adam_eps) == (0.9, 0.98, 1e-9)
    assert t.max_tokens * t.update_freq >= 25000
    assert (dec.beam, dec.lenpen, dec.max_len_a, dec.max_len_b, t.average_last) == (4, 0.6, 1.0, 50, 5)
    assert base.data.train[0].dataset == "wmt/wmt14" and base.data.train[0].name == "de-en"
    # Every value base.yaml states equals the dataclass default but for paths, batching and logging.
    defaults = asdict(Config())
    stated = yaml.safe_load((ROOT / "configs/base.yaml").read_text())
    for section in ("model", "tokenizer", "decode"):
        for key, value in stated.get(section, {}).items():
            assert defaults[section][key] == value, (
                f"{section}.{key}: base.yaml says {value}, the dataclass {defaults[section][key]}"
            )


def test_big_yaml_is_the_paper_big_model():
    big = load_config(ROOT / "configs/big.yaml")
    assert (big.model.d_model, big.model.heads, big.model.d_ff, big.model.dropout) == (1024, 16, 4096, 0.3)
    assert big.train.average_last == 20


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_overrides_are_typed(tmp_path):
    path = write(tmp_path, "data: {train: {demo: 10}}\n")
    config = load_config(
        path, ["train.max_steps=200", "model.d_model=256", "train.adam_eps=1e-8", "model.pre_norm=true"]
    )
    assert (config.train.max_steps, config.model.d_model, config.train.adam_eps, config.model.pre_norm) == (
        200,
        256,
        1e-8,
        True,
    )
    with pytest.raises(MtrainError, match="'train.max_steps' must be int"):
        load_config(path, ["train.max_steps=many"])
    with pytest.raises(MtrainError, match="expected KEY=VALUE"):
        load_config(path, ["train.max_steps"])


LAUGHS = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(8)
)  # 9 levels of 9 aliases (72 in all): 9**9 values once expanded, in under 500 bytes


@pytest.mark.parametrize(
    "text, message",
    [
        (
            "data: {train: {demo: 10}}\nmodel: {d_modle: 256}\n",
            "unknown key 'model.d_modle'; did you mean 'model.d_model'",
        ),
        ("data: {train: {demo: 10}}\ntrian: {}\n", "unknown key 'trian'; did you mean 'train'"),
        ("data: {train: {demo: 10}}\nmodel: {dropout: high}\n", "'model.dropout' must be float"),
        (
            "data: {train: {demo: 10}}\nmodel: {d_model: 100, heads: 8}\n",
            "d_model \\(100\\) must be divisible by model.heads \\(8\\)",
        ),
        ("data: {train: {demo: 10}}\ntrain: {warmup_steps: 0}\n", "warmup_steps must be > 0"),
        ("data: {train: {demo: 10}}\nmodel: {d_model: 1048576}\n", "model.d_model must be at most 65536"),
        ("data: {train: {demo: 10}}\nmodel: {max_positions: 1000000000}\n", "model.max_positions must be"),
        (
            "data: {train: {demo: 10}}\ntrain: {max_minutes: .nan}\n",
            "train.max_minutes must be a finite number, got nan",
        ),
        ("data: {train: {demo: 10}}\ntrain: {adam_eps: .inf}\n", "train.adam_eps must be a finite number, got inf"),
        ("data: {train: {demo: 10}}\ntrain: {save_every_minutes: -1}\n", "train.save_every_minutes must be >= 0"),
        (
            "data: {train: {demo: 10}}\ntrain: {keep_last: 2, average_last: 3}\n",
            "train.average_last \\(3\\) is more than train.keep_last \\(2\\) keeps",
        ),
        ("data: {train: {demo: 10}}\ntrain: {seed: -1}\n", "train.seed must be in \\[0, 2\\*\\*63\\), got -1"),
        ("data: {train: {demo: 10}}\ntrain: {seed: 18446744073709551616}\n", "train.seed must be in"),
        (
            "data: {train: {demo: 10}}\ntrain: {dist_timeout_minutes: 1e300}\n",
            "dist_timeout_minutes must be a finite number > 0 and at most 10080",
        ),
        (
            "data: {train: {demo: 10}}\ntrain: {cooldown: 20}\n",
            "train.cooldown must be a fraction of the budget in \\[0, 1\\], got 20.0",
        ),
        ("data: {train: {demo: 10, path: x}}\n", "sets path and demo"),
        ("model: {d_model: 512}\n", "data.train is empty"),
        (
            "data: {train: {demo: 10}}\nmodel:\n\td_model: 256\n",
            "invalid YAML .* at line 3, column 1: found character '\\\\t'",
        ),
        ("- a\n- b\n", "top level must be a mapping"),
        ("out_dir: ''\ndata: {train: {demo: 10}}\n", "out_dir is empty; name a run directory"),
        (
            "data: {train: {demo: 10}}\ntrain: {dist_timeout_minutes: .inf}\n",
            "dist_timeout_minutes must be a finite number > 0",
        ),
        ("data: {train: {demo: 10}}\ndecode: {max_len_a: .inf}\n", "max_len_a must be a finite number >= 0"),
        ("data: {train: {demo: 10}}\ndecode: {beam: 100000}\n", "decode.beam \\(--beam\\) must be from 1 to 1024"),
        (
            "data: {train: {demo: 10}}\ndecode: {lenpen: 1e308}\n",
            "decode.lenpen \\(--lenpen\\) must be a number from 0 to 10",
        ),
        (
            "data: {train: {demo: 10}}\ndecode: {temperature: 1e-300}\n",
            "temperature\\) must be a finite number >= 1e-06",
        ),
        ("data: {train: {demo: 10}}\ntrain: {threads: 100000}\n", "train.threads must be from 0 to 1024, got 100000"),
        ("data: {src_lang: x/y, train: {demo: 10}}\n", "data.src_lang 'x/y' must be a language code"),
        ("data: {train: {demo: 10}}\nmodel: {d_model: 256}\nmodel: {heads: 2}\n", "key 'model' appears twice .*line 3"),
        ("a: &a [1]\nb: [" + ", ".join(["*a"] * 150) + "]\n", "uses 150 aliases \\(\\*name\\); at most 100"),
        (LAUGHS, "expands to more than 100000 values"),
        ("data: &x {self: *x}\n", "refers to itself"),
        ("train: {seed: 2024-01-01}\ndata: {train: {demo: 10}}\n", "'train.seed' must be int"),
    ],
)
def test_config_mistakes(tmp_path, text, message):
    with pytest.raises(MtrainError, match=message):
        load_config(write(tmp_path, text))


def test_missing_config_file():
    with pytest.raises(MtrainError, match="config file not found: nowhere.yaml"):
        load_config("nowhere.yaml")


def test_cli_reports_a_mistake_on_one_line_without_traceback(tmp_path):
    path = write(tmp_path, "data: {train: {demo: 10}}\nmodel: {haeds: 4}\n")
    result = run_cli("prepare", "--config", str(path))
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        == "error: config: unknown key 'model.haeds'; did you mean 'model.heads'? (valid keys here: d_model, heads, "
        "encoder_layers, decoder_layers, d_ff, dropout, attention_dropout, activation_dropout, pre_norm, "
        "tie_embeddings, activation, output_bias, max_positions, positions)"
    )
    assert "Traceback" not in result.stderr


def test_cli_cuda_asked_for_but_absent(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    path = write(
        tmp_path, f"out_dir: {tmp_path / 'run'}\ndata: {{train: {{demo: 200}}}}\ntokenizer: {{vocab_size: 100}}\n"
    )
    result = run_cli("train", "--config", str(path), "--device", "cuda")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "CUDA is not available" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_cli_help_and_version():
    result = run_cli("--help")
    for command in ("prepare", "train", "translate", "eval-bleu", "average"):
        assert command in result.stdout
    assert run_cli("--version").stdout.startswith("mtrain ")
