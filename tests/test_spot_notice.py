"""Spot-interruption notices: the watcher against a real HTTP metadata server, and a mid-epoch
checkpoint that resumes to exactly the weights of the run that was never interrupted."""

from __future__ import annotations

import shutil
import socket
import time
from pathlib import Path

import pytest
import torch
from metadata_server import MetadataServer

from drkd.config import ConfigError, validate
from drkd.train.checkpoint import load_checkpoint
from drkd.train.job import run_training
from drkd.train.run_context import LocalContext
from drkd.train.spot_notice import SpotNotice, notice_url


def _wait(predicate, timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


@pytest.mark.parametrize("imdsv1", [False, True], ids=["imdsv2_token", "imdsv1"])
def test_notice_is_pending_once_posted_and_polling_stops_when_acknowledged(imdsv1: bool) -> None:
    server, lines = MetadataServer(imdsv1=imdsv1), []
    try:
        notice = SpotNotice(server.url, lines.append, poll_s=0.05)
        assert _wait(lambda: server.requests >= 3)  # polling, answered 404: no notice yet
        assert not notice.pending and not lines
        server.post_notice()
        assert _wait(lambda: notice.pending)
        assert len(lines) == 1 and '"action": "terminate"' in lines[0] and server.url in lines[0]
        notice.acknowledge()
        assert not notice.pending
        seen = server.requests
        time.sleep(0.3)
        assert server.requests == seen  # one notice, one checkpoint: no more polling
    finally:
        server.close()


def test_no_metadata_service_turns_notices_off(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with caplog.at_level("INFO", logger="drkd.train.spot_notice"):
        notice = SpotNotice(f"http://127.0.0.1:{port}", lambda line: None, poll_s=0.05)
        assert _wait(lambda: not notice._thread.is_alive())
    assert not notice.pending
    assert f"no instance metadata service at http://127.0.0.1:{port}" in caplog.text


def test_spot_notice_setting(tiny_config) -> None:
    assert notice_url("aws") == "http://169.254.169.254" and notice_url("off") is None
    assert notice_url("http://10.0.0.1:8080/") == "http://10.0.0.1:8080"
    cfg = tiny_config()
    cfg.train.spot_notice = "169.254.169.254"
    with pytest.raises(ConfigError, match=r"train.spot_notice = '169.254.169.254': must be aws, off or an http"):
        validate(cfg)


class _KeepMidEpoch(LocalContext):
    """Keeps a copy of the mid-epoch checkpoint the run writes (later epochs overwrite the file)."""

    def __init__(self, output_dir: Path, keep: Path) -> None:
        super().__init__(output_dir)
        self.keep = keep

    def checkpoint(self, state: dict) -> None:
        super().checkpoint(state)
        shutil.copy(self.checkpoint_path, self.keep)


def test_mid_epoch_checkpoint_resumes_to_the_uninterrupted_weights(
    tiny_config, two_stage_teacher_ckpt: str, tmp_path: Path
) -> None:
    """Faster R-CNN (its proposal sampler draws from the global RNG) with DRKD and two loader worker
    processes (augmentation drawn in other processes): the hardest case for an exact resume."""

    def config(out: str, spot_notice: str):
        cfg = tiny_config("drkd", arch="fasterrcnn", teacher_ckpt=two_stage_teacher_ckpt, out=out)
        cfg.data.loader_workers = 2
        cfg.train.spot_notice = spot_notice
        return validate(cfg)

    straight = config("straight", "off")
    run_training(straight, LocalContext(straight.train.output_dir))

    server = MetadataServer()
    server.post_notice()  # posted before the run starts: the checkpoint comes after an early iteration
    try:
        noticed = config("noticed", server.url)
        mid = tmp_path / "mid_epoch.pt"
        run_training(noticed, _KeepMidEpoch(Path(noticed.train.output_dir), mid))
    finally:
        server.close()
    state = load_checkpoint(mid)
    partial = state["partial"]
    iterations = 16 // 4  # 16 training images, batches of 4
    assert partial["epoch"] == 0 and 1 <= partial["iterations"] < iterations and state["epoch"] == -1
    assert set(partial["sums"]) >= {"loss_total", "loss_det", "loss_pr", "loss_ir"}

    resumed_dir = Path(tmp_path / "resumed")
    resumed_dir.mkdir()
    shutil.copy(mid, resumed_dir / "checkpoint.pt")
    resumed_ctx = LocalContext(resumed_dir, resume=True)
    run_training(config("resumed", "off"), resumed_ctx)

    final = {
        name: load_checkpoint(Path(d) / "checkpoint.pt")
        for name, d in [
            ("straight", straight.train.output_dir),
            ("noticed", noticed.train.output_dir),
            ("resumed", resumed_dir),
        ]
    }
    for name in ("noticed", "resumed"):  # checkpointing changed nothing; resuming lost nothing
        for part in ("student", "distiller", "optimizer"):
            a, b = final["straight"][part], final[name][part]
            for k, v in a.items() if part != "optimizer" else a["state"].items():
                w = b[k] if part != "optimizer" else b["state"][k]
                if torch.is_tensor(v):
                    assert torch.equal(v, w), f"{name}: {part}.{k} differs"
                else:
                    assert all(torch.equal(x, w[j]) for j, x in v.items()), f"{name}: {part} state {k} differs"
    ha = LocalContext(straight.train.output_dir).history()
    hr = resumed_ctx.history()
    assert [h["epoch"] for h in hr] == [1, 2] and hr[0]["resumed_iteration"] == partial["iterations"]
    for a, b in zip(ha, hr):  # the resumed epoch's means cover all of it, as the straight run's do
        assert a["mAP"] == b["mAP"] and a["loss_total"] == pytest.approx(b["loss_total"], rel=1e-12)
