"""Augmentation drawn per sample: a sample's random transform depends only on (seed, epoch, index).

The DataLoader's worker processes seed themselves from the main process's RNG when an epoch's
iterator starts and take batches round-robin, so with ``loader_workers > 0`` which flip a sample
gets depends on the worker count and on where the epoch started. Seeding each sample's transform
from its own key instead makes a run resumed mid-epoch (a spot-interruption checkpoint) draw
exactly the augmentation the uninterrupted run would have, with any number of loader workers.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import Dataset, Sampler


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The RNG seed of sample ``index`` in ``epoch`` (a 63-bit mix; distinct keys give unrelated seeds)."""
    x = (seed * 0x9E3779B97F4A7C15 + epoch * 0xBF58476D1CE4E5B9 + index * 0x94D049BB133111EB) & (2**64 - 1)
    x ^= x >> 31
    x = (x * 0xD6E8FEB86659FD93) & (2**64 - 1)
    return (x ^ (x >> 32)) & (2**63 - 1)


class EpochSeededSamples(Dataset):
    """``dataset[i]`` drawn under ``torch.manual_seed(sample_seed(seed, epoch, i))``, leaving the
    caller's RNG as it was.

    Args:
        dataset: any map-style dataset whose transforms draw from torch's global RNG (as
            ``torchvision.transforms.v2`` does).
        seed: the run's seed (``train.seed``).
    """

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset, self.seed, self.epoch = dataset, seed, 0

    def set_epoch(self, epoch: int) -> None:
        """Call before each epoch's iterator is created (loader workers copy the dataset then)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Any:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(sample_seed(self.seed, self.epoch, index))
            return self.dataset[index]


class SkippingSampler(Sampler[int]):
    """Another sampler's indices, less the first ``skip`` of the current epoch (those a mid-epoch
    checkpoint had already trained on); the epoch after that is whole again.

    Args:
        sampler: the sampler to wrap, e.g. a ``DistributedSampler`` (its ``set_epoch`` is forwarded).
    """

    def __init__(self, sampler: Sampler[int]) -> None:
        self.sampler, self.skip = sampler, 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        """Start ``epoch``, leaving out its first ``skip`` indices (default 0)."""
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)
        self.skip = skip

    def __iter__(self):
        for i, index in enumerate(self.sampler):
            if i >= self.skip:
                yield index

    def __len__(self) -> int:
        return max(0, len(self.sampler) - self.skip)  # type: ignore[arg-type]
