"""A distillation method defined only in this file plugs into everything, with no other file edited.

The method is the module source ``PLUGIN`` below, written out as an out-of-tree module
(``echo_method.py``) and imported: it follows README's "Adding a distillation method" step by
step (a parameter dataclass, a Distiller subclass, a search space, one MethodSpec registered at
import). Then it is accepted (and its bad parameters rejected) by config validation, trains, is
searched by ``lambda_search.py --method echo`` on real Ray, and gets its own row in Table 6.
Ray's trial processes register it the way an out-of-tree method is registered on a cluster:
``DRKD_METHODS`` names the module in the job's runtime_env. The fixture unregisters it afterwards,
so no other test sees it.
"""

from __future__ import annotations

import importlib
import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
import yaml

from drkd.config import ConfigError, config_from_dict, load_config
from drkd.config.methods import method_names, unregister_method

PLUGIN = '''"""Echo: student FPN features, through a 1x1 adapter per level, imitate the teacher's."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from drkd.config.errors import ConfigError
from drkd.config.methods import MethodParams, MethodSpec, register_method
from drkd.distill.adaptation import LevelAdapters
from drkd.distill.base import Distiller


@dataclass
class EchoParams(MethodParams):
    """The ``distill.echo`` section: one loss weight."""

    weight: float = 0.5

    def validate(self, where: str) -> None:
        if not self.weight > 0:
            raise ConfigError(f"{where}.weight = {self.weight!r}: must be > 0")


class EchoDistiller(Distiller):
    """``loss_echo``: MSE between the adapted student levels and the teacher levels."""

    def __init__(self, teacher_channels: int, student_channels: int, num_levels: int, *, weight: float = 0.5) -> None:
        super().__init__(teacher_channels, student_channels, num_levels)
        self.adapters = LevelAdapters(student_channels, teacher_channels, num_levels)
        self.loss_weights = {"loss_echo": weight}

    def losses(self, teacher_feats: list[torch.Tensor], student_feats: list[torch.Tensor],
               boxes: Sequence[torch.Tensor], image_shape: tuple[int, int]) -> dict[str, torch.Tensor]:
        adapted = self.adapters(student_feats)
        return {"loss_echo": torch.stack([F.mse_loss(s, t) for s, t in zip(adapted, teacher_feats)]).mean()}


def search_space(trial: Any, two_stage: bool) -> dict[str, Any]:
    del two_stage
    trial.suggest_float("distill.echo.weight", 0.1, 1.0, log=True)
    return {}


SPEC = register_method(MethodSpec(name="echo", params=EchoParams, distiller=EchoDistiller, display_name="Echo",
                                  search_space=search_space, table_rank=60))
'''


@pytest.fixture(scope="module")
def echo(tmp_path_factory: pytest.TempPathFactory):
    """The plugin written out as ``echo_method.py`` and imported (registering ``echo``); removed after."""
    root = tmp_path_factory.mktemp("plugin")
    (root / "echo_method.py").write_text(PLUGIN)
    sys.path.insert(0, str(root))
    module = importlib.import_module("echo_method")
    yield module, root
    unregister_method("echo")
    sys.modules.pop("echo_method", None)
    sys.path.remove(str(root))


def test_registered_in_table_order(echo) -> None:
    names = method_names(with_none=True)
    assert names[0] == "none" and "echo" in names
    assert names.index("echo") < names.index("drkd")  # table_rank 60 < DRKD's 100


def test_config_accepts_it_and_names_bad_parameters(echo, tmp_path: Path) -> None:
    path = tmp_path / "echo.yaml"
    path.write_text(yaml.safe_dump({"teacher": {}, "distill": {"method": "echo", "echo": {"weight": 2}}}))
    cfg = load_config(path)
    assert cfg.distill.method == "echo" and cfg.distill.echo == echo[0].EchoParams(weight=2.0)
    assert config_from_dict(cfg.to_dict()) == cfg  # the section round-trips
    for section, message in (
        ({"wieght": 1.0}, r"echo\.yaml: distill\.echo\.wieght: unknown field \(known: weight\)"),
        ({"weight": -1.0}, r"echo\.yaml: distill\.echo\.weight = -1\.0: must be > 0"),
        ({"weight": "big"}, r"distill\.echo\.weight = 'big': must be a number"),
    ):
        path.write_text(yaml.safe_dump({"teacher": {}, "distill": {"method": "echo", "echo": section}}))
        with pytest.raises(ConfigError, match=message):
            load_config(path)
    cfg = config_from_dict({"teacher": {}, "distill": {"method": "echo", "weight_scale": {"echo": 0.5}}})
    from drkd.distill.registry import build_distiller

    assert build_distiller(cfg, 8, 4, 3).loss_weights == {"loss_echo": 0.25}


def test_trains_with_the_teacher_frozen(echo, tiny_config, teacher_ckpt: str) -> None:
    from drkd.train.job import run_training
    from drkd.train.run_context import LocalContext

    cfg = tiny_config("echo", teacher_ckpt=teacher_ckpt)
    cfg.train.epochs = 1
    cfg.data.train_limit = cfg.data.batch_size  # one iteration
    cfg.data.val_limit = 2
    ctx = LocalContext(cfg.train.output_dir)
    run_training(cfg, ctx)
    (report,) = ctx.history()
    assert report["epoch"] == 1 and report["loss_echo"] > 0 and "mAP" in report
    state = torch.load(Path(cfg.train.output_dir) / "checkpoint.pt", weights_only=False)
    assert any(k.startswith("adapters.") for k in state["distiller"])  # the method's modules were trained and saved


@pytest.fixture(scope="module")
def ray_with_echo(echo):
    """A local Ray whose worker processes import the plugin (and so register ``echo``)."""
    import ray

    from drkd.sweeps.ray_instance import start_private_ray

    module, root = echo
    start_private_ray(
        num_cpus=3,
        env_vars={"DRKD_METHODS": module.__name__, "PYTHONPATH": str(root)},
        log_to_driver=False,
        configure_logging=False,
    )
    yield
    ray.shutdown()


@pytest.mark.slow  # ~70 s: a private Ray and two Ray Train trials; the plugin's training is tested above
def test_searched_by_lambda_search_and_given_a_table6_row(
    ray_with_echo, tmp_path: Path, tiny_config, teacher_ckpt: str
) -> None:
    from drkd.analysis.experiment_store import EXPERIMENT_FILE, load_experiments
    from drkd.analysis.paper_numbers import load_paper_numbers
    from drkd.analysis.paper_tables import build_all
    from drkd.sweeps.commands import lambda_search

    cfg = tiny_config("echo", teacher_ckpt=teacher_ckpt)
    cfg.train.epochs = 1
    cfg.data.val_limit = 4
    values = cfg.to_dict()
    values["sweep"] = {"num_trials": 2, "workers_per_trial": 1, "storage_path": str(tmp_path / "results")}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(values))
    assert lambda_search(["--config", str(path), "--method", "echo", "--name", "echo_search"]) == 0

    exp = tmp_path / "results" / "echo_search"
    trials = sorted(p for p in exp.iterdir() if (p / "params.json").exists())
    assert len(trials) == 2
    weights = set()
    for trial in trials:
        params = json.loads((trial / "params.json").read_text())
        assert params["distill.method"] == "echo"
        weights.add(params["distill.echo.weight"])
        last = json.loads((trial / "result.json").read_text().splitlines()[-1])
        assert "loss_echo" in last and "mAP" in last
    assert len(weights) == 2 and all(0.1 <= w <= 1.0 for w in weights)
    best = load_config(exp / "best_config.yaml")
    assert best.distill.method == "echo" and best.distill.echo.weight in weights

    # The same finished trials, read as a Table 6 experiment: Echo gets its own row with their mAP.
    table6 = tmp_path / "results" / "echo_table6"
    shutil.copytree(exp, table6)
    meta = json.loads((table6 / EXPERIMENT_FILE).read_text())
    (table6 / EXPERIMENT_FILE).write_text(json.dumps({**meta, "kind": "table6", "name": "echo_table6"}))
    data = load_experiments([table6])
    table = next(t for t in build_all(data, load_paper_numbers()) if t.name == "table6")
    rows = table.frame[table.frame["Framework"].str.contains("RetinaNet")].set_index("Method")
    assert "Echo" in rows.index
    measured = [json.loads((t / "result.json").read_text().splitlines()[-1])["mAP"] for t in trials]
    assert rows.loc["Echo", "mAP"] == pytest.approx(sum(measured) / len(measured))
    assert rows.loc["Echo", "mAP_n"] == 2
