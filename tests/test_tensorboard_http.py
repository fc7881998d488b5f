"""TensorBoard really shows a run: start `tensorboard` on 127.0.0.1 and read its HTTP API."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from fcn_research.callbacks.hparams import overridden_hparams
from fcn_research.train import train


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(base: str, path: str, **params: str) -> object:
    url = f"{base}{path}?{urllib.parse.urlencode(params)}" if params else f"{base}{path}"
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def _post(base: str, path: str, body: dict) -> object:
    # The hparams plugin reads a POST's raw body as the JSON request (as its frontend sends it).
    req = urllib.request.Request(
        f"{base}{path}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


@pytest.fixture
def tensorboard_server(tmp_path: Path):
    logdir = tmp_path / "logs"
    logdir.mkdir()
    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tensorboard.main",
            "--logdir",
            str(logdir),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--reload_interval",
            "1",
            "--load_fast",
            "false",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield logdir, f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_tensorboard_serves_scalars_histograms_images_hparams(make_cfg, tensorboard_server):
    logdir, base = tensorboard_server
    run = logdir / "activation=relu,depth=3"
    train(
        make_cfg("activation=relu", "depth=3", "data.num_samples=200", "width=16", output_dir=run)
    )

    # TensorBoard loads event files in the background: poll until the whole run is in.
    deadline = time.time() + 60
    scalars: list = []
    while time.time() < deadline:
        try:
            scalars = _get(
                base, "/data/plugin/scalars/scalars", run=run.name, tag="grad_norm/layer_01"
            )
            # 2 epochs of 2 steps (120 training samples): steps 0..3, and the final step 4.
            if len(scalars) >= 5:
                break
        except OSError:
            pass
        time.sleep(0.5)
    else:
        pytest.fail(f"TensorBoard did not serve the run's 5 gradient-norm points: {scalars}")
    assert [s[1] for s in scalars] == [0, 1, 2, 3, 4]  # [wall_time, step, value]
    dead = _get(base, "/data/plugin/scalars/scalars", run=run.name, tag="neurons/dead_fraction")
    assert 0.0 <= dead[-1][2] <= 1.0

    hist = _get(base, "/data/plugin/histograms/histograms", run=run.name, tag="weight/layer_02")
    assert hist[0][1] == 0  # [wall_time, step, [[left, right, count], ...]]
    assert sum(bucket[2] for bucket in hist[0][2]) == pytest.approx(16 * 16)

    images = _get(base, "/data/plugin/images/images", run=run.name, tag="decision_boundary")
    assert images[0]["step"] == 0 and images[-1]["step"] > 0

    layout = _get(base, "/data/plugin/custom_scalars/layout")
    charts = {cat["title"]: cat["chart"] for cat in layout["category"]}
    # One chart per layer (its lines: the runs), the whole-network ratio first.
    assert [c["title"] for c in charts["gradient norm per layer"]] == [
        "grad_norm/ratio_first_last", "grad_norm/layer_01", "grad_norm/layer_02",
        "grad_norm/layer_03",
    ]  # fmt: skip
    assert charts["gradient norm per layer"][1]["multiline"]["tag"] == ["^grad_norm/layer_01$"]
    assert [c["title"] for c in charts["dead fraction per layer"]] == [
        "neurons/dead_fraction", "neurons/dead_fraction/layer_01",
        "neurons/dead_fraction/layer_02",
    ]  # fmt: skip

    experiment = _post(base, "/data/plugin/hparams/experiment", {"experimentName": ""})
    hparam_names = {h["name"] for h in experiment["hparamInfos"]}
    assert {
        "activation",
        "depth",
        "width",
        "initializer",
        "optimizer",
        "lr",
        "seed",
        "data",
    } <= hparam_names
    # The dashboard ticks the first five hparams, differing ones first: the job's overrides,
    # not the alphabetical first (activation, batch_size, data, data.noise, ...).
    shown = [h["name"] for h in experiment["hparamInfos"][:5]]
    differing = [h["name"] for h in experiment["hparamInfos"] if h.get("differs")]
    # max_epochs: make_cfg's own override.
    assert shown == differing == ["activation", "data.num_samples", "depth", "max_epochs", "width"]
    metric_tags = {m["name"]["tag"] for m in experiment["metricInfos"]}
    assert {
        "val/acc",
        "val/loss",
        "neurons/dead_fraction",
        "grad_norm/ratio_first_last",
    } <= metric_tags
    assert "hp_metric" not in metric_tags
    groups = _post(
        base,
        "/data/plugin/hparams/session_groups",
        {
            "experimentName": "",
            "allowedStatuses": [
                "STATUS_UNKNOWN",
                "STATUS_SUCCESS",
                "STATUS_FAILURE",
                "STATUS_RUNNING",
            ],
            "colParams": [],
            "startIndex": 0,
            "sliceSize": 10,
        },
    )
    session = groups["sessionGroups"][0]
    assert session["hparams"]["activation"] == "relu"
    values = {m["name"]["tag"]: m["value"] for m in session["metricValues"]}
    assert 0.5 < values["val/acc"] <= 1.0


def test_overrides_name_the_hparams_they_set():
    names = ["activation", "depth", "lr", "max_epochs", "data.noise", "data.seed"]
    overrides = ["activation=tanh", "optimizer.lr=0.1", "+data.noise=0.2", "data.seed=1"]
    overrides += ["trainer.max_epochs=3", "launcher=ray", "output_dir=/tmp/x"]
    assert overridden_hparams(overrides, names) == [
        "activation", "lr", "data.noise", "data.seed", "max_epochs"
    ]  # fmt: skip


@pytest.mark.slow  # about 12 s: two Chromium starts
@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian's chromium")
def test_chromium_renders_the_custom_scalars_page(make_cfg, tensorboard_server, tmp_path):
    # The README's Tour screenshots come from this: headless Chromium on a real TensorBoard.
    logdir, base = tensorboard_server
    run = logdir / "activation=tanh,depth=2"
    train(make_cfg("depth=2", "data.num_samples=100", "width=8", output_dir=run))
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if _get(base, "/data/plugin/custom_scalars/layout").get("category"):
                break
        except OSError:
            pass
        time.sleep(0.5)
    chromium = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    url = f"{base}/#custom_scalars&_smoothingWeight=0"
    budget = "--virtual-time-budget=10000"
    dom = subprocess.run(
        [*chromium, budget, "--dump-dom", url], capture_output=True, text=True, timeout=120
    ).stdout
    assert "tf-custom-scalar-dashboard" in dom
    png = tmp_path / "custom_scalars.png"
    subprocess.run(
        [*chromium, budget, "--window-size=800,600", f"--screenshot={png}", url],
        capture_output=True,
        timeout=120,
    )
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
