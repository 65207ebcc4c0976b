"""One model registry root: what `traffic train` writes is what `traffic serve` (and `traffic run`) serve.

Before config/ owned the root, `traffic train` used ``<TRAFFIC_WORK_DIR>/models`` while
`traffic serve` used ``<repo>/.work/models``: with ``TRAFFIC_WORK_DIR`` set they disagreed.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from api.settings import ApiSettings
from config.settings import PlatformSettings

TRAFFIC = [sys.executable, "-m", "cli.main"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_api_and_platform_share_the_registry_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRAFFIC_MODEL_REGISTRY", raising=False)
    monkeypatch.delenv("TRAFFIC_API_MODEL_REGISTRY", raising=False)
    monkeypatch.setenv("TRAFFIC_WORK_DIR", str(tmp_path))
    assert PlatformSettings().registry_root == str(tmp_path / "models")
    assert ApiSettings().model_registry == tmp_path / "models"
    monkeypatch.setenv("TRAFFIC_MODEL_REGISTRY", str(tmp_path / "elsewhere"))
    assert PlatformSettings().registry_root == str(tmp_path / "elsewhere")
    assert ApiSettings().model_registry == tmp_path / "elsewhere"


@pytest.mark.slow
def test_traffic_serve_serves_what_traffic_train_registered_under_the_work_dir(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("TRAFFIC_MODEL_REGISTRY", "TRAFFIC_API_MODEL_REGISTRY")}
    env["TRAFFIC_WORK_DIR"] = str(tmp_path / "work")
    trained = subprocess.run([*TRAFFIC, "train", "--quick"], env=env, capture_output=True, text=True, timeout=900)
    assert trained.returncode == 0, trained.stderr[-2000:]
    version = (tmp_path / "work" / "models" / "LATEST").read_text().strip()
    assert version

    port = _free_port()
    env.update(TRAFFIC_API_PORT=str(port), TRAFFIC_API_REQUIRE_VENDOR="false",
               TRAFFIC_API_BOOTSTRAP_SERVERS="127.0.0.1:1", TRAFFIC_API_KAFKA_TIMEOUT_S="1")
    log = (tmp_path / "serve.log").open("w")
    server = subprocess.Popen([*TRAFFIC, "serve"], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        model = None
        deadline = time.monotonic() + 120
        while model is None and time.monotonic() < deadline and server.poll() is None:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/model", timeout=5)
                model = response.json() if response.status_code == 200 else None
            except httpx.TransportError:
                time.sleep(0.5)
        assert model is not None, (tmp_path / "serve.log").read_text()[-2000:]
        assert model["version"] == version and model["registry"] == str(tmp_path / "work" / "models")
    finally:
        server.terminate()
        server.wait(30)
        log.close()
