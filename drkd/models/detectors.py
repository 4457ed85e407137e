"""torchvision detectors built by name: RetinaNet, Faster R-CNN and FCOS on ResNet/ResNeXt/MobileNet FPNs."""

from __future__ import annotations

import logging
import os
import pickle
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlparse

import torch
import torchvision
from torch import nn
from torchvision.models.detection import FCOS, FasterRCNN, RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.faster_rcnn import FastRCNNConvFCHead
from torchvision.models.detection.retinanet import RetinaNetHead
from torchvision.models.detection.rpn import RPNHead
from torchvision.ops import FrozenBatchNorm2d
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool, LastLevelP6P7

from drkd.config import TWO_STAGE_ARCHS, ConfigError, DataConfig, DetectorConfig
from drkd.config.schema import TORCHVISION_DETECTORS
from drkd.models.roi_align_gather import box_pooler, gather_pooler

log = logging.getLogger("drkd.models.detectors")

# Strides of the FPN levels each architecture uses (P3–P7 one-stage, P2–P6 Faster R-CNN).
ONE_STAGE_STRIDES = (8, 16, 32, 64, 128)
TWO_STAGE_STRIDES = (4, 8, 16, 32, 64)


def level_strides(arch: str) -> tuple[int, ...]:
    """Strides of the five FPN levels ``arch`` uses, highest resolution first."""
    return TWO_STAGE_STRIDES if arch in TWO_STAGE_ARCHS else ONE_STAGE_STRIDES


def _norm_layer(cfg: DetectorConfig) -> type[nn.Module]:
    norm = cfg.norm or ("frozen_bn" if cfg.backbone_weights else "bn")
    return FrozenBatchNorm2d if norm == "frozen_bn" else nn.BatchNorm2d


def _freeze_layers(backbone: nn.Module, prefixes: list[str], trainable: int) -> None:
    """Freeze all but the last `trainable` stages (prefixes ordered from the top stage down)."""
    keep = prefixes[:trainable]
    for name, param in backbone.named_parameters():
        if not any(name.startswith(p) for p in keep):
            param.requires_grad_(False)


def build_backbone(cfg: DetectorConfig) -> BackboneWithFPN:
    """Backbone + FPN with ``cfg.fpn_channels`` channels, levels matching the architecture.

    One-stage archs (RetinaNet, FCOS) get P3–P5 from the body plus P6, P7 (``LastLevelP6P7``),
    strides 8–128; Faster R-CNN gets P2–P5 plus a max-pooled P6, strides 4–64 (see ``level_strides``).

    Args:
        cfg: the detector's config section; reads
            ``backbone``: a torchvision ResNet/ResNeXt name or ``"mobilenet_v3_large"``;
            ``backbone_weights``: torchvision weights name (downloads) or ``None`` (random init);
            ``backbone_checkpoint``: a body saved by crop pretraining (:func:`load_backbone_body`);
            ``norm``: ``"bn"`` | ``"frozen_bn"``; ``None``: frozen BN with ``backbone_weights``, else BN;
            ``trainable_backbone_layers``: t in 0–5, the body stages left trainable from the top
            (ResNet: layer4, ..., layer1, then conv1 with bn1; MobileNet with t < 5: its last
            max(1, round(n·t/5)) of n blocks); the FPN is always trainable;
            ``fpn_channels``: C of every FPN level; ``arch``: one- or two-stage levels.

    Returns:
        A ``BackboneWithFPN`` (``out_channels`` = C) whose forward maps a (B, 3, H, W) batch to an
        ordered dict of five (B, C, H_l, W_l) levels, highest resolution first.
    """
    norm_layer = _norm_layer(cfg)
    weights = cfg.backbone_weights
    two_stage = cfg.two_stage
    c = cfg.fpn_channels
    if cfg.backbone.startswith("res"):
        body = getattr(torchvision.models, cfg.backbone)(weights=weights, norm_layer=norm_layer)
        if cfg.backbone_checkpoint:
            load_backbone_body(body, cfg.backbone_checkpoint, cfg.backbone)
        layers = ["layer4", "layer3", "layer2", "layer1", "conv1"]
        trainable = cfg.trainable_backbone_layers
        _freeze_layers(body, layers + ["bn1"], trainable + (trainable == 5))  # the stem's bn1 goes with conv1
        returned = [1, 2, 3, 4] if two_stage else [2, 3, 4]
        stage2 = body.inplanes // 8
        in_channels = [stage2 * 2 ** (i - 1) for i in returned]
        return_layers = {f"layer{k}": str(v) for v, k in enumerate(returned)}
    elif cfg.backbone == "mobilenet_v3_large":
        body = torchvision.models.mobilenet_v3_large(weights=weights, norm_layer=norm_layer).features
        # Stage ends: the blocks just before each stride-2 block, plus the last block.
        stage_ends = [i - 1 for i, b in enumerate(body) if getattr(b, "_is_cn", False)] + [len(body) - 1]
        # stage_ends hold strides 2, 4, 8, 16, 32 outputs; take strides 4/8 ... as the architecture needs.
        chosen = stage_ends[1:5] if two_stage else stage_ends[2:5]
        num_stages = len(body)
        freeze_before = num_stages - max(1, round(num_stages * cfg.trainable_backbone_layers / 5))
        for idx, block in enumerate(body):
            if idx < freeze_before and cfg.trainable_backbone_layers < 5:
                block.requires_grad_(False)
        in_channels = [body[i].out_channels for i in chosen]
        return_layers = {str(i): str(v) for v, i in enumerate(chosen)}
    else:  # pragma: no cover - validated in config
        raise ConfigError(f"backbone = {cfg.backbone!r}: unknown")
    extra = LastLevelMaxPool() if two_stage else LastLevelP6P7(c, c)
    return BackboneWithFPN(body, return_layers, in_channels, c, extra_blocks=extra)


def _anchor_sizes(cfg: DetectorConfig, octaves: bool) -> tuple[tuple[float, ...], ...]:
    scales = (1.0, 2 ** (1 / 3), 2 ** (2 / 3)) if octaves else (1.0,)
    return tuple(tuple(cfg.anchor_scale * s * k for k in scales) for s in level_strides(cfg.arch))


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with 32 groups where the width allows it (fewer for narrow FPNs)."""
    groups = next(g for g in (32, 16, 8) if channels % g == 0)
    return nn.GroupNorm(groups, channels)


def build_detector(
    cfg: DetectorConfig, num_classes: int, data: DataConfig, category_names: Sequence[str] | None = None
) -> nn.Module:
    """A torchvision RetinaNet, FCOS or Faster R-CNN for ``num_classes`` classes at the data's image size.

    Backbone and FPN from :func:`build_backbone`. Anchors are ``cfg.anchor_scale`` × the level
    stride: RetinaNet with 3 octave scales × 3 aspect ratios (0.5, 1, 2), Faster R-CNN with one scale
    × 3 ratios; FCOS uses one anchor per location sized as the stride (torchvision's default).
    ``head_norm: gn`` uses torchvision's own GroupNorm head options (as its v2 models do): from
    random initialisation, RetinaNet's plain v1 head barely moves its focal loss in a few hundred
    iterations, while the GroupNorm head trains. (FCOS keeps torchvision's head, GroupNorm already.)
    Faster R-CNN pools its ROIs with :class:`~drkd.models.roi_align_gather.GatherMultiScaleRoIAlign`
    (torchvision's multi-scale ROI Align, computed as one gather on the CPU).

    Args:
        cfg: the detector's config section: ``arch`` (``"retinanet"``, ``"fcos"`` or ``"fasterrcnn"``),
            the backbone fields :func:`build_backbone` reads, ``anchor_scale``, ``head_norm``
            (``"gn"`` | ``"none"``), ``detections_per_img``, the Faster R-CNN sampling sizes
            ``rpn_pre_nms_top_n_train``, ``rpn_post_nms_top_n_train``, ``roi_batch_size_per_image``,
            the proposals kept at evaluation ``rpn_pre_nms_top_n_test``, ``rpn_post_nms_top_n_test``,
            and ``checkpoint``: a drkd checkpoint or state dict loaded afterwards, which must fit
            exactly (:func:`load_detector_weights`; ``ConfigError`` otherwise). With ``weights`` (a
            torchvision COCO detector, see :func:`build_torchvision_detector`) the model is torchvision's
            own, built by its builder and loaded from the torch hub cache.
        num_classes: number of classes including the background (``CocoDetection.num_classes``).
            With ``cfg.weights`` it is only checked against ``category_names``: without them the
            model keeps its 91 COCO outputs.
        data: the data section; its ``min_size`` / ``max_size`` configure the detector's resize transform.
        category_names: only with ``cfg.weights``: the dataset's category names in label order
            (``CocoDetection.category_names``); the class outputs are then cut down to the background
            plus these categories, matched by name, so that label i means what the dataset's label i
            means (:func:`coco_class_indices`). ``None`` (default): the full COCO head.

    Returns:
        The detector (an ``nn.Module``): in train mode ``model(images, targets)`` returns its loss dict,
        in eval mode ``model(images)`` its detections, as torchvision's detectors do.
    """
    if cfg.weights:
        model = build_torchvision_detector(cfg, data)
        if category_names is not None:
            if num_classes != len(category_names) + 1:
                raise ValueError(f"num_classes = {num_classes}: {len(category_names)} category names + background")
            restrict_classes(model, coco_class_indices(cfg.weights, category_names))
        return model
    backbone = build_backbone(cfg)
    c = cfg.fpn_channels
    gn = group_norm if cfg.head_norm == "gn" else None
    common = dict(min_size=data.min_size, max_size=data.max_size, detections_per_img=cfg.detections_per_img)
    if cfg.arch == "retinanet":
        anchors = AnchorGenerator(_anchor_sizes(cfg, octaves=True), ((0.5, 1.0, 2.0),) * 5)
        head = RetinaNetHead(c, anchors.num_anchors_per_location()[0], num_classes, norm_layer=gn) if gn else None
        model = RetinaNet(backbone, num_classes, anchor_generator=anchors, head=head, **common)
    elif cfg.arch == "fcos":
        # FCOS uses one "anchor" per location, sized as the level stride (torchvision's default).
        anchors = AnchorGenerator(tuple((s,) for s in ONE_STAGE_STRIDES), ((1.0,),) * 5)
        model = FCOS(backbone, num_classes, anchor_generator=anchors, **common)
    else:
        anchors = AnchorGenerator(_anchor_sizes(cfg, octaves=False), ((0.5, 1.0, 2.0),) * 5)
        heads = {}
        if gn:
            heads["rpn_head"] = RPNHead(c, anchors.num_anchors_per_location()[0], conv_depth=2)
            heads["box_head"] = FastRCNNConvFCHead((c, 7, 7), [c, c, c, c], [1024], norm_layer=gn)
        model = FasterRCNN(
            backbone,
            num_classes,
            rpn_anchor_generator=anchors,
            box_roi_pool=box_pooler(),
            **heads,
            **faster_rcnn_sizes(cfg),
            min_size=data.min_size,
            max_size=data.max_size,
        )
    if cfg.checkpoint:
        load_detector_weights(model, cfg.checkpoint)
    return model


def faster_rcnn_sizes(cfg: DetectorConfig) -> dict[str, int]:
    """torchvision FasterRCNN's keyword arguments for the section's proposal and sampling sizes:
    RPN proposals kept before NMS (per FPN level) and after it (per image), in training and at
    evaluation; ROIs sampled per image for the box head; detections kept per image."""
    return dict(
        rpn_pre_nms_top_n_train=cfg.rpn_pre_nms_top_n_train,
        rpn_post_nms_top_n_train=cfg.rpn_post_nms_top_n_train,
        rpn_pre_nms_top_n_test=cfg.rpn_pre_nms_top_n_test,
        rpn_post_nms_top_n_test=cfg.rpn_post_nms_top_n_test,
        box_detections_per_img=cfg.detections_per_img,
        box_batch_size_per_image=cfg.roi_batch_size_per_image,
    )


def hub_cache_path(weights: str) -> Path:
    """Where the torch hub cache keeps the file of torchvision weights ``weights`` (e.g.
    ``"FCOS_ResNet50_FPN_Weights.COCO_V1"``): ``<torch.hub.get_dir()>/checkpoints/<file name of its url>``,
    i.e. ``$TORCH_HOME/hub/checkpoints/...`` (default ``~/.cache/torch``). A file there is used as is
    (torch hub checks the hash only when it downloads)."""
    url = torchvision.models.get_weight(weights).url
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)


def build_torchvision_detector(cfg: DetectorConfig, data: DataConfig) -> nn.Module:
    """torchvision's COCO detector ``cfg.weights`` (one of ``drkd.config.schema.TORCHVISION_DETECTORS``).

    Built by torchvision's own builder (``retinanet_resnet50_fpn_v2(weights=...)`` etc.), so the
    architecture is exactly the one the weights were trained with (v2 heads, P6 from C5, BatchNorm
    FPN, FrozenBatchNorm eps 0 of the v1 models ...), and loaded strictly by it from the torch hub
    cache (:func:`hub_cache_path`), which downloads the file only when it is not cached. The config
    validation has checked that the section describes that model (arch, resnet50, 256 channels,
    head_norm, anchor_scale). From the section the builder takes ``trainable_backbone_layers``,
    ``detections_per_img`` and the Faster R-CNN sampling and test-time proposal sizes; from ``data`` ``min_size`` /
    ``max_size``. The model predicts torchvision's 91 COCO classes: label = COCO category id
    (:func:`restrict_classes` cuts that down to a dataset's categories). A Faster R-CNN's box pooler is swapped for
    :class:`~drkd.models.roi_align_gather.GatherMultiScaleRoIAlign` (the same ROI Align, faster on the CPU).

    Raises:
        ConfigError: the file is not cached and cannot be downloaded, or the cached file does not load.
    """
    name = cfg.weights
    assert name is not None  # callers check
    spec = TORCHVISION_DETECTORS[name]
    weights = torchvision.models.get_weight(name)
    cached = hub_cache_path(name)
    was_cached = cached.is_file()
    if not was_cached:
        log.info("weights = %s: downloading %s to %s", name, weights.url, cached)
    kwargs: dict = dict(min_size=data.min_size, max_size=data.max_size)
    if cfg.two_stage:
        kwargs.update(faster_rcnn_sizes(cfg))
    else:
        kwargs["detections_per_img"] = cfg.detections_per_img
    builder = torchvision.models.get_model_builder(spec.builder)
    try:
        model = builder(
            weights=weights,
            weights_backbone=None,
            progress=True,
            trainable_backbone_layers=cfg.trainable_backbone_layers,
            **kwargs,
        )
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if was_cached:
            raise ConfigError(
                f"weights = {name!r}: the cached file {cached} does not load ({reason}); delete it to download it again"
            ) from None
        raise ConfigError(
            f"weights = {name!r}: {cached} is not in the torch hub cache and downloading {weights.url} "
            f"failed ({reason}); fetch that file where there is network and copy it to {cached} "
            "(TORCH_HOME sets the cache's root)"
        ) from None
    if cfg.two_stage:
        model.roi_heads.box_roi_pool = gather_pooler(model.roi_heads.box_roi_pool)
    return model


def coco_class_indices(weights: str, category_names: Sequence[str]) -> list[int]:
    """Indices into the class outputs of torchvision COCO detector ``weights`` for the background and
    then each of ``category_names`` (matched by name against ``weights.meta["categories"]``).

    Raises:
        ConfigError: a name is not one of the weights' categories (the model cannot predict it).
    """
    names = torchvision.models.get_weight(weights).meta["categories"]
    index = {n: i for i, n in enumerate(names) if i > 0 and n != "N/A"}
    missing = [n for n in category_names if n not in index]
    if missing:
        raise ConfigError(
            f"weights = {weights!r}: the dataset's category {missing[0]!r} is not one of its "
            f"{len(index)} COCO categories ({', '.join(list(index)[:5])}, ...), so its class outputs "
            "cannot be lined up with the dataset's labels"
        )
    return [0, *(index[n] for n in category_names)]


def restrict_classes(model: nn.Module, keep: Sequence[int]) -> nn.Module:
    """Cut a torchvision RetinaNet's, FCOS's or Faster R-CNN's class outputs down to ``keep`` (indices
    into its current classes, background first): output class i is the old class ``keep[i]``, with the
    same logits (and, for Faster R-CNN, the same class-specific box regression). In place; returns ``model``.
    """
    keep = list(keep)
    if isinstance(model, (RetinaNet, FCOS)):
        head = model.head.classification_head
        old, k = head.cls_logits, head.num_classes
        rows = [a * k + c for a in range(head.num_anchors) for c in keep]
        new = nn.Conv2d(old.in_channels, len(rows), old.kernel_size, old.stride, old.padding)
        _copy_rows(new, old, rows)
        head.cls_logits, head.num_classes = new, len(keep)
    elif isinstance(model, FasterRCNN):
        predictor = model.roi_heads.box_predictor
        cls_score, bbox_pred = predictor.cls_score, predictor.bbox_pred
        new_cls = nn.Linear(cls_score.in_features, len(keep))
        new_box = nn.Linear(bbox_pred.in_features, 4 * len(keep))
        _copy_rows(new_cls, cls_score, keep)
        _copy_rows(new_box, bbox_pred, [4 * c + j for c in keep for j in range(4)])
        predictor.cls_score, predictor.bbox_pred = new_cls, new_box
    else:
        raise TypeError(f"{type(model).__name__}: not a torchvision RetinaNet, FCOS or Faster R-CNN")
    return model


def _copy_rows(new: nn.Module, old: nn.Module, rows: list[int]) -> None:
    """new.weight/bias = old's output rows ``rows`` (same dtype, device and requires_grad)."""
    index = torch.tensor(rows, device=old.weight.device)
    with torch.no_grad():
        new.weight = nn.Parameter(old.weight.index_select(0, index).clone(), old.weight.requires_grad)
        new.bias = nn.Parameter(old.bias.index_select(0, index).clone(), old.bias.requires_grad)


def load_backbone_body(body: nn.Module, path: str | Path, backbone: str) -> None:
    """Load a crop-pretrained body (:mod:`drkd.train.backbone_pretrain`'s file) into a ResNet ``body``.

    Every body parameter and buffer must be in the file with its shape (the classifier ``fc`` is
    neither saved nor needed); BatchNorm statistics load into FrozenBatchNorm too.

    Args:
        body: the torchvision ResNet/ResNeXt the FPN is built on.
        path: the file (``detector.backbone_checkpoint``).
        backbone: ``detector.backbone``; the file must name the same one.

    Raises:
        ConfigError: naming ``backbone_checkpoint`` and the path: no such file, another backbone's
            file, or keys or shapes that do not fit.
    """
    where = f"backbone_checkpoint = {str(path)!r}"
    if not Path(path).is_file():
        raise ConfigError(f"{where}: file not found (`drkd pretrain` makes one)")
    saved = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(saved, dict) or "body" not in saved:
        raise ConfigError(f"{where}: not a crop-pretrained backbone (no 'body' entry)")
    if saved.get("backbone") != backbone:
        raise ConfigError(f"{where}: holds a {saved.get('backbone')!r} body, but backbone = {backbone!r}")
    keys = set(body.state_dict())
    state = _adapt_norm_keys(saved["body"], body)
    missing = sorted(k for k in keys - set(state) if not k.startswith("fc."))
    unexpected = sorted(set(state) - keys)
    if missing or unexpected:
        raise ConfigError(
            f"{where}: does not fit: {_key_list('missing', missing)}; {_key_list('unexpected', unexpected)}"
        )
    try:
        body.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shape mismatch
        raise ConfigError(f"{where}: does not fit: {str(err).splitlines()[-1].strip()}") from None


def load_detector_weights(model: nn.Module, path: str | Path) -> None:
    """Initialise from a drkd checkpoint (its `student` entry) or a plain detector state dict."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"checkpoint = {str(path)!r}: file not found")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "student" in state:
        state = state["student"]
    elif isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    try:
        missing, unexpected = model.load_state_dict(_adapt_norm_keys(state, model), strict=False)
    except RuntimeError as err:  # shape mismatch
        raise ConfigError(
            f"checkpoint = {str(path)!r}: does not fit this detector: {str(err).splitlines()[-1].strip()}"
        ) from None
    if missing or unexpected:
        raise ConfigError(
            f"checkpoint = {str(path)!r}: does not fit this detector: "
            f"{_key_list('missing', missing)}; {_key_list('unexpected', unexpected)}"
        )


def _key_list(what: str, keys: list[str], shown: int = 20) -> str:
    """'missing 2 keys: a, b' (the first ``shown`` named, then how many more)."""
    more = f", ... and {len(keys) - shown} more" if len(keys) > shown else ""
    return f"{what} {len(keys)} key{'s' if len(keys) != 1 else ''}" + (
        f": {', '.join(keys[:shown])}{more}" if keys else ""
    )


def _adapt_norm_keys(state: dict, model: nn.Module) -> dict:
    """Let BatchNorm checkpoints load into FrozenBatchNorm models and back (num_batches_tracked)."""
    own = model.state_dict()
    out = OrderedDict((k, v) for k, v in state.items() if k in own or not k.endswith("num_batches_tracked"))
    for k in own:
        if k.endswith("num_batches_tracked") and k not in out:
            out[k] = own[k]
    return out


def export_state_dict(model: nn.Module) -> OrderedDict[str, torch.Tensor]:
    """Student weights for deployment: no distillation modules, no BatchNorm step counters.

    Loads (strict) into the plain torchvision detector of the same shape, whose backbones use
    FrozenBatchNorm2d, e.g. `retinanet_resnet50_fpn(weights=None, weights_backbone=None, num_classes=N)`
    for the R50 / 256-channel RetinaNet.
    """
    return OrderedDict(
        (k, v.detach().clone()) for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")
    )
