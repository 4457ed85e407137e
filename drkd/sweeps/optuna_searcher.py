"""OptunaSearch that tells Optuna the truth about trials ASHA stopped early."""

from __future__ import annotations

from typing import Any

from optuna.trial import TrialState
from ray.tune.search.optuna import OptunaSearch


class PrunedAwareOptunaSearch(OptunaSearch):
    """Ray records an early-stopped trial in Optuna as COMPLETE with its partial value, so TPE
    treats a 2-epoch mAP like a finished one. Here a trial whose last report is before its
    configured last epoch is told to Optuna as PRUNED (its intermediate values stay recorded)."""

    def __init__(self, *args: Any, total_epochs: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.total_epochs = total_epochs

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if result and not error and trial_id not in self._completed_trials and trial_id in self._ot_trials:
            epochs = int(result.get("config", {}).get("train.epochs", self.total_epochs))
            if int(result.get("epoch", epochs)) < epochs:
                self._ot_study.tell(self._ot_trials[trial_id], state=TrialState.PRUNED)
                self._completed_trials.add(trial_id)
                return
        super().on_trial_complete(trial_id, result, error)
