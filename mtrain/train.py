"""The training loop: label-smoothed cross entropy, Adam with the inverse-square-root warmup
schedule (section 5.3), token-budget batches with gradient accumulation, validation,
checkpoints and exact resumption.

One optimizer step consumes `update_freq` micro-batches on each of `world_size` ranks. The loss
is summed over target tokens and divided by the number of target tokens in the *whole* step
(all micro-batches, all ranks), so the update does not depend on how a step is split.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import signal
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from mtrain import checkpoint, distributed
from mtrain.config import Config, save_config
from mtrain.data import PreparedData, prepare
from mtrain.data.batching import Batch, TrainBatches, eval_batches
from mtrain.data.binarize import fingerprint
from mtrain.data.tokenizer import Tokenizer
from mtrain.device import autocast_context, resolve_precision, select_device, set_threads
from mtrain.errors import Interrupted, MtrainError
from mtrain.model import Transformer
from mtrain.special import PAD

log = logging.getLogger("mtrain")
MAX_BAD_STEPS = 5  # consecutive non-finite losses before giving up


def learning_rate(step: int, d_model: int, warmup: int, scale: float = 1.0) -> float:
    """lrate = scale * d_model^-0.5 * min(step^-0.5, step * warmup^-1.5), step counted from 1."""
    step = max(step, 1)
    return scale * d_model ** -0.5 * min(step ** -0.5, step * warmup ** -1.5)


def label_smoothed_loss(logits: torch.Tensor, target: torch.Tensor, epsilon: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed label-smoothed cross entropy and summed NLL over non-padding targets.

    Smoothing puts epsilon uniformly over the vocabulary (Szegedy et al., 2016), the same
    definition as F.cross_entropy(label_smoothing=epsilon), computed from one log-softmax:
    loss = (1 - epsilon) * nll + epsilon * mean over the vocabulary of -log p."""
    lprobs = F.log_softmax(logits.reshape(-1, logits.size(-1)).float(), dim=-1)
    target = target.reshape(-1)
    keep = (target != PAD).to(lprobs.dtype)
    nll = -(lprobs.gather(1, target[:, None]).squeeze(1) * keep).sum()
    smooth = -(lprobs.mean(-1) * keep).sum() if epsilon else nll.new_zeros(())
    return (1 - epsilon) * nll + epsilon * smooth, nll.detach()


def check_compatible(state: dict, config: Config, tokenizer: Tokenizer, path) -> None:
    """Refuse to continue from a checkpoint of another vocabulary or model shape."""
    if state["spm"]["src"] != tokenizer.src_model or state["spm"]["tgt"] != tokenizer.tgt_model:
        raise MtrainError(f"checkpoint {path} was trained with another vocabulary (its sentencepiece model differs from {config.data_dir}); use --restart to start over or a new out_dir")
    saved = state["config"]["model"]
    for key, value in vars(config.model).items():
        if key != "dropout" and saved.get(key) != value:
            raise MtrainError(f"checkpoint {path} has model.{key}={saved.get(key)} but the config says {value}; use the same model shape, or --restart / a new out_dir")


@dataclass
class Progress:
    """Where training stands; saved in every checkpoint."""

    step: int = 0  # optimizer steps done
    epoch: int = 1
    epoch_step: int = 0  # next step within the epoch
    best_valid_loss: float = math.inf
    bad_validations: int = 0


class Trainer:
    def __init__(self, config: Config, data: PreparedData, device: torch.device, dist: distributed.DistInfo):
        self.config, self.data, self.device, self.dist = config, data, device, dist
        self.out_dir = Path(config.out_dir)
        self.tokenizer = data.tokenizer()
        t = config.train
        torch.manual_seed(t.seed)  # the same initial weights on every rank
        self.model = Transformer(config.model, self.tokenizer.src_vocab_size, self.tokenizer.tgt_vocab_size).to(device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=0.0, betas=(t.adam_beta1, t.adam_beta2), eps=t.adam_eps,
                                          fused=device.type == "cuda")
        self.precision = resolve_precision(device, t.precision)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.precision == "fp16")
        self.progress = Progress()
        self.batches = TrainBatches(data.split("train"), t.max_tokens, t.seed, config.model.max_positions,
                                    t.update_freq, dist.world_size, dist.rank)
        if self.batches.skipped:
            log.warning("%d training pairs are longer than model.max_positions and are skipped", self.batches.skipped)
        self.valid = data.split("valid") if data.has("valid") else None
        self.module = self.model  # what runs forward/backward: maybe compiled, maybe DDP-wrapped
        self.metrics_file = self.out_dir / "metrics.jsonl"
        self.tensorboard = None
        self.stop_signal = 0
        self.elapsed_before = 0.0  # training wall-clock of earlier processes of this run (restored on resume)
        self.started = time.time()

    # ---------------------------------------------------------------- set-up

    def wrap(self) -> None:
        """torch.compile and DDP come after loading a checkpoint into the plain model."""
        torch.manual_seed(self.config.train.seed + 7919 * self.dist.rank + self.progress.step)
        if self.config.train.compile:
            self.module = torch.compile(self.module)
        if self.dist.enabled:
            self.module = DistributedDataParallel(self.module, device_ids=[self.device] if self.device.type == "cuda" else None)

    def resume(self, path: Path) -> None:
        state = checkpoint.load(path, map_location=self.device)
        check_compatible(state, self.config, self.tokenizer, path)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.progress = Progress(**state["progress"])
        self.elapsed_before = float(state.get("elapsed_s", 0.0))
        rng = state["rng"]
        self.wrap()
        if len(rng) == self.dist.world_size:  # same world size: continue each rank's random stream exactly
            torch.set_rng_state(rng[self.dist.rank]["cpu"])
            if self.device.type == "cuda" and rng[self.dist.rank]["cuda"] is not None:
                torch.cuda.set_rng_state(rng[self.dist.rank]["cuda"], self.device)
        log.info("resumed from %s at step %d (epoch %d)", path, self.progress.step, self.progress.epoch)
        if len(rng) != self.dist.world_size:
            t = self.config.train
            log.info("the run was trained on %d process(es) and continues on %d: a step now takes %d micro-batches of "
                     "<= %d tokens instead of %d (the same batches in the same order, dealt to more or fewer ranks; "
                     "dropout's random streams start afresh)", len(rng), self.dist.world_size,
                     self.dist.world_size * t.update_freq, t.max_tokens, len(rng) * t.update_freq)

    # ---------------------------------------------------------------- one step

    def train_step(self, micro_batches: list[Batch]) -> dict:
        """Forward/backward every micro-batch, then one optimizer update. Returns the step's sums."""
        t = self.config.train
        ntokens = sum(b.tgt_tokens for b in micro_batches)
        total_tokens, stop = distributed.all_reduce_sum([ntokens, float(self.stop_signal)], self.device)
        if stop:
            return {"stopped": True}
        # DDP averages gradients over ranks; scaling by world size turns that into a sum.
        scale = self.dist.world_size / max(total_tokens, 1.0)
        loss_sum = nll_sum = 0.0
        self.module.train()
        for i, batch in enumerate(micro_batches):
            batch = batch.to(self.device)
            sync = i == len(micro_batches) - 1 or not self.dist.enabled
            with (nullcontext() if sync else self.module.no_sync()), autocast_context(self.device, self.precision):
                logits = self.module(batch.src, batch.tgt_in)
                loss, nll = label_smoothed_loss(logits, batch.tgt_out, t.label_smoothing)
            self.scaler.scale(loss * scale).backward()
            loss_sum += loss.item()
            nll_sum += nll.item()
        step = self.progress.step + 1
        lr = learning_rate(step, self.config.model.d_model, t.warmup_steps, t.lr_scale)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.scaler.unscale_(self.optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), t.clip_norm if t.clip_norm > 0 else math.inf)
        finite = bool(torch.isfinite(grad_norm))
        if finite or self.precision == "fp16":  # the fp16 scaler skips non-finite steps itself
            self.scaler.step(self.optimizer)
            self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        return {"loss_sum": loss_sum, "nll_sum": nll_sum, "tokens": ntokens, "lr": lr,
                "grad_norm": float(grad_norm), "finite": finite or self.precision == "fp16", "stopped": False}

    # ---------------------------------------------------------------- validation

    @torch.no_grad()
    def validate(self) -> dict:
        """Validation loss, NLL and perplexity per target token; identical for any world size."""
        self.model.eval()
        t = self.config.train
        batches = eval_batches(self.valid, t.max_tokens, self.config.model.max_positions)
        loss_sum = nll_sum = tokens = 0.0
        for batch in batches[self.dist.rank::self.dist.world_size]:
            batch = batch.to(self.device)
            with autocast_context(self.device, self.precision):
                logits = self.model(batch.src, batch.tgt_in)
            loss, nll = label_smoothed_loss(logits, batch.tgt_out, t.label_smoothing)
            loss_sum, nll_sum, tokens = loss_sum + loss.item(), nll_sum + nll.item(), tokens + batch.tgt_tokens
        loss_sum, nll_sum, tokens = distributed.all_reduce_sum([loss_sum, nll_sum, tokens], self.device)
        result = {"loss": loss_sum / tokens, "nll": nll_sum / tokens, "ppl": math.exp(min(nll_sum / tokens, 50))}
        if t.valid_bleu:
            result["bleu"] = self.valid_bleu()
        return result

    def valid_bleu(self) -> float:
        """Greedy-decode the validation sources (on rank 0) and score them with sacreBLEU."""
        from mtrain.decode import Translator
        from mtrain.evaluate import corpus_scores

        score = None
        if self.dist.is_main:
            translator = Translator(self.model, self.tokenizer, self.config.decode, self.device, self.precision)
            hyps = translator.translate(self.data.raw_text("valid", self.data.src_lang), beam=1)
            score = corpus_scores(hyps, [self.data.raw_text("valid", self.data.tgt_lang)])["bleu"]
        return distributed.broadcast_object(score)

    # ---------------------------------------------------------------- checkpoints and logs

    def state_dict(self) -> dict:
        rng = {"cpu": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None}
        return {
            "format": checkpoint.FORMAT,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "progress": vars(self.progress).copy(),
            "elapsed_s": self.elapsed(),
            "rng": distributed.all_gather_object(rng),  # every rank's stream, for exact resumption
            "config": self.config.to_dict(),
            "spm": {"src": self.tokenizer.src_model, "tgt": self.tokenizer.tgt_model},
        }

    def elapsed(self) -> float:
        """Training wall-clock of this run, earlier processes included."""
        return self.elapsed_before + time.time() - self.started

    def save(self, numbered: bool = False, best: bool = False) -> None:
        """checkpoint_last.pt always; checkpoint_<step>.pt and checkpoint_best.pt when asked."""
        start = time.time()
        state = self.state_dict()  # a collective: every rank takes part
        if not self.dist.is_main:
            return
        last = self.out_dir / "checkpoint_last.pt"
        checkpoint.save(state, last)
        names = [last.name]
        if numbered:
            names.append(f"checkpoint_{self.progress.step}.pt")
            checkpoint.link_copy(last, self.out_dir / names[-1])
            for old in checkpoint.numbered(self.out_dir)[: -self.config.train.keep_last]:
                old.unlink(missing_ok=True)
        if best:
            names.append("checkpoint_best.pt")
            checkpoint.link_copy(last, self.out_dir / names[-1])
        log.info("saved %s at step %d in %.2f s", ", ".join(names), self.progress.step, time.time() - start)

    def write_metrics(self, record: dict) -> None:
        """One JSON line per record, with the wall-clock time (UTC) it was written."""
        if not self.dist.is_main:
            return
        record = {**record, "time": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        with open(self.metrics_file, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        if self.tensorboard is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key not in ("step", "epoch"):
                    self.tensorboard.add_scalar(f"{record['kind']}/{key}", value, record["step"])

    # ---------------------------------------------------------------- the loop

    def open_logs(self) -> None:
        """The run directory, TensorBoard when installed (and saying so), the run's opening line."""
        t = self.config.train
        if self.dist.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.tensorboard = SummaryWriter(self.out_dir / "tensorboard")
                log.info("TensorBoard logging on: tensorboard --logdir %s", self.out_dir / "tensorboard")
            except ImportError:
                log.info("TensorBoard logging off (pip install tensorboard to turn it on); metrics go to %s", self.metrics_file)
        n_params = sum(x.numel() for x in self.model.parameters())
        log.info("model: %.1fM parameters; device %s, %s, %d CPU thread(s) per process, world size %d, "
                 "%d micro-batch(es) of <=%d tokens per rank and step", n_params / 1e6, self.device, self.precision,
                 torch.get_num_threads(), self.dist.world_size, t.update_freq, t.max_tokens)

    def run(self) -> dict:
        t, p = self.config.train, self.progress
        if p.step >= t.max_steps:
            log.info("already finished at step %d (max_steps %d); raise train.max_steps to continue", p.step, t.max_steps)
            return {"step": p.step, "epoch": p.epoch, "valid": {}}
        self.open_logs()
        window = {"loss_sum": 0.0, "nll_sum": 0.0, "tokens": 0.0, "grad_norm": 0.0, "steps": 0}
        window_start = last_save = self.started = time.time()
        first_step = p.step + 1  # the first log record comes right after it
        bad_steps, saved_step, interrupted = 0, p.step, False
        final_valid: dict = {}
        bar = tqdm(total=t.max_steps, initial=p.step, unit="step", desc="training", file=sys.stderr, dynamic_ncols=True,
                   disable=not (self.dist.is_main and sys.stderr.isatty()))
        while p.step < t.max_steps:
            if p.epoch_step >= self.batches.steps_in_epoch(p.epoch):
                if self.batches.steps_in_epoch(p.epoch) == 0:
                    raise MtrainError(f"the training data gives no complete step: fewer than world_size x update_freq = {self.dist.world_size * t.update_freq} batches per epoch; lower train.max_tokens or train.update_freq")
                if t.max_epochs and p.epoch >= t.max_epochs:
                    break
                p.epoch, p.epoch_step = p.epoch + 1, 0
                continue
            result = self.train_step(self.batches.step(p.epoch, p.epoch_step))
            if result["stopped"]:
                interrupted = True
                break
            p.epoch_step += 1
            if not result["finite"]:
                bad_steps += 1
                log.warning("step %d: loss or gradient is not finite; update skipped (%d in a row)", p.step + 1, bad_steps)
                if bad_steps >= MAX_BAD_STEPS:
                    raise MtrainError(f"{bad_steps} non-finite steps in a row at step {p.step + 1}: training diverged; lower train.lr_scale, set train.clip_norm, or use fp32/bf16")
                continue
            bad_steps = 0
            p.step += 1
            bar.update(1)
            for key in ("loss_sum", "nll_sum", "tokens", "grad_norm"):
                window[key] += result[key]
            window["steps"] += 1

            if p.step % t.log_every == 0 or p.step == t.max_steps or p.step == first_step:
                loss_sum, nll_sum, tokens = distributed.all_reduce_sum([window["loss_sum"], window["nll_sum"], window["tokens"]], self.device)
                elapsed = time.time() - window_start
                record = {"kind": "train", "step": p.step, "epoch": p.epoch, "lr": result["lr"],
                          "loss": loss_sum / tokens, "nll": nll_sum / tokens, "ppl": math.exp(min(nll_sum / tokens, 50)),
                          "tgt_tokens_per_s": tokens / elapsed, "grad_norm": window["grad_norm"] / window["steps"],
                          "elapsed_s": self.elapsed()}
                self.write_metrics(record)
                if self.dist.is_main:
                    eta = (time.time() - self.started) / (p.step - first_step + 1) * (t.max_steps - p.step)
                    log.info("step %d/%d (%.1f%%) | epoch %d | lr %.2e | loss %.3f | nll %.3f | ppl %.2f | %.0f tgt tok/s | gnorm %.2f | "
                             "%s elapsed | ETA %s", p.step, t.max_steps, 100 * p.step / t.max_steps, p.epoch, record["lr"], record["loss"],
                             record["nll"], record["ppl"], record["tgt_tokens_per_s"], record["grad_norm"], _clock(record["elapsed_s"]),
                             _clock(eta))
                    bar.set_postfix(loss=f"{record['loss']:.3f}", tok_s=f"{record['tgt_tokens_per_s']:.0f}", refresh=False)
                window = dict.fromkeys(window, 0.0)
                window_start = time.time()

            last_step = p.step >= t.max_steps
            stop_early = False
            best = False
            if self.valid is not None and ((t.valid_every and p.step % t.valid_every == 0) or last_step):
                final_valid = self.validate()
                best = final_valid["loss"] < p.best_valid_loss
                if best:
                    p.best_valid_loss, p.bad_validations = final_valid["loss"], 0
                else:
                    p.bad_validations += 1
                stop_early = bool(t.patience) and p.bad_validations >= t.patience
                self.write_metrics({"kind": "valid", "step": p.step, "epoch": p.epoch, **final_valid, "elapsed_s": self.elapsed()})
                if self.dist.is_main:
                    bleu = f" | bleu {final_valid['bleu']:.2f}" if "bleu" in final_valid else ""
                    log.info("valid step %d | loss %.3f | nll %.3f | ppl %.2f%s%s", p.step, final_valid["loss"], final_valid["nll"],
                             final_valid["ppl"], bleu, " | best" if best else "")
            numbered = (t.save_every and p.step % t.save_every == 0) or last_step or stop_early
            timed = t.save_every_minutes and time.time() - last_save >= 60 * t.save_every_minutes
            if numbered or best or timed:
                self.save(numbered=bool(numbered), best=best)
                last_save = time.time()
                saved_step = p.step if numbered else saved_step
            if stop_early:
                log.info("early stop: no better validation loss in %d validations", t.patience)
                break

        bar.close()
        if interrupted:
            self.save()
            name = signal.Signals(self.stop_signal).name if self.stop_signal else "a signal to another rank"
            raise Interrupted(f"interrupted by {name} at step {p.step}; saved {self.out_dir / 'checkpoint_last.pt'}; run the same command again to resume")
        if saved_step != p.step:  # stopped by max_epochs between two saves
            if self.valid is not None:
                final_valid = self.validate()
            self.save(numbered=True)
        if self.dist.is_main:
            done = checkpoint.numbered(self.out_dir)[-t.average_last:]
            if done:
                checkpoint.save(checkpoint.average(done), self.out_dir / "checkpoint_avg.pt")
                log.info("checkpoint_avg.pt averages %d checkpoint(s): %s", len(done), ", ".join(x.name for x in done))
            log.info("training finished at step %d (epoch %d) in %s", p.step, p.epoch, _clock(self.elapsed()))
        if self.tensorboard is not None:
            self.tensorboard.close()
        return {"step": p.step, "epoch": p.epoch, "valid": final_valid}



def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def train(config: Config, resume: str | None = None, restart: bool = False) -> dict:
    """Prepare data (once), build or resume the model, train; returns the final step and validation."""
    dist = distributed.from_env()
    device = select_device(config.train.device, dist.local_rank)
    set_threads(config.train.threads)
    out_dir = Path(config.out_dir)
    # Data is prepared before the process group exists: on a big corpus it takes longer than any
    # sensible collective timeout. Rank 0 prepares, the others wait for its manifest.
    if dist.is_main:
        prepare(config)
        save_config(config, out_dir / "config.yaml")
    else:
        wait_for_prepared(config)
    distributed.init(dist, device, config.train.dist_timeout_minutes)
    try:
        trainer = Trainer(config, PreparedData(config.data_dir), device, dist)
        last = out_dir / "checkpoint_last.pt"
        if resume:
            trainer.resume(Path(resume))
        elif last.is_file() and not restart:
            trainer.resume(last)
        else:
            if restart and dist.is_main:
                for old in [last, out_dir / "checkpoint_best.pt", out_dir / "checkpoint_avg.pt", out_dir / "metrics.jsonl", *checkpoint.numbered(out_dir)]:
                    old.unlink(missing_ok=True)
                shutil.rmtree(out_dir / "tensorboard", ignore_errors=True)
            distributed.barrier()
            trainer.wrap()
        previous = {sig: signal.signal(sig, lambda signum, frame: setattr(trainer, "stop_signal", signum)) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            return trainer.run()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    finally:
        distributed.shutdown()


def wait_for_prepared(config: Config, poll_seconds: float = 2.0) -> None:
    """Block until rank 0 has written prepared data matching this config and its inputs."""
    wanted = fingerprint(config)
    manifest = config.data_dir / "manifest.json"
    while True:
        try:
            if json.loads(manifest.read_text()).get("fingerprint") == wanted:
                return
        except (OSError, json.JSONDecodeError):
            pass
        time.sleep(poll_seconds)
