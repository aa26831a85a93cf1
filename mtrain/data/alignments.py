"""Word alignments of the training pairs, made at prepare time (data.alignments) for guided
alignment training.

eflomal (Östling and Tiedemann, 2016; the aligner of Mozilla's training pipeline) aligns the pairs
on their subword pieces, the units the model attends over (or on their words, data.alignment_units),
in both directions; the two are
symmetrized with grow-diag-final-and (Koehn et al., 2005) and stored beside the prepared pairs as
train.align: per pair, its links as flat (source piece, target piece) positions.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from pathlib import Path
from types import ModuleType

import numpy as np

from mtrain.data.store import IdsWriter, IndexedArray
from mtrain.data.tokenizer import WORD_START, Tokenizer, word_numbers
from mtrain.extras import require
from mtrain.files import atomic_write_text

log = logging.getLogger("mtrain")

Links = set[tuple[int, int]]  # (source, target) positions from 0, words or pieces: Pharaoh's i-j pairs
NEIGHBOURS = ((-1, 0), (0, -1), (1, 0), (0, 1), (-1, -1), (-1, 1), (1, -1), (1, 1))
MAX_POSITION = 65_535  # links are stored as uint16 positions
ALIGN_CHUNK = 1_000_000  # pairs per eflomal run: plenty for its statistics, and the unit of resuming


def align_training_pairs(
    src: IndexedArray, tgt: IndexedArray, tokenizer: Tokenizer, prefix: Path, stage: Path, words: bool = False
) -> None:
    """eflomal over every training pair's pieces (or, with `words`, its lowercased words, each link
    then spread over the two words' pieces), symmetrized, written to {prefix}.bin/.idx.npy as piece
    positions. The pairs go in chunks of ALIGN_CHUNK; each chunk's links are kept in `stage` under
    the digest of its text, so an interrupted prepare aligns only the chunks it had not finished."""
    eflomal = require("eflomal", "align", "data.alignments: eflomal")
    stage.mkdir(parents=True, exist_ok=True)
    writer = IdsWriter(prefix, MAX_POSITION + 1)
    for start in range(0, len(src), ALIGN_CHUNK):
        rows = range(start, min(start + ALIGN_CHUNK, len(src)))
        src_pieces = [[tokenizer.src_piece(int(t)) for t in src[i]] for i in rows]
        tgt_pieces = [[tokenizer.tgt_piece(int(t)) for t in tgt[i]] for i in rows]
        units = word_texts if words else list
        source = [" ".join(units(pieces)) + "\n" for pieces in src_pieces]
        target = [" ".join(units(pieces)) + "\n" for pieces in tgt_pieces]
        digest = hashlib.sha256("".join(source + ["\0"] + target).encode()).hexdigest()[:24]
        done = stage / f"{digest}.links"
        if done.is_file():
            log.info("alignments of pairs %d-%d: done before (%s)", rows.start, rows.stop - 1, done.name)
        else:
            log.info("aligning pairs %d-%d of %d with eflomal (both directions)", rows.start, rows.stop - 1, len(src))
            _align_chunk(eflomal, source, target, done)
        lines = done.read_text(encoding="utf-8").splitlines()
        for line, s_pieces, t_pieces in zip(lines, src_pieces, tgt_pieces):
            links = read_pharaoh(line)
            links = piece_links(links, word_numbers(s_pieces), word_numbers(t_pieces)) if words else links
            writer.add([[position for link in sorted(links) for position in link]])
    writer.close()


def word_texts(pieces: list[str]) -> list[str]:
    """The words of a sentence's pieces (tokenizer.word_numbers' words), lowercased, for eflomal:
    the word statistics are denser than the pieces' (a word cut two ways is one word)."""
    words: dict[int, str] = {}
    for number, piece in zip(word_numbers(pieces), pieces):
        words[number] = words.get(number, "") + piece.replace(WORD_START, "")
    return [text.lower() or WORD_START for text in words.values()]


def piece_links(word_links: Links, src_words: list[int], tgt_words: list[int]) -> Links:
    """Word links as piece links: every piece of source word i with every piece of target word j."""
    src_at = _positions_by_word(src_words)
    tgt_at = _positions_by_word(tgt_words)
    return {(p, q) for i, j in word_links for p in src_at.get(i, ()) for q in tgt_at.get(j, ())}


def _positions_by_word(numbers: list[int]) -> dict[int, list[int]]:
    positions: dict[int, list[int]] = {}
    for position, number in enumerate(numbers):
        positions.setdefault(number, []).append(position)
    return positions


def _align_chunk(eflomal: ModuleType, source: list[str], target: list[str], done: Path) -> None:
    """One chunk's symmetrized links, a Pharaoh line per pair, written to `done` atomically."""
    with tempfile.TemporaryDirectory(dir=done.parent) as scratch:
        links = _symmetrized(eflomal, source, target, Path(scratch))
    atomic_write_text(done, "".join(pharaoh(pair) + "\n" for pair in links))


def align_texts(sources: list[str], targets: list[str]) -> list[Links]:
    """eflomal's symmetrized links of sentence pairs split at whitespace, one set per pair. The
    evaluation scripts align a model's (source, output) or (source, reference) pairs this way,
    with a training corpus's pairs beside them for eflomal's statistics."""
    eflomal = require("eflomal", "align", "eflomal word alignments")
    with tempfile.TemporaryDirectory() as scratch:
        return _symmetrized(eflomal, [s + "\n" for s in sources], [t + "\n" for t in targets], Path(scratch))


def align_beside(
    sources: list[str], targets: list[str], more_sources: list[str], more_targets: list[str]
) -> list[Links]:
    """align_texts of (sources, targets), lowercased, aligned together with more pairs (a training
    corpus) for eflomal's statistics: the links of the first pairs only."""
    lowered = [[line.lower() for line in lines] for lines in (sources + more_sources, targets + more_targets)]
    return align_texts(*lowered)[: len(sources)]


def _symmetrized(eflomal: ModuleType, source: list[str], target: list[str], scratch: Path) -> list[Links]:
    """eflomal in both directions (lines end with a newline), symmetrized with grow-diag-final-and."""
    forward, reverse = scratch / "forward", scratch / "reverse"
    eflomal.Aligner().align(source, target, links_filename_fwd=str(forward), links_filename_rev=str(reverse))
    with open(forward, encoding="utf-8") as fwd, open(reverse, encoding="utf-8") as rev:
        return [grow_diag_final_and(read_pharaoh(f), read_pharaoh(r)) for f, r in zip(fwd, rev)]


def read_pharaoh(line: str) -> Links:
    """`0-0 1-2 ...` as {(source, target)}."""
    return {(int(i), int(j)) for i, j in (link.split("-") for link in line.split())}


def pharaoh(links: Links) -> str:
    """`i-j` pairs (source i, target j, from 0), in source order: what translate --alignment prints."""
    return " ".join(f"{i}-{j}" for i, j in sorted(links))


def grow_diag_final_and(forward: Links, reverse: Links) -> Links:
    """Koehn et al.'s symmetrization: start from the intersection, grow it with union links that
    neighbour it (diagonals included) and align a word not aligned yet, then add union links
    (forward, then reverse) whose source and target words are both unaligned."""
    links, union = forward & reverse, forward | reverse
    source_done, target_done = {i for i, _ in links}, {j for _, j in links}
    grown = True
    while grown:
        grown = False
        for i, j in sorted(links):
            for di, dj in NEIGHBOURS:
                link = (i + di, j + dj)
                if link in union and link not in links and (link[0] not in source_done or link[1] not in target_done):
                    links.add(link)
                    source_done.add(link[0])
                    target_done.add(link[1])
                    grown = True
    for direction in (forward, reverse):
        for i, j in sorted(direction):
            if i not in source_done and j not in target_done:
                links.add((i, j))
                source_done.add(i)
                target_done.add(j)
    return links


def alignment_matrix(flat_links: np.ndarray, target_len: int, source_len: int) -> np.ndarray:
    """(target positions, source positions) with each target row's links spread evenly (the
    guided loss's A): links beyond the lengths (a cut sequence) are dropped."""
    matrix = np.zeros((target_len, source_len), np.float32)
    pairs = flat_links.reshape(-1, 2).astype(np.int64)
    pairs = pairs[(pairs[:, 0] < source_len) & (pairs[:, 1] < target_len)]
    matrix[pairs[:, 1], pairs[:, 0]] = 1.0
    totals = matrix.sum(1, keepdims=True)
    return np.divide(matrix, totals, out=matrix, where=totals > 0)
