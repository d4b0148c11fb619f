"""One training step of :func:`bnn.train_stage`, as a callable the benchmark can time.

``train_stage`` runs its step inline, between the batch iterator and the per-epoch bookkeeping, so
:class:`TrainStep` replicates the body of its inner loop statement for statement, from the same
pieces of ``bnn.train`` (the forward pass, optimizer and schedule from ``stage_parts``): the
saturation probe on every ``SATURATION_EVERY``-th step of an epoch, forward, cross-entropy,
``loss.item()`` and the non-finite check, ``zero_grad``, backward, the dead-weight tracker around
``optimizer.step()``, the sign tracker after it, and the epoch's loss, accuracy and saturation sums.
tests/study/test_benchmark.py trains a tiny model an epoch with each and requires the same weights
and the same epoch record (every key ``train_stage`` reports from its steps), so a change to that
loop which the replica misses fails there.

``diagnostics=False`` drops the sign tracker, the dead-weight tracker and the saturation probe
(``train_stage(track_signs=False)`` drops the first two only): the loop with no observer at all,
the baseline of the diagnostics' cost. ``cfg.compile`` compiles the forward pass as ``train_stage``
does. Not replicated, as params.yaml turns it off: distillation (a teacher's forward pass). The
per-epoch work (schedule, validation, epoch summaries) is not part of a step.
"""

from __future__ import annotations

import math
from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bnn import NonFiniteLossError, StageConfig, set_mode
from bnn.binarize import recu_tau
from bnn.diagnostics import DeadWeightTracker, SignTracker, saturation_fraction, saturation_probe
from bnn.layers import set_recu_tau
from bnn.train import SATURATION_EVERY, stage_parts


class TrainStep:
    """``model`` trained in ``mode`` with ``cfg``'s optimizer at its first epoch's learning rate and
    ReCU clamp, as ``train_stage`` sets them up; call it with one batch per step."""

    def __init__(self, model: nn.Module, cfg: StageConfig, mode: str, diagnostics: bool):
        self.model = set_mode(model, mode)
        self.forward, self.optimizer, _ = stage_parts(model, cfg)
        set_recu_tau(model, recu_tau(0.0, *cfg.recu_tau))
        self.tracker = SignTracker(model) if diagnostics else None
        self.dead = DeadWeightTracker(model) if diagnostics else None
        self.probe = diagnostics
        self.start_epoch()

    def start_epoch(self) -> None:
        """What ``train_stage`` resets before an epoch's first step."""
        self.model.train()
        self.step = 0
        self.loss_sum = 0.0
        self.correct = torch.zeros((), dtype=torch.int64)
        self.seen = 0
        self.saturation = {"saturated": 0, "total": 0}

    def __call__(self, x: Tensor, y: Tensor) -> None:
        probed = self.probe and self.step % SATURATION_EVERY == 0
        with saturation_probe(self.model) if probed else nullcontext({}) as counts:
            logits = self.forward(x)
        for key, count in counts.items():
            self.saturation[key] += count
        loss = F.cross_entropy(logits, y)
        value = loss.item()
        if not math.isfinite(value):
            raise NonFiniteLossError(f"loss became {value} at step {self.step + 1}")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.dead is not None:
            self.dead.before_step()
        self.optimizer.step()
        if self.dead is not None:
            self.dead.after_step()
        if self.tracker is not None:
            self.tracker.step()
        self.loss_sum += value * len(y)
        self.correct += (logits.detach().argmax(1) == y).sum()
        self.seen += len(y)
        self.step += 1

    def epoch_record(self) -> dict[str, float]:
        """What ``train_stage``'s epoch record says of the steps since :meth:`start_epoch` (the
        keys its validation pass adds left out): how the tests hold the replica to the original."""
        return {
            "train_loss": self.loss_sum / self.seen,
            "train_acc": int(self.correct) / self.seen,
            "saturation_train": saturation_fraction(self.saturation),
            **(self.tracker.epoch_summary() if self.tracker is not None else {}),
            **(self.dead.epoch_summary() if self.dead is not None else {}),
        }
