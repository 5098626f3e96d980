"""Training checkpoints: plain tensors and numbers only, loaded with ``weights_only=True``."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pinnlab.io.atomic import atomic_path
from pinnlab.losses.hybrid import PlateauState
from pinnlab.solvers.loop import History, TrainState
from pinnlab.solvers.optim import AbstractOptimizer

FORMAT = 1


class CheckpointError(ValueError):
    """A checkpoint that cannot be used (missing, corrupted, or from another config)."""


def config_hash(config_yaml: str) -> str:
    return hashlib.sha256(config_yaml.encode()).hexdigest()


def save_checkpoint(
    path: str | Path, state: TrainState, optimizer: AbstractOptimizer, config_yaml: str
) -> None:
    """Write everything :class:`TrainState` holds to ``path`` atomically."""
    history = {k: torch.as_tensor(v) for k, v in state.history.arrays().items()}
    payload: dict[str, Any] = {
        "format": FORMAT,
        "config_hash": config_hash(config_yaml),
        "step": state.step,
        "params": {k: v.detach().cpu() for k, v in state.params.items()},
        "opt_state": {k: (v.detach().cpu() if isinstance(v, torch.Tensor) else v)
                      for k, v in optimizer.state_to_dict(state.opt_state).items()},
        "history": history,
        "plateau": None if state.plateau is None else {
            "ema": state.plateau.ema, "best": state.plateau.best,
            "best_step": state.plateau.best_step,
            "switched_at": -1 if state.plateau.switched_at is None else state.plateau.switched_at,
        },
        "weighting": state.weighting,
        "train_seconds": state.train_seconds,
        "timed_steps": state.timed_steps,
        "wall_s": state.wall_s,
        "window_loss": torch.tensor(state.window_loss, dtype=torch.float64),
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(
    path: str | Path, optimizer: AbstractOptimizer, config_yaml: str,
    device: torch.device, dtype: torch.dtype,
) -> TrainState:
    """Read a checkpoint written by :func:`save_checkpoint` (safe: ``weights_only``)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {str(path)!r} to resume from")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means corrupted
        raise CheckpointError(
            f"checkpoint {str(path)!r} is corrupted or unreadable ({type(err).__name__}); "
            "delete it to start over"
        ) from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {str(path)!r} has an unknown format")
    if data.get("config_hash") != config_hash(config_yaml):
        raise CheckpointError(
            f"checkpoint {str(path)!r} was written for a different configuration; "
            "resume with the same config and overrides, or use --overwrite to start over"
        )
    try:
        params = {k: v.to(device=device, dtype=dtype) for k, v in data["params"].items()}
        opt = {k: (v.to(device=device, dtype=dtype) if isinstance(v, torch.Tensor)
                   and v.is_floating_point() else v) for k, v in data["opt_state"].items()}
        history = History.from_arrays({k: np.asarray(v) for k, v in data["history"].items()})
        plateau = None
        if data["plateau"] is not None:
            p = data["plateau"]
            plateau = PlateauState(float(p["ema"]), float(p["best"]), int(p["best_step"]),
                                   None if p["switched_at"] < 0 else int(p["switched_at"]))
        return TrainState(
            params=params, opt_state=optimizer.state_from_dict(opt), step=int(data["step"]),
            history=history, plateau=plateau, train_seconds=float(data["train_seconds"]),
            timed_steps=int(data["timed_steps"]), wall_s=float(data["wall_s"]),
            window_loss=[float(v) for v in data["window_loss"]], weighting=data["weighting"],
        )
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise CheckpointError(f"checkpoint {str(path)!r} is incomplete ({err})") from None
