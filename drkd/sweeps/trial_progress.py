"""One line per trial per epoch on the driver's terminal, and one when a trial ends.

With the workers' own output kept in Ray's log files (``log_to_driver=False`` unless ``--verbose``),
this and Tune's live table are what a sweep prints while it runs.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from ray.tune import Callback

PROGRESS_METRICS = ("mAP", "AP_S", "AP_M", "AP_L")


def progress_line(trial_id: str, result: dict[str, Any], total_epochs: int | None) -> str:
    """``trial <id> epoch <e>/<E>: mAP .. AP_S .. AP_M .. AP_L .. loss .. (<s> s)`` for one epoch's result.

    Args:
        trial_id: Tune's trial id.
        result: the trial's reported metrics (``epoch``, ``mAP``, ..., ``loss_total``,
            ``epoch_time_s``; missing ones are left out of the line).
        total_epochs: the trial's ``train.epochs`` (``None``: unknown, shown as ``?``).
    """
    parts = [f"{name} {float(result[name]):.2f}" for name in PROGRESS_METRICS if result.get(name) is not None]
    if result.get("loss_total") is not None:
        parts.append(f"loss {float(result['loss_total']):.3f}")
    line = f"trial {trial_id} epoch {result.get('epoch', '?')}/{total_epochs or '?'}: " + " ".join(parts)
    if result.get("epoch_time_s") is not None:
        line += f" ({float(result['epoch_time_s']):.0f} s)"
    if result.get("diverged"):
        line += f"; diverged ({result.get('diverged_reason', '?')})"
    return line


class TrialProgress(Callback):
    """Tune callback printing :func:`progress_line` for every epoch result, and how each trial ended.

    Args:
        total_epochs: the base config's ``train.total_epochs`` (a trial's own ``train.epochs``,
            where it sets one, wins).
        stream: where the lines go (default ``sys.stdout``, looked up when printing).
    """

    def __init__(self, total_epochs: int, stream: TextIO | None = None) -> None:
        self.total_epochs = total_epochs
        self.stream = stream
        self.last_epoch: dict[str, int] = {}

    def _print(self, line: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} {line}", file=self.stream or sys.stdout, flush=True)

    def _epochs(self, trial: Any) -> int:
        return int((trial.config or {}).get("train.epochs") or self.total_epochs)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        if "epoch" in result:
            self.last_epoch[trial.trial_id] = int(result["epoch"])
        self._print(progress_line(trial.trial_id, result, self._epochs(trial)))

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        reached, epochs = self.last_epoch.get(trial.trial_id), self._epochs(trial)
        if reached is None:
            return
        how = "finished" if reached >= epochs else "stopped early by the scheduler (ASHA)"
        self._print(f"trial {trial.trial_id} {how} at epoch {reached}/{epochs}")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        where = getattr(trial, "path", None) or getattr(trial, "local_path", None) or "its trial directory"
        self._print(f"trial {trial.trial_id} failed: see error.txt in {where} (--verbose shows the workers' output)")
