"""Inheriting: a student that starts from its teacher's trained neck (FPN) or neck and heads.

FGD's and MGD's published RetinaNet students are initialised this way (their ``init_student``
loads every teacher parameter outside ``backbone.``); the student's backbone keeps its own
initialisation (ImageNet weights or random), since it is narrower or shallower than the teacher's.
"""

from __future__ import annotations

import torch
from torch import nn

from drkd.config import ConfigError

# torchvision detectors: the FPN (with RetinaNet's and FCOS's P6/P7 blocks) lives under
# ``backbone.fpn.``; the heads are everything outside ``backbone.`` (``head.`` for RetinaNet and
# FCOS; ``rpn.`` and ``roi_heads.`` for Faster R-CNN).
NECK_PREFIX = "backbone.fpn."
BACKBONE_PREFIX = "backbone."


def inherited_keys(state: dict[str, torch.Tensor], part: str) -> list[str]:
    """The keys of a detector state dict that ``part`` (``neck`` | ``neck_head``) inherits, in order."""
    if part == "neck":
        return [k for k in state if k.startswith(NECK_PREFIX)]
    if part == "neck_head":
        return [k for k in state if k.startswith(NECK_PREFIX) or not k.startswith(BACKBONE_PREFIX)]
    raise ValueError(f"part = {part!r}: expected 'neck' or 'neck_head'")


def inherit_from_teacher(student: nn.Module, teacher: nn.Module, part: str) -> list[str]:
    """Copy the teacher's trained ``part`` into ``student`` in place (``student.init_from_teacher``).

    Args:
        student: the freshly built student detector (torchvision layout).
        teacher: the trained teacher detector, weights already loaded; not modified.
        part: ``none`` (nothing copied), ``neck`` (every ``backbone.fpn.*`` tensor) or
            ``neck_head`` (the neck and every tensor outside ``backbone.*``: the heads, and
            Faster R-CNN's RPN and box head), parameters and buffers alike.

    Returns:
        The keys copied.

    Raises:
        ConfigError: naming ``student.init_from_teacher`` and the first tensors that are missing on
            one side or differ in shape (another arch, FPN width, head norm or class count).
    """
    if part == "none":
        return []
    mine, theirs = student.state_dict(), teacher.state_dict()
    wanted = inherited_keys(mine, part)
    missing = [k for k in wanted if k not in theirs]
    extra = [k for k in inherited_keys(theirs, part) if k not in mine]
    shapes = [
        f"{k} {tuple(mine[k].shape)} vs {tuple(theirs[k].shape)}"
        for k in wanted
        if k in theirs and mine[k].shape != theirs[k].shape
    ]
    problems = (
        [f"not in the teacher: {', '.join(missing[:3])}"] * bool(missing)
        + [f"only in the teacher: {', '.join(extra[:3])}"] * bool(extra)
        + [f"shapes differ (student vs teacher): {'; '.join(shapes[:3])}"] * bool(shapes)
    )
    if problems:
        raise ConfigError(
            f"student.init_from_teacher = {part!r}: the student's {part.replace('_', ' and ')} does not match "
            f"the teacher's ({' | '.join(problems)}); inheriting needs the same arch, fpn_channels, head_norm "
            "and classes"
        )
    with torch.no_grad():
        for k in wanted:
            mine[k].copy_(theirs[k])
    return wanted
