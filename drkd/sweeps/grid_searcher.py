"""A Tune searcher that proposes an explicit list of trial configs, once each, in order."""

from __future__ import annotations

import pickle
from typing import Any

from ray.tune.search import Searcher


class ExplicitGridSearcher(Searcher):
    """Ablation grids are lists of flat configs whose keys differ between cells, which Tune's own
    grid and preset variants cannot express without nesting the config; this emits them as-is."""

    def __init__(self, trials: list[dict[str, Any]], metric: str = "mAP", mode: str = "max") -> None:
        super().__init__(metric=metric, mode=mode)
        self.trials = [dict(t) for t in trials]
        self.next_index = 0

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        if self.next_index >= len(self.trials):
            return Searcher.FINISHED
        config = self.trials[self.next_index]
        self.next_index += 1
        return dict(config)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        pass

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump({"trials": self.trials, "next_index": self.next_index}, f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            state = pickle.load(f)
        self.trials, self.next_index = state["trials"], state["next_index"]
