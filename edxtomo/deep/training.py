"""Seeded, resumable training loop shared by the denoiser and the view-enrichment net.

Reproducibility: the network is initialised under a forked global RNG seeded from the
configuration, every batch draw uses an explicit :class:`torch.Generator`, and cuDNN is put
in deterministic mode while training. The same seed on the same device therefore gives the
same weights, and a run resumed from a checkpoint gives the same weights as one that was
never interrupted (the checkpoint holds the generator state and the optimiser moments).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from edxtomo.io import atomic_path

log = logging.getLogger(__name__)

# Gradient-norm ceiling: the Poisson loss has rare huge gradients where a rate nears 0.
CLIP_NORM = 1.0


class TrainingDivergedError(RuntimeError):
    """The training loss became NaN or infinite."""


@contextlib.contextmanager
def deterministic() -> Iterator[None]:
    """Deterministic kernels for the duration of the block (settings restored afterwards).

    cuDNN is put in deterministic mode, and PyTorch warns if an operation without a
    deterministic CUDA implementation runs (none does in these networks: the padding and
    gathers act on inputs, which need no gradient). Deterministic mode's filling of every
    new tensor with NaN is turned off: it only exposes reads of uninitialised memory, which
    no kernel here makes, and it took 10% of a CPU training step (30,000 fills per 150).
    """
    saved = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark,
             torch.are_deterministic_algorithms_enabled(),
             torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.utils.deterministic.fill_uninitialized_memory)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = False
    try:
        yield
    finally:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[:2]
        torch.use_deterministic_algorithms(saved[2], warn_only=saved[3])
        torch.utils.deterministic.fill_uninitialized_memory = saved[4]


def seeded_module(factory: Callable[[], torch.nn.Module], seed: int,
                  device: torch.device) -> torch.nn.Module:
    """Build a module with its initial weights drawn from ``seed``, global RNG untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = factory()
    return module.to(device)


def make_generator(seed: int, device: torch.device) -> torch.Generator:
    """A :class:`torch.Generator` on ``device`` seeded with ``seed``."""
    generator = torch.Generator(device=device)
    generator.manual_seed(int(seed))
    return generator


def fingerprint(*arrays: np.ndarray | torch.Tensor, **settings: Any) -> str:
    """Hash of input data and settings: a checkpoint only resumes the run it belongs to."""
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    for array in arrays:
        data = array.detach().cpu().numpy() if isinstance(array, torch.Tensor) else array
        data = np.ascontiguousarray(data)
        digest.update(str((data.shape, data.dtype.str)).encode())
        digest.update(data.tobytes())
    return digest.hexdigest()


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write a checkpoint atomically (an interrupted write never leaves a broken file)."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def train(
    model: torch.nn.Module,
    loss_fn: Callable[[torch.nn.Module, torch.Generator], torch.Tensor],
    generator: torch.Generator,
    *,
    steps: int,
    lr: float,
    name: str,
    key: str,
    checkpoint: Path | None = None,
    checkpoint_every: int = 50,
    progress: bool = True,
) -> list[float]:
    """Adam with cosine learning-rate decay; checkpoints, resume and divergence check.

    Parameters
    ----------
    model : torch.nn.Module
        Trained in place.
    loss_fn : callable
        ``loss_fn(model, generator) -> scalar tensor``: draws one batch with ``generator``
        and returns its loss.
    generator : torch.Generator
        The only source of randomness of the batches; saved in checkpoints.
    steps : int
        Optimiser steps.
    lr : float
        Initial learning rate, decayed by a cosine to 5% of it at ``steps``.
    name : str
        Label for the progress bar, the log and error messages.
    key : str
        :func:`fingerprint` of the data and settings. A checkpoint with another key is
        ignored (and overwritten).
    checkpoint : Path, optional
        Checkpoint file; when it exists with the same key, training resumes from it.
    checkpoint_every : int
        Steps between checkpoints (one is also written at the end).
    progress : bool
        Show a tqdm bar with the loss.

    Returns
    -------
    list of float
        The loss of every step, from step 0 (restored ones included on resume).

    Raises
    ------
    TrainingDivergedError
        When a loss is NaN or infinite.
    """
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda k: 0.05 + 0.475 * (1 + math.cos(math.pi * min(k / max(steps, 1), 1)))
    )
    losses: list[float] = []
    if checkpoint is not None and checkpoint.exists():
        state = torch.load(checkpoint, map_location="cpu", weights_only=False)
        if state.get("key") == key:
            model.load_state_dict(state["model"])
            optimiser.load_state_dict(state["optimiser"])
            schedule.load_state_dict(state["schedule"])
            generator.set_state(state["generator"])
            losses = list(state["losses"])
            log.info("%s: resumed from %s at step %d of %d", name, checkpoint, len(losses),
                     steps)
        else:
            log.info("%s: checkpoint %s belongs to other data or settings; starting afresh",
                     name, checkpoint)

    def snapshot() -> None:
        save_checkpoint(checkpoint, {
            "key": key, "model": model.state_dict(), "optimiser": optimiser.state_dict(),
            "schedule": schedule.state_dict(), "generator": generator.get_state(),
            "losses": losses,
        })

    model.train()
    bar = tqdm(range(len(losses), steps), desc=name, initial=len(losses), total=steps,
               disable=not progress, mininterval=1.0)
    with deterministic():
        for step in bar:
            optimiser.zero_grad(set_to_none=True)
            loss = loss_fn(model, generator)
            value = float(loss.detach())
            if not math.isfinite(value):
                raise TrainingDivergedError(
                    f"{name}: the loss became {value} at step {step}; lower the learning "
                    "rate or check the input for NaN/inf values"
                )
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP_NORM)
            optimiser.step()
            schedule.step()
            losses.append(value)
            bar.set_postfix(loss=f"{value:.5g}")
            if checkpoint is not None and (step + 1) % checkpoint_every == 0:
                snapshot()
    if checkpoint is not None and len(losses) % checkpoint_every:
        snapshot()
    if losses:
        tail = losses[-max(1, len(losses) // 10):]
        log.info("%s: %d steps, final loss %.6g (mean of the last 10%%)", name, len(losses),
                 float(np.mean(tail)))
    model.eval()
    return losses
