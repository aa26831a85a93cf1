"""Translation through CTranslate2: the same interface as `decode.Translator`, another engine.

CTranslate2 (the inference engine behind OpenNMT-py's and fairseq's deployments) runs an
exported model directory (`mtrain export --format ctranslate2`) with its own C++ kernels and
int8 quantization. Sources are encoded exactly as for the PyTorch engine (the same
sentencepiece model, the same truncation); CTranslate2 appends </s> and starts decoding from
<s>, as mtrain does.

Two differences from mtrain's own beam search, both documented in docs/guides/exporting.md:
- length normalisation: CTranslate2 divides a hypothesis' log-probability by |Y| ** lenpen,
  mtrain by the GNMT penalty ((5 + |Y|) / 6) ** lenpen; with lenpen 0 both rank by the plain
  sum and greedy search is the same for both;
- the output length limit is one per call: a sentence's output is cut at its own limit afterwards.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from mtrain.config_io import decode_config
from mtrain.data.tokenizer import VOCABULARY_FILE, Tokenizer
from mtrain.device import select_device
from mtrain.errors import MtrainError
from mtrain.inference.engine import Progress
from mtrain.inference.search import Hypothesis
from mtrain.inference.translator import check_nbest, encode_sources

CHUNK = 512  # sentences per call (sorted by length), so that a progress bar moves; CTranslate2 batches inside a call


def read_model_info(model_dir: Path) -> dict:
    """mtrain.json of an exported directory: languages, model shape, decode settings."""
    info_path = Path(model_dir) / "mtrain.json"
    if not info_path.is_file():
        raise MtrainError(
            f"{model_dir} is not a model directory exported by mtrain (no mtrain.json); "
            "make one with: mtrain export --checkpoint K --format ctranslate2 --output DIR"
        )
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
        engine = info["engine"]
        info["model"]["max_positions"], info["decode"], info["src_lang"]  # what the engine reads below
    except (ValueError, KeyError, TypeError):
        raise MtrainError(
            f"{info_path} is damaged (not the JSON mtrain export writes); export the model again with mtrain export"
        ) from None
    if engine != "ctranslate2":
        raise MtrainError(
            f"{model_dir} holds a '{engine}' export; --model takes a CTranslate2 export "
            "(mtrain export --format ctranslate2)"
        )
    return info


class CTranslate2Translator:
    """Text in, text out with a CTranslate2 model directory and its sentencepiece models."""

    def __init__(self, model_dir: Path, device: str = "auto", threads: int = 0, **overrides: object):
        import ctranslate2

        info = read_model_info(model_dir)
        src_spm, tgt_spm = (Path(model_dir) / "source.spm").read_bytes(), (Path(model_dir) / "target.spm").read_bytes()
        vocabulary = Path(model_dir) / VOCABULARY_FILE
        vocab = json.loads(vocabulary.read_text(encoding="utf-8")) if vocabulary.is_file() else None
        self.tokenizer = Tokenizer(src_spm, None if tgt_spm == src_spm else tgt_spm, vocab)
        self.config = decode_config(info["decode"], **overrides)
        if self.config.sampling:
            raise MtrainError("--sampling runs on mtrain's own engine; translate a checkpoint with --engine torch")
        self.info = info
        self.max_src = info["model"]["max_positions"] - 1
        self.device = select_device(device)
        try:
            self.engine = ctranslate2.Translator(
                str(model_dir), device=self.device.type, intra_threads=threads, inter_threads=1
            )
        except RuntimeError as e:  # a truncated or damaged model.bin (CTranslate2 reports no OSError)
            raise MtrainError(
                f"CTranslate2 cannot load {model_dir}/model.bin ({str(e).strip().splitlines()[0]}); it is damaged or "
                "incomplete: export the model again"
            ) from None

    def _max_length(self, source_length: int) -> int:
        """mtrain's limit a * |source| + b counts </s>; CTranslate2's counts the tokens before it."""
        limit = min(int(self.config.max_len_a * source_length) + self.config.max_len_b, self.max_src)
        return max(1, limit - 1)

    def translate_nbest(
        self,
        lines: list[str],
        beam: int | None = None,
        nbest: int = 1,
        progress: Progress | None = None,
        first_line: int = 0,
    ) -> list[list[Hypothesis]]:
        """`nbest` hypotheses for every line, in input order; an empty line gets one empty hypothesis.
        The score is CTranslate2's normalised log-probability (it reports no plain sum)."""
        return self._search(lines, beam, nbest, progress)

    def translate_aligned(self, lines: list[str], beam: int | None = None) -> list[tuple[str, set, set]]:
        """Each line's best translation and its word alignment for markup, sure and fallback links
        (insight/alignment.placement_alignment), from the attention CTranslate2 returns (the
        exported alignment layer and heads)."""
        from mtrain.insight.alignment import placement_alignment

        attention: dict[int, tuple[list, list[str]]] = {}
        results = self._search(lines, beam, 1, None, attention)
        aligned = []
        for r, hyps in enumerate(results):
            links: tuple[set, set] = (set(), set())
            if r in attention:
                rows, src = attention[r]
                tgt = [self.tokenizer.tgt_piece(t) for t in hyps[0].tokens]
                links = placement_alignment(torch.tensor(rows), src, tgt)
            aligned.append((self.tokenizer.decode_tgt(hyps[0].tokens), *links))
        return aligned

    def _search(
        self, lines: list[str], beam: int | None, nbest: int, progress: Progress | None, attention: dict | None = None
    ) -> list[list[Hypothesis]]:
        """translate_nbest's search; with `attention`, by line: the best hypothesis's attention rows
        and the source pieces they attend over."""
        c = self.config
        beam = check_nbest(nbest, beam or c.beam)
        ids = encode_sources(self, lines)
        results: list[list[Hypothesis]] = [[Hypothesis([], 0.0, 0.0)] for _ in lines]
        todo = sorted((i for i, seq in enumerate(ids) if seq), key=lambda i: len(ids[i]))
        for start in range(0, len(todo), CHUNK):
            rows = todo[start : start + CHUNK]
            limits = [self._max_length(len(ids[r])) for r in rows]
            found = self.engine.translate_batch(
                [[self.tokenizer.src_piece(t) for t in ids[r]] for r in rows],
                beam_size=beam,
                length_penalty=c.lenpen,
                num_hypotheses=nbest,
                return_scores=True,
                max_batch_size=c.max_tokens // beam,
                batch_type="tokens",
                max_decoding_length=max(limits),
                min_decoding_length=1,  # at least one token, as mtrain's search
                return_attention=attention is not None,
            )
            for r, limit, result in zip(rows, limits, found):
                # One limit per call: a sentence that ran past its own limit is cut there, which is
                # exactly mtrain's output for greedy search (a greedy output's prefix does not
                # depend on how long the search may go on).
                results[r] = [
                    Hypothesis([self.tokenizer.tgt_id(p) for p in hyp[:limit]], score, score)
                    for hyp, score in zip(result.hypotheses, result.scores)
                ]
                if attention is not None and result.hypotheses[0]:
                    attention[r] = (result.attention[0][:limit], [self.tokenizer.src_piece(t) for t in ids[r]])
            if progress is not None:
                progress.update(len(rows))
        return results

    def translate(self, lines: list[str], beam: int | None = None, progress: Progress | None = None) -> list[str]:
        return [self.tokenizer.decode_tgt(hyps[0].tokens) for hyps in self.translate_nbest(lines, beam, 1, progress)]

    def score_tokens(self, lines: list[str], results: list[list[Hypothesis]]) -> None:
        """Each hypothesis' token log-probabilities (</s>'s last), from CTranslate2's `score_batch`: its
        search reports only a sequence's normalised score, so the outputs are scored once more,
        teacher-forced (a fraction of the search's cost: docs/benchmarks.md)."""
        ids = encode_sources(self, lines)
        todo = [(r, h) for r, hyps in enumerate(results) if ids[r] for h in hyps if not h.token_logprobs]
        if not todo:
            return
        scored = self.engine.score_batch(
            [[self.tokenizer.src_piece(t) for t in ids[r]] for r, _ in todo],
            [[self.tokenizer.tgt_piece(t) for t in h.tokens] for _, h in todo],
            max_batch_size=self.config.max_tokens,
            batch_type="tokens",
        )
        for (_, hypothesis), result in zip(todo, scored):
            hypothesis.token_logprobs = list(result.log_probs)
