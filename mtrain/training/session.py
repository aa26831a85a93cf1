"""A training session: lock the run directory, decide where the run starts (a new run, its own
checkpoint_last.pt, --resume, --recover), check the config against what is resumed, prepare the
data, and hand over to the Trainer with SIGINT/SIGTERM turned into "save and stop"."""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

from mtrain import distributed
from mtrain.config import Config
from mtrain.config_io import save_config
from mtrain.data.prepare import fingerprint, prepare
from mtrain.data.store import PreparedData, read_manifest
from mtrain.device import keep_freed_memory, select_device, set_threads
from mtrain.errors import MtrainError
from mtrain.files import atomic_copy, disk_errors, remove_stale_temporaries
from mtrain.run import checkpoint
from mtrain.run import directory as rundir
from mtrain.run.metrics import repair_metrics
from mtrain.training.initial import InitSource, check_source, inherit_model, load_checkpoint_source
from mtrain.training.progress import finished_message
from mtrain.training.trainer import StartingPoint, Trainer

log = logging.getLogger("mtrain")


def train(
    config: Config,
    resume: str | None = None,
    restart: bool = False,
    recover: bool = False,
    allow_config_change: bool = False,
    load_init: Callable[[Config], InitSource] = load_checkpoint_source,
) -> dict:
    """Lock the run directory, check what is resumed against the config, prepare data (once),
    train; returns the final step and validation. `load_init` reads train.init_from's model when a
    new run needs it (the command line's also reads Marian directories)."""
    dist = distributed.from_env()
    device = select_device(config.train.device, dist.local_rank)
    set_threads(config.train.threads)
    if device.type == "cpu":
        keep_freed_memory()
    with rundir.RunLock(Path(config.out_dir)) if dist.is_main else nullcontext():
        start = starting_point(config, resume, recover) if resume or not restart else None
        init = initial_model(config, start, load_init)
        changes = check_resumable(start, config, allow_config_change) if start else {}
        given_spm = given_vocabulary(config, start, init)
        # Data is prepared before the process group exists: on a big corpus it takes longer than any
        # sensible collective timeout. Rank 0 prepares, the others wait for its manifest.
        if dist.is_main:
            set_up_run_dir(config, start, restart, given_spm, init)
        else:
            wait_for_prepared(config, given_spm)
        distributed.init(dist, device, config.train.dist_timeout_minutes)
        finished = False
        try:
            trainer = Trainer(config, PreparedData(config.data_dir), device, dist)
            if init is not None:
                trainer.initialize(init)
            trainer.start(start)
            if changes:
                trainer.metrics.write(
                    {
                        "kind": "config_change",
                        "step": trainer.progress.step,
                        "changes": {k: list(v) for k, v in changes.items()},
                    }
                )
            with stop_on_signals(trainer):
                result = trainer.run()
            finished = True
            return result
        finally:
            distributed.shutdown(finished)


def starting_point(config: Config, resume: str | None, recover: bool) -> StartingPoint | None:
    """--resume's checkpoint, else the run's checkpoint_last.pt, else None (a new run). A damaged
    checkpoint_last.pt is named with the newest readable numbered one, taken with --recover."""
    if resume:
        return StartingPoint(Path(resume), checkpoint.load(resume))
    out_dir = Path(config.out_dir)
    last = out_dir / "checkpoint_last.pt"
    if not last.exists() and not checkpoint.numbered(out_dir):
        return None
    try:
        return StartingPoint(last, checkpoint.load(last))
    except MtrainError:
        # damaged, truncated, or gone while numbered checkpoints remain: never start again over them
        problem = "is unreadable (damaged or truncated)" if last.exists() else "is missing"
        fallback = checkpoint.newest_readable(checkpoint.numbered(out_dir))
        if fallback is None:
            raise MtrainError(
                f"{last} {problem} and no numbered checkpoint in {out_dir} is readable; start over with --restart"
            ) from None
        path, state = fallback
        if not recover:
            raise MtrainError(
                f"{last} {problem}; the newest readable checkpoint is {path.name} (step {state['progress']['step']}): "
                "run again with --recover to continue from it, or --restart to start over"
            ) from None
    log.warning("%s %s; continuing from %s (step %d) as --recover asks", last, problem, path, state["progress"]["step"])
    return StartingPoint(path, state)


def initial_model(
    config: Config, start: StartingPoint | None, load_init: Callable[[Config], InitSource]
) -> InitSource | None:
    """train.init_from's model for a new run, checked against the config; None when there is none
    or the run resumes (a resumed fine-tuning run continues from its own checkpoint)."""
    if start is not None and config.train.init_from and start.state.get("init_from") is None:
        raise MtrainError(
            f"{config.out_dir} holds a run that did not start from train.init_from (its {start.path.name}); give "
            "the fine-tuning run a new out_dir"
        )
    if start is not None and config.train.init_from:  # resumed: the run's own model, inherited as at its start
        inherit_model(config, start.state["config"])
    if not config.train.init_from or start is not None:
        return None
    init = load_init(config)
    inherit_model(config, init.state["config"])
    check_source(init, config)
    return init


def given_vocabulary(config: Config, start: StartingPoint | None, init: InitSource | None) -> dict | None:
    """The sentencepiece models a run with train.init_from takes instead of training its own: the
    source model's, which a resumed run carries in its checkpoint."""
    if not config.train.init_from:
        return None
    return (init or start).state["spm"]


def check_resumable(start: StartingPoint, config: Config, allow_config_change: bool) -> dict:
    """Refuse another model shape; refuse other training settings than the checkpoint's unless
    allowed (returns those, to record); settings of how long and how often may change freely."""
    checkpoint.check_shape(start.state, config, start.path)
    allowed, refused = rundir.split_changes(rundir.config_changes(start.state["config"], config.to_dict()))
    if allowed:
        log.info("continuing with changed settings: %s", rundir.describe_changes(allowed))
    if refused and not allow_config_change:
        raise MtrainError(
            f"the config differs from the one {start.path} was trained with: {rundir.describe_changes(refused)}; "
            "resume with the run's settings, pass --allow-config-change to continue with the new ones "
            "(recorded in metrics.jsonl), or use --restart / a new out_dir"
        )
    if refused:
        log.warning(
            "continuing with changed training settings (--allow-config-change): %s", rundir.describe_changes(refused)
        )
    return refused


def set_up_run_dir(
    config: Config, start: StartingPoint | None, restart: bool, given_spm: dict | None, init: InitSource | None
) -> None:
    """Rank 0, under the run's lock: clear leftovers (and, with --restart, the old outputs), prepare
    data, cut metrics back to the resumed step, then (only now) write config.yaml."""
    out_dir = Path(config.out_dir)
    removed = remove_stale_temporaries(out_dir) + remove_stale_temporaries(config.data_dir.parent, config.data_dir.name)
    if removed:
        log.info(
            "removed %d temporary file(s) left by killed runs: %s", len(removed), ", ".join(p.name for p in removed)
        )
    if restart:
        rundir.clear_outputs(out_dir, checkpoint.numbered(out_dir))
    prepare(config, expected_spm=start.state["spm"] if start else None, given_spm=given_spm)
    # records past the resumed step (all of them when a run died before its first checkpoint) go aside
    repair_metrics(out_dir, int(start.state["progress"]["step"]) if start else 0)
    if start:
        restore_scheduled(config, start)
    if start and finished_message(int(start.state["progress"]["step"]), config.train, start.state.get("elapsed_s", 0)):
        return  # a finished run run again trains no more: its config.yaml stays the one it trained with
    origin = init.provenance if init else (start.state.get("init_from") if start else None)
    comment = (
        f"started from {origin['path']} (sha256 {origin['sha256']}, step {origin['source_step']})" if origin else ""
    )
    with disk_errors(f"writing {out_dir / 'config.yaml'}"):
        save_config(config, out_dir / "config.yaml", comment)


def restore_scheduled(config: Config, start: StartingPoint) -> None:
    """A run killed while saving (by an earlier mtrain, which wrote checkpoint_last.pt first) may
    miss the numbered checkpoint of the step it resumes from: write it from checkpoint_last.pt."""
    step, save_every = int(start.state["progress"]["step"]), config.train.save_every
    numbered = Path(config.out_dir) / f"checkpoint_{step}.pt"
    if (
        start.path.name == "checkpoint_last.pt"
        and save_every
        and step
        and step % save_every == 0
        and not numbered.exists()
    ):
        atomic_copy(start.path, numbered)
        log.info("restored the missing scheduled %s from checkpoint_last.pt", numbered.name)


@contextmanager
def stop_on_signals(trainer: Trainer) -> Iterator[None]:
    """SIGINT/SIGTERM ask the trainer to save and stop at the end of the current step."""
    previous = {
        sig: signal.signal(sig, lambda signum, frame: setattr(trainer, "stop_signal", signum))
        for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def wait_for_prepared(config: Config, given_spm: dict | None, poll_seconds: float = 2.0) -> None:
    """Block until rank 0 has written prepared data matching this config and its inputs."""
    wanted = fingerprint(config, given_spm)
    while (read_manifest(config.data_dir) or {}).get("fingerprint") != wanted:
        time.sleep(poll_seconds)
