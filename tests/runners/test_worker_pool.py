"""``traffic worker-pool``: Beam's worker pool on 127.0.0.1, starting workers with the state cache on."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import grpc
import pytest

from cli.main import main
from runners.worker_pool import start_pool


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_workers_start_with_the_state_cache_and_this_environments_python(monkeypatch) -> None:
    from apache_beam.portability.api import beam_fn_api_pb2, beam_fn_api_pb2_grpc, endpoints_pb2
    from apache_beam.runners.worker import worker_pool_main

    started: list[list[str]] = []

    class _Popen:  # records the worker's command instead of starting it
        def __init__(self, command, **_kwargs) -> None:
            started.append(command)

        def kill(self) -> None:  # the pool kills its workers at exit
            pass

    monkeypatch.setattr(worker_pool_main.subprocess, "Popen", _Popen)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    port = _free_port()
    server = start_pool("127.0.0.1", port, state_cache_mb=64)
    try:
        stub = beam_fn_api_pb2_grpc.BeamFnExternalWorkerPoolStub(grpc.insecure_channel(f"127.0.0.1:{port}"))
        response = stub.StartWorker(beam_fn_api_pb2.StartWorkerRequest(
            worker_id="w1", control_endpoint=endpoints_pb2.ApiServiceDescriptor(url="localhost:1")), timeout=10)
    finally:
        server.stop(0)
    assert not response.error
    (command,) = started
    assert command[0] == "python" and "state_cache_size=67108864" in command[-1]
    assert shutil.which("python") == str(Path(sys.executable).parent / "python")  # what the worker's `python` is


def test_the_pool_listens_on_loopback_and_stops_on_sigterm() -> None:
    port = _free_port()
    process = subprocess.Popen([sys.executable, "-m", "cli.main", "worker-pool", "--port", str(port)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watchdog = threading.Timer(300, process.kill)  # a start that never ends: readline() then returns ""
    watchdog.start()
    try:
        # Ready when it says so: the port opens a moment earlier, before the command can stop cleanly.
        # The start-up cost (importing Beam) is what a busy machine stretches.
        ready = process.stdout.readline()
        watchdog.cancel()
        with socket.socket() as probe:
            listening = probe.connect_ex(("127.0.0.1", port)) == 0
        process.send_signal(signal.SIGTERM)
        _out, err = process.communicate(timeout=30)
    finally:
        watchdog.cancel()
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert f"serving at 127.0.0.1:{port}" in ready, (ready, err)
    assert listening, err
    assert process.returncode == 130 and err.strip().splitlines()[-1] == "traffic: interrupted"
    assert "Traceback" not in err


def test_a_port_in_use_is_a_one_line_error(capsys) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["worker-pool", "--port", str(port)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"traffic: error: port {port} on 127.0.0.1 is already in use (another worker pool?)")


@pytest.mark.parametrize("args", [["--port", "0"], ["--state-cache-mb", "-1"]])
def test_bad_flags_are_one_line_errors(args, capsys) -> None:
    assert main(["worker-pool", *args]) == 2
    assert capsys.readouterr().err.strip() == (
        "traffic: error: --port must be 1-65535 and --state-cache-mb not negative")
