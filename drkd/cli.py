"""`drkd` command line: synth, pretrain, train, eval, export, aws-setup."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from typing import Any

import yaml


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """`--set key=value` pairs; values parsed as YAML scalars (so 0.004, true, null work)."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise SystemExit(f"--set {item!r}: expected dotted.key=value")
        key, value = item.split("=", 1)
        out[key.strip()] = yaml.safe_load(value)
    return out


def _cmd_synth(args: argparse.Namespace) -> int:
    from drkd.data.coco2017_miniature import make_coco2017_miniature
    from drkd.data.synthetic import make_synthetic_coco

    make = make_coco2017_miniature if args.layout == "coco2017" else make_synthetic_coco
    root = make(args.root, seed=args.seed, num_train=args.num_train, num_val=args.num_val, image_size=args.image_size)
    print(f"wrote synthetic COCO dataset ({args.layout} layout) to {root}")
    return 0


def _cmd_pretrain(args: argparse.Namespace) -> int:
    from pathlib import Path

    from drkd.config import DataConfig
    from drkd.data.synthetic import ensure_synthetic_coco
    from drkd.train.backbone_pretrain import BACKBONE_FILE, PretrainSettings, pretrain_backbone

    if args.root == DataConfig().root:
        ensure_synthetic_coco(Path(args.root))
    out = Path(args.out) / f"backbone_{args.backbone}" / BACKBONE_FILE
    result = pretrain_backbone(
        DataConfig(root=args.root, synthetic=False), args.backbone, out, PretrainSettings(epochs=args.epochs)
    )
    print(f"wrote {out} (val accuracy on object crops {result['val_accuracy']:.3f})")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from drkd.config import load_config
    from drkd.train.job import run_training
    from drkd.train.run_context import LocalContext

    overrides = parse_overrides(args.set)
    if args.output_dir:
        overrides["train.output_dir"] = args.output_dir
    cfg = load_config(args.config, overrides)
    ctx = LocalContext(cfg.train.output_dir, cfg.train.device, resume=args.resume)
    metrics = run_training(cfg, ctx)
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items()}, sort_keys=True))
    if metrics.get("diverged"):
        print(
            f"drkd train: the run diverged ({metrics['diverged_reason']}); lower train.lr or the loss weights",
            file=sys.stderr,
        )
        return 1
    print(f"checkpoint: {ctx.checkpoint_path}")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from drkd.train.checkpoint_eval import evaluate_checkpoint

    metrics = evaluate_checkpoint(args.checkpoint, args.config, parse_overrides(args.set) if args.set else None)
    print(json.dumps(metrics, sort_keys=True))
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from drkd.config import config_from_dict
    from drkd.models.detectors import build_detector, export_state_dict
    from drkd.train.checkpoint import load_checkpoint, save_atomic

    state = load_checkpoint(args.checkpoint)
    cfg = config_from_dict(state["config"], f"{args.checkpoint}:config")
    student = build_detector(cfg.student, int(state["num_classes"]), cfg.data)
    student.load_state_dict(state["student"])
    out = save_atomic(export_state_dict(student), args.out)
    print(
        f"wrote student-only state dict ({cfg.student.arch}/{cfg.student.backbone}, FPN {cfg.student.fpn_channels}) to {out}"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="drkd", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("synth", help="write the deterministic synthetic COCO-format dataset")
    p.add_argument("--root", default="data/synthetic", help="output directory (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-train", type=int, default=400)
    p.add_argument("--num-val", type=int, default=100)
    p.add_argument("--image-size", type=int, default=160)
    p.add_argument(
        "--layout",
        choices=("drkd", "coco2017"),
        default="drkd",
        help="drkd: the embedded default (train/, val/, annotations/instances_{train,val}.json, PNG, 6 "
        "categories); coco2017: laid out as COCO 2017 for its configs' data.root (train2017/, val2017/, "
        "annotations/instances_{train,val}2017.json, JPEG named by 12-digit id, COCO's 80 categories)",
    )
    p.set_defaults(func=_cmd_synth)

    p = sub.add_parser(
        "pretrain",
        help="pretrain a ResNet body on a COCO-format dataset's object crops (the embedded default's backbone)",
    )
    p.add_argument("--root", default="data/synthetic", help="data root, drkd layout (default: %(default)s)")
    p.add_argument("--backbone", default="resnet18", help="a torchvision ResNet/ResNeXt (default: %(default)s)")
    p.add_argument(
        "--out", default="results/cache", help="writes <out>/backbone_<backbone>/backbone.pt (default: %(default)s)"
    )
    p.add_argument("--epochs", type=int, default=8, help="default: %(default)s")
    p.set_defaults(func=_cmd_pretrain)

    p = sub.add_parser("train", help="train (and distil) one model in this process")
    p.add_argument("--config", required=True, help="YAML/JSON config file (see configs/)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a field, e.g. distill.drkd.lambda_pr=0.002",
    )
    p.add_argument("--output-dir", help="where checkpoints and metrics.jsonl go (default: train.output_dir)")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in the output directory")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("eval", help="COCO-evaluate a checkpoint's student on the validation set")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--config", help="config file (default: the one saved in the checkpoint)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("export", help="write a student-only state dict loadable by plain torchvision")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--out", required=True)
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser(
        "aws-setup",
        help="once per AWS account: the security group, instance profiles, EFS and node image cluster.yaml names",
    )
    p.add_argument("--ssh-cidr", required=True, help="the only network SSH is open to, e.g. 198.51.100.0/24")
    p.add_argument("--region", default="us-west-2", help="must be cluster.yaml's provider.region (default us-west-2)")
    p.add_argument(
        "--bake-ami",
        action="store_true",
        help="also bake the node image with constraints.txt installed (about 20 min), so nodes start without installing torch",
    )
    p.add_argument("--constraints", default="constraints.txt", help="the pins the image gets (default constraints.txt)")
    p.set_defaults(func=_cmd_aws_setup)
    return parser


def _cmd_aws_setup(args: argparse.Namespace) -> int:
    from pathlib import Path

    from drkd.cloud.aws_setup import SetupError, aws_setup

    try:
        aws_setup(args.ssh_cidr, args.region, args.bake_ami, Path(args.constraints))
    except SetupError as err:
        print(f"drkd aws-setup: error: {err}", file=sys.stderr)
        return 2
    print("done: `ray up cluster.yaml` can start the cluster")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    from drkd.config import ConfigError
    from drkd.data.coco_dataset import DatasetError

    try:
        return args.func(args)
    except (ConfigError, DatasetError, FileNotFoundError) as err:
        print(f"drkd {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
