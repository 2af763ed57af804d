"""Lightning plumbing shared by every stage: run folders, atomic checkpoints, resume, export.

A run folder holds ``config.yaml`` (the config it was started with), ``checkpoints/last.ckpt``
(written atomically every ``checkpoint_every`` steps and at the end), TensorBoard logs in
``tb/``, and the stage's exported weights, refreshed at every checkpoint.
"""

from __future__ import annotations

import json
import logging
import math
import os
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import yaml
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from pytorch_lightning.callbacks import TQDMProgressBar
from pytorch_lightning.core.optimizer import LightningOptimizer
from pytorch_lightning.loggers import TensorBoardLogger
from pytorch_lightning.utilities.types import OptimizerLRSchedulerConfig
from torch.optim import Optimizer
from torch.utils.data import DataLoader, IterableDataset

from jbdiff.core.atomic import atomic_path, remove_stale_parts
from jbdiff.core.config import TrainConfig, load_yaml
from jbdiff.core.errors import JbdiffError
from jbdiff.core.state_dict import read_checkpoint

logger = logging.getLogger(__name__)

LAST_CHECKPOINT = Path("checkpoints") / "last.ckpt"


@dataclass(frozen=True)
class FitOptions:
    """How to run a training job: step and time limits (default: the config's steps), hardware, precision, progress bar."""

    max_steps: int | None = None
    max_minutes: float | None = None
    accelerator: str = "auto"
    devices: int | str = "auto"
    strategy: str = "auto"
    precision: str | None = None
    progress: bool = True


DEFAULT_FIT = FitOptions()


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary file and renames it, so a kill never corrupts one."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | os.PathLike[str], storage_options: Any = None) -> None:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(target) as tmp:
            torch.save(checkpoint, tmp)

    def load_checkpoint(self, path: str | os.PathLike[str], map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        """Read a checkpoint with torch's weights-only unpickler, whatever Lightning asks for."""
        return read_checkpoint(path)


class RunCheckpoint(pl.Callback):
    """Saves ``last.ckpt`` every ``every`` steps and at the end, then exports the stage."""

    def __init__(self, run_dir: Path, every: int, export: Callable[[pl.LightningModule, Path], None]) -> None:
        self.run_dir, self.every, self.export = run_dir, max(1, every), export
        self.saved_step = -1

    def _save(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        trainer.save_checkpoint(self.run_dir / LAST_CHECKPOINT)
        if trainer.is_global_zero:
            self.export(module, self.run_dir)
        self.saved_step = trainer.global_step

    def on_train_batch_end(self, trainer: pl.Trainer, module: pl.LightningModule, *args: Any) -> None:
        step = trainer.global_step
        if step and step % self.every == 0 and step != self.saved_step:
            self._save(trainer, module)

    def on_train_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self._save(trainer, module)


@dataclass(frozen=True)
class ValidationConfig:
    """A config's ``validation`` section: how often, and on how much held-out data, a run is validated."""

    every: int = 200
    windows: int = 16
    """Held-out items (latent windows, or audio crops for the Dance stage)."""
    bins: int = 5
    seed: int = 0


VAL_LOG = "val.jsonl"
BEST = "best"


class Validation(pl.Callback):
    """Every ``every`` optimizer steps (and at the end), a held-out evaluation of the run.

    ``evaluate(module)`` returns a dict with a scalar ``loss`` and optionally ``bins``, a
    list of per-noise-level dicts with a ``sigma``. Each result is appended as one JSON line
    to ``RUN/val.jsonl`` (with its step), its numbers logged to TensorBoard under ``val/``,
    and whenever the loss is the lowest so far (over the whole run, resumes included) the
    stage is exported to ``RUN/best/`` as well.
    """

    def __init__(
        self,
        run_dir: Path,
        every: int,
        evaluate: Callable[[pl.LightningModule], dict[str, Any]],
        export: Callable[[pl.LightningModule, Path], None],
    ) -> None:
        self.run_dir, self.every, self.evaluate, self.export = run_dir, max(1, every), evaluate, export
        self.done_step = -1
        self.best = min((row["loss"] for row in read_validation(run_dir)), default=math.inf)

    def _run(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        step = trainer.global_step
        if step == self.done_step or not trainer.is_global_zero:
            return
        self.done_step = step
        was_training = module.training
        module.eval()
        result = {"step": step, **self.evaluate(module)}
        module.train(was_training)
        experiment = getattr(trainer.logger, "experiment", None)
        if experiment is not None:
            experiment.add_scalar("val/loss", result["loss"], step)
            for row in result.get("bins", []):
                for key, value in row.items():
                    if key != "sigma":
                        experiment.add_scalar(f"val/{key}/sigma_{row['sigma']:.2f}", value, step)
        with (self.run_dir / VAL_LOG).open("a") as log:
            log.write(json.dumps(result) + "\n")
        if result["loss"] < self.best:
            self.best = result["loss"]
            self.export(module, self.run_dir / BEST)
        logger.info("step %d: validation loss %.4f (best %.4f)", step, result["loss"], self.best)

    def on_train_batch_end(self, trainer: pl.Trainer, module: pl.LightningModule, *args: Any) -> None:
        if trainer.global_step and trainer.global_step % self.every == 0:
            self._run(trainer, module)

    def on_train_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self._run(trainer, module)


def read_validation(run_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The validation results in ``RUN/val.jsonl``, oldest first (empty when there are none)."""
    path = Path(run_dir) / VAL_LOG
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def adam(params: Iterable[torch.nn.Parameter], lr: float, *, decoupled: bool = False, precision: str = "32-true") -> torch.optim.Optimizer:
    """Adam (AdamW when ``decoupled``), fused into one kernel where every parameter allows it.

    The fused step is about 4x faster than the per-tensor loop on CPU and avoids hundreds of
    small kernel launches on a GPU; it computes the same update. Under a mixed ``precision``
    Lightning clips the gradients itself and refuses optimizers that unscale them internally,
    so those runs take the unfused step.
    """
    params = list(params)
    fused = (
        bool(params)
        and "mixed" not in str(precision)
        and all(p.device.type in ("cpu", "cuda") and p.dtype.is_floating_point for p in params)
    )
    kind = torch.optim.AdamW if decoupled else torch.optim.Adam
    return kind(params, lr=lr, fused=fused or None)


def run_precision(module: pl.LightningModule) -> str:
    """The precision of the Trainer that runs ``module`` ("32-true" outside one, as in a benchmark's own loop)."""
    trainer = module._trainer
    return str(trainer.precision) if trainer is not None else "32-true"


def lr_schedule(optimizer: Optimizer, train: TrainConfig) -> OptimizerLRSchedulerConfig:
    """``optimizer`` with ``train``'s warmup and decay (:meth:`TrainConfig.lr_factor`), stepped per optimizer step."""
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, train.lr_factor)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


class EmaModule(pl.LightningModule):
    """A LightningModule that trains one net and keeps an EMA copy of it for export.

    The copy moves once per optimizer step (not per accumulated batch), before checkpoints see
    the step. Subclasses name the pair in :meth:`ema_pair`.
    """

    def ema_pair(self) -> tuple[torch.nn.Module, torch.nn.Module, float]:
        """(EMA copy, live net, decay)."""
        raise NotImplementedError

    def optimizer_step(
        self,
        epoch: int,
        batch_idx: int,
        optimizer: Optimizer | LightningOptimizer,
        optimizer_closure: Callable[[], Any] | None = None,
    ) -> None:
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        self.update_ema()

    @torch.no_grad()
    def update_ema(self) -> None:
        """Move every EMA parameter ``1 - decay`` of the way towards the live one (one fused op)."""
        ema, live, decay = self.ema_pair()
        torch._foreach_lerp_(list(ema.parameters()), list(live.parameters()), 1.0 - decay)

    def demo_due(self, batch_idx: int, every: int) -> bool:
        """Whether this batch completes an optimizer step that is a multiple of ``every``, on rank 0."""
        stepped = (batch_idx + 1) % self.trainer.accumulate_grad_batches == 0
        return bool(every) and stepped and self.global_step % every == 0 and self.trainer.is_global_zero


def check_finite(loss: torch.Tensor, step: int, run_dir: Path | None) -> None:
    """Stop training with a clear message when the loss is NaN or infinite."""
    if not torch.isfinite(loss):
        where = f"; the last good checkpoint is kept in {run_dir / LAST_CHECKPOINT}" if run_dir else ""
        raise JbdiffError(f"training diverged at step {step}: the loss is {loss.item()}{where}")


def prepare_run_dir(run_dir: Path, config: dict[str, Any], config_source: str) -> Path | None:
    """Create the run folder and store its config; return the checkpoint to resume from, if any.

    Temporary files left by a killed run are removed.

    Resuming with a config whose ``model`` section differs is refused: the weights would not fit.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    for folder in (run_dir, run_dir / LAST_CHECKPOINT.parent):
        if folder.is_dir():
            remove_stale_parts(folder)
    stored = run_dir / "config.yaml"
    last = run_dir / LAST_CHECKPOINT
    if stored.is_file() and last.is_file():
        previous = load_yaml(stored)
        if previous.get("model") != config.get("model"):
            raise JbdiffError(
                f"{run_dir}: was trained with a different model config than {config_source}; use a new --out folder"
            )
        return last
    with atomic_path(stored) as tmp:
        tmp.write_text(yaml.safe_dump(config, sort_keys=False))
    return None


def checkpoint_step(path: Path | None) -> int:
    """The global step stored in a Lightning checkpoint (0 when there is none).

    The file is read weights-only, so a run folder from elsewhere cannot run code on resume;
    one that cannot be read so is refused before Lightning sees it.
    """
    if path is None:
        return 0
    try:
        step = read_checkpoint(path, mmap=True).get("global_step", 0)
    except JbdiffError as err:
        raise JbdiffError(f"{err}; not resuming from it (move it away to train from scratch)") from None
    if not isinstance(step, int) or step < 0:
        raise JbdiffError(f"{path}: its global_step is not a step count; not resuming from it (move it away to train from scratch)")
    return step


def fit_stage(
    module: pl.LightningModule,
    data: IterableDataset,  # type: ignore[type-arg]
    run_dir: Path,
    train: TrainConfig,
    export: Callable[[pl.LightningModule, Path], None],
    options: FitOptions,
    *,
    resume: Path | None = None,
    hparams: dict[str, Any] | None = None,
    validation: Validation | None = None,
) -> None:
    """Train ``module`` on batches of ``data`` until ``max_steps``, resuming from ``resume``.

    ``hparams`` (the stage's config) is logged with the run; ``export`` writes the stage's
    weights at every checkpoint; ``validation`` (optional) evaluates held-out data.
    """
    loader = DataLoader(data, batch_size=train.batch_size, num_workers=train.num_workers, persistent_workers=train.num_workers > 0)
    if hparams:
        module.hparams.update(hparams)
    trainer = build_trainer(run_dir, train, export, options, [validation] if validation else [])
    if trainer.world_size > 1 and trainer.is_global_zero:
        logger.info("training on %d processes (%s)", trainer.world_size, type(trainer.strategy).__name__)
    trainer.fit(module, loader, ckpt_path=resume)


def build_trainer(
    run_dir: Path,
    train: TrainConfig,
    export: Callable[[pl.LightningModule, Path], None],
    options: FitOptions,
    extra_callbacks: list[pl.Callback] | None = None,
) -> pl.Trainer:
    """A Lightning Trainer with atomic checkpoints, TensorBoard logs and a progress bar.

    Lightning's own info lines (hardware summary, tips) are silenced; jbdiff logs what matters.
    """
    for name in ("pytorch_lightning", "lightning_fabric", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*IterableDataset.*__len__.*")
    warnings.filterwarnings("ignore", ".*LeafSpec.*")
    callbacks: list[pl.Callback] = [*(extra_callbacks or []), RunCheckpoint(run_dir, train.checkpoint_every, export)]
    if options.progress:
        callbacks.append(TQDMProgressBar(refresh_rate=1))
    return pl.Trainer(
        default_root_dir=run_dir,
        max_steps=options.max_steps if options.max_steps is not None else train.max_steps,
        max_time=timedelta(minutes=options.max_minutes) if options.max_minutes else None,
        accelerator=options.accelerator,
        devices=options.devices,
        strategy=options.strategy,
        precision=options.precision or train.precision,
        accumulate_grad_batches=train.accumulate_grad_batches,
        gradient_clip_val=train.grad_clip or None,
        log_every_n_steps=train.log_every,
        logger=TensorBoardLogger(save_dir=str(run_dir), name="tb", version=""),
        callbacks=callbacks,
        plugins=[AtomicCheckpointIO()],
        enable_checkpointing=False,
        enable_progress_bar=options.progress,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        use_distributed_sampler=False,
    )
