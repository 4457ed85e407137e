"""Which floating-point precision a run trains and evaluates in: autocast dtype and loss scaling."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from drkd.config.schema import TrainSettings

_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class Precision:
    """The autocast dtype of forward passes (``None``: full float32) and whether losses need scaling.

    float16 has a narrow exponent range, so its gradients need a ``GradScaler``; bfloat16 keeps
    float32's range and needs none.
    """

    device_type: str
    dtype: torch.dtype | None = None

    @property
    def name(self) -> str:
        """``float32``, ``float16`` or ``bfloat16``: the dtype forward passes compute in."""
        return str(self.dtype or torch.float32).removeprefix("torch.")

    def autocast(self) -> contextlib.AbstractContextManager:
        """A ``torch.autocast`` context for forward passes (a no-op one at full precision)."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def grad_scaler(self) -> torch.amp.GradScaler | None:
        """A fresh ``GradScaler`` when the dtype needs loss scaling (float16), else ``None``."""
        return torch.amp.GradScaler(self.device_type) if self.dtype == torch.float16 else None


def precision_for(train: TrainSettings, device: torch.device) -> Precision:
    """The precision ``train.amp`` / ``train.amp_dtype`` give on ``device``.

    Args:
        train: the run's settings; ``amp`` false: float32 everywhere. ``amp_dtype`` ``float16``
            (default) autocasts on CUDA only (CPU float16 kernels are slow and partial: a CPU run
            stays float32); ``bfloat16`` autocasts on CUDA and on CPU.
        device: where the run trains.

    Returns:
        The :class:`Precision` for the run.
    """
    if not train.amp:
        return Precision(device.type)
    dtype = _DTYPES[train.amp_dtype]
    if device.type == "cuda" or (device.type == "cpu" and dtype == torch.bfloat16):
        return Precision(device.type, dtype)
    return Precision(device.type)
