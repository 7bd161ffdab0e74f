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
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from edxtomo.io import atomic_path

log = logging.getLogger(__name__)

# Gradient-norm ceiling: the Poisson loss has rare huge gradients where a rate nears 0.
CLIP_NORM = 1.0


class TrainingDivergedError(RuntimeError):
    """The training loss became NaN or infinite."""


_GLOBAL_STATE = threading.Lock()
"""Guards torch's global settings and RNG, which trainings in parallel threads share."""
_deterministic_depth = 0
_saved_settings: tuple = ()


@contextlib.contextmanager
def deterministic() -> Iterator[None]:
    """Deterministic kernels for the duration of the block (settings restored afterwards).

    cuDNN is put in deterministic mode, and PyTorch warns if an operation without a
    deterministic CUDA implementation runs (none does in these networks: the padding and
    gathers act on inputs, which need no gradient). Deterministic mode's filling of every
    new tensor with NaN is turned off: it only exposes reads of uninitialised memory, which
    no kernel here makes, and it took 10% of a CPU training step (30,000 fills per 150).
    The settings are global: blocks open in several threads at once share them, and the
    last one to close restores them.
    """
    global _deterministic_depth, _saved_settings
    with _GLOBAL_STATE:
        if not _deterministic_depth:
            _saved_settings = (torch.backends.cudnn.deterministic,
                               torch.backends.cudnn.benchmark,
                               torch.are_deterministic_algorithms_enabled(),
                               torch.is_deterministic_algorithms_warn_only_enabled(),
                               torch.utils.deterministic.fill_uninitialized_memory)
            torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.utils.deterministic.fill_uninitialized_memory = False
        _deterministic_depth += 1
    try:
        yield
    finally:
        with _GLOBAL_STATE:
            _deterministic_depth -= 1
            if not _deterministic_depth:
                saved = _saved_settings
                torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[:2]
                torch.use_deterministic_algorithms(saved[2], warn_only=saved[3])
                torch.utils.deterministic.fill_uninitialized_memory = saved[4]


def seeded_module(factory: Callable[[], torch.nn.Module], seed: int,
                  device: torch.device) -> torch.nn.Module:
    """Build a module with its initial weights drawn from ``seed``, global RNG untouched
    (also while other threads build theirs)."""
    with _GLOBAL_STATE, torch.random.fork_rng(devices=[]):
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


def clip_per_group(parameters: Iterable[torch.nn.Parameter], max_norm: float,
                   groups: int = 1) -> None:
    """Scale the gradients of each of ``groups`` networks to a norm of at most ``max_norm``.

    The networks are blocks of the parameters' first axis (group-major, as
    :class:`edxtomo.deep.unet.UNet` lays them out), so a grouped module trains as its
    networks would apart; ``groups=1`` is ``torch.nn.utils.clip_grad_norm_``.
    """
    # (groups, ...) views of every gradient, whatever its memory layout
    grads = [p.grad.unflatten(0, (groups, -1)) for p in parameters if p.grad is not None]
    if not grads:
        return
    norms = torch.stack([g.pow(2).flatten(1).sum(dim=1) for g in grads]).sum(dim=0).sqrt()
    factor = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(factor.view(groups, *[1] * (g.dim() - 1)))


def train(
    model: torch.nn.Module,
    loss_fn: Callable[[torch.nn.Module, torch.Generator], torch.Tensor],
    generator: torch.Generator,
    *,
    steps: int,
    lr: float,
    name: str,
    key: str,
    groups: Sequence[str] = ("",),
    checkpoint: Path | None = None,
    checkpoint_every: int = 50,
    progress: bool = True,
) -> list[list[float]]:
    """Adam with cosine learning-rate decay; checkpoints, resume and divergence check.

    Parameters
    ----------
    model : torch.nn.Module
        Trained in place. With several ``groups``, its parameters are group-major blocks
        (:func:`clip_per_group`).
    loss_fn : callable
        ``loss_fn(model, generator) -> tensor of shape (len(groups),)`` (or a scalar for one
        group): draws one batch with ``generator`` and returns each network's loss. Their sum
        is minimised; the networks do not share parameters, so each follows its own loss.
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
    groups : sequence of str
        Label of each network of a grouped ``model`` (the elements); one empty label for a
        single network.
    checkpoint : Path, optional
        Checkpoint file; when it exists with the same key, training resumes from it.
    checkpoint_every : int
        Steps between checkpoints (one is also written at the end).
    progress : bool
        Show a tqdm bar with the loss.

    Returns
    -------
    list of list of float
        Per group, the loss of every step, from step 0 (restored ones included on resume).

    Raises
    ------
    TrainingDivergedError
        When a loss is NaN or infinite.
    """
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda k: 0.05 + 0.475 * (1 + math.cos(math.pi * min(k / max(steps, 1), 1)))
    )
    labels = [f"{name} [{group}]" if group else name for group in groups]
    history: list[list[float]] = []  # per step, the loss of every group
    if checkpoint is not None and checkpoint.exists():
        state = torch.load(checkpoint, map_location="cpu", weights_only=False)
        if state.get("key") == key:
            model.load_state_dict(state["model"])
            optimiser.load_state_dict(state["optimiser"])
            schedule.load_state_dict(state["schedule"])
            generator.set_state(state["generator"])
            history = [list(row) for row in state["losses"]]
            log.info("%s: resumed from %s at step %d of %d", name, checkpoint, len(history),
                     steps)
        else:
            log.info("%s: checkpoint %s belongs to other data or settings; starting afresh",
                     name, checkpoint)

    def snapshot() -> None:
        save_checkpoint(checkpoint, {
            "key": key, "model": model.state_dict(), "optimiser": optimiser.state_dict(),
            "schedule": schedule.state_dict(), "generator": generator.get_state(),
            "losses": history,
        })

    model.train()
    bar = tqdm(range(len(history), steps), desc=name, initial=len(history), total=steps,
               disable=not progress, mininterval=1.0)
    with deterministic():
        for step in bar:
            optimiser.zero_grad(set_to_none=True)
            loss = loss_fn(model, generator).reshape(len(groups))
            values = loss.detach().cpu().tolist()
            for label, value in zip(labels, values, strict=True):
                if not math.isfinite(value):
                    raise TrainingDivergedError(
                        f"{label}: the loss became {value} at step {step}; lower the learning "
                        "rate or check the input for NaN/inf values"
                    )
            loss.sum().backward()
            clip_per_group(model.parameters(), CLIP_NORM, len(groups))
            optimiser.step()
            schedule.step()
            history.append(values)
            bar.set_postfix(loss=f"{sum(values):.5g}")
            if checkpoint is not None and (step + 1) % checkpoint_every == 0:
                snapshot()
    if checkpoint is not None and len(history) % checkpoint_every:
        snapshot()
    per_group = [list(column) for column in zip(*history, strict=True)] or [[] for _ in groups]
    for label, losses in zip(labels, per_group, strict=True):
        if losses:
            tail = losses[-max(1, len(losses) // 10):]
            log.info("%s: %d steps, final loss %.6g (mean of the last 10%%)", label,
                     len(losses), float(np.mean(tail)))
    model.eval()
    return per_group


def write_losses(losses: dict[str, list[float]], path: str | Path) -> None:
    """The training loss of each network per step as a TSV: a ``step`` column, then one
    column per network (empty after a network's last step)."""
    table = pd.DataFrame({name: pd.Series(values) for name, values in losses.items()})
    with atomic_path(path) as tmp:
        table.to_csv(tmp, sep="\t", index_label="step")
