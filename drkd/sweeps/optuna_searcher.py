"""OptunaSearch that tells Optuna the truth about trials ASHA stopped early."""

from __future__ import annotations

from typing import Any

from optuna.trial import TrialState
from ray.tune.result import TRAINING_ITERATION
from ray.tune.search.optuna import OptunaSearch


def trial_epochs(result: dict, default: int) -> int:
    """The trial's configured epoch count from a Tune result, flattened (``config/train.epochs``) or not."""
    if "config/train.epochs" in result:
        return int(result["config/train.epochs"])
    config = result.get("config")
    if isinstance(config, dict) and "train.epochs" in config:
        return int(config["train.epochs"])
    return default


def startup_trials(num_trials: int, configured: int | None) -> int:
    """TPE's random start: ``configured`` (``sweep.random_trials``) or a third of the budget, at
    least 2 and at most Optuna's default 10, so TPE models the larger part of any budget."""
    if configured is not None:
        return configured
    return max(2, min(10, num_trials // 3))


class PrunedAwareOptunaSearch(OptunaSearch):
    """Ray records an early-stopped trial in Optuna as COMPLETE with its partial value, so TPE
    treats a 2-epoch mAP like a finished one. Here a trial whose last report is before its
    configured last epoch is told to Optuna as PRUNED, with the value it was stopped on recorded
    as its intermediate value at that step: Tune hands the result ASHA stops a trial on to the
    scheduler only, never to the searcher's ``on_trial_result``, so without it a trial cut at the
    grace epoch would reach Optuna with no value at all, and TPE could not rank the pruned trials.

    Tune hands the searcher a flattened result, so a trial's own epoch count is ``config/train.epochs``
    (a trial may override the base config's); ``total_epochs`` is the fallback."""

    def __init__(self, *args: Any, total_epochs: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.total_epochs = total_epochs
        self._reported_steps: dict[str, int] = {}  # trial id -> last step told to Optuna

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        super().on_trial_result(trial_id, result)
        if TRAINING_ITERATION in result:
            self._reported_steps[trial_id] = int(result[TRAINING_ITERATION])

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if result and not error and trial_id not in self._completed_trials and trial_id in self._ot_trials:
            epochs = int(trial_epochs(result, self.total_epochs))
            if int(result.get("epoch", epochs)) < epochs:
                ot_trial = self._ot_trials[trial_id]
                step = result.get(TRAINING_ITERATION)
                if step is not None and self.metric in result and int(step) > self._reported_steps.get(trial_id, -1):
                    ot_trial.report(result[self.metric], int(step))
                self._ot_study.tell(ot_trial, state=TrialState.PRUNED)
                self._completed_trials.add(trial_id)
                self._reported_steps.pop(trial_id, None)
                return
        self._reported_steps.pop(trial_id, None)
        super().on_trial_complete(trial_id, result, error)
