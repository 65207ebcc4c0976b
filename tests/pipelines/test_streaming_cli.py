"""``traffic stream`` (pipelines/streaming_cli.py): its flags and typed options, waiting for the job, stopping it."""

from __future__ import annotations

import argparse

import pytest
from small_models import register_ridge_bundle

from pipelines.streaming import DEFAULT_GROUP_ID, StreamingError
from pipelines.streaming_cli import make_config, typed_option_args
from runners.cli import main
from runners.presets import pipeline_options
from runners.settings import PlatformSettings


def _flags(**given) -> argparse.Namespace:
    defaults = {"bootstrap": None, "group_id": None, "start": None, "registry": None, "model_refresh_s": None,
                "output": "none", "window_s": 300, "allowed_lateness_s": 300, "to_store": False}
    return argparse.Namespace(**{**defaults, **given})


@pytest.fixture(scope="module")
def registry(tmp_path_factory) -> str:
    root = str(tmp_path_factory.mktemp("registry"))
    register_ridge_bundle(root, n_sensors=4, days=1)
    return root


def test_only_the_flags_given_become_typed_options() -> None:
    args = _flags(bootstrap="k:9092", start="earliest", model_refresh_s=5.0)
    assert typed_option_args(args, ["--checkpointing_interval=10000"]) == [
        "--kafka_bootstrap_servers=k:9092", "--kafka_start=earliest", "--model_refresh_s=5.0"]
    assert typed_option_args(_flags(), []) == []


@pytest.mark.parametrize(("given", "beam_arg"), [
    ({"bootstrap": "k:1"}, "--kafka_bootstrap_servers=k:2"),
    ({"registry": "/a"}, "--model_registry"),
    ({"group_id": "g"}, "--kafka_group_id=h"),
])
def test_a_flag_and_its_typed_option_together_are_refused(given, beam_arg) -> None:
    with pytest.raises(StreamingError, match="set the same option"):
        typed_option_args(_flags(**given), [beam_arg])


def test_the_config_comes_from_the_typed_options(registry) -> None:
    options = pipeline_options("direct", True, [
        "--kafka_bootstrap_servers=k:9092", "--kafka_group_id=g1", "--kafka_start=latest",
        "--kafka_max_out_of_orderness_s=2.5", f"--model_registry={registry}", "--model_refresh_s=7",
    ], PlatformSettings())
    cfg = make_config(_flags(), options)
    got = (cfg.bootstrap_servers, cfg.group_id, cfg.start, cfg.max_out_of_orderness_s, cfg.registry,
           cfg.model_refresh_s, len(cfg.sensor_ids), cfg.output)
    assert got == ("k:9092", "g1", "latest", 2.5, registry, 7.0, 4, None)


def test_the_flags_reach_the_config_through_the_typed_options(registry) -> None:
    args = _flags(bootstrap="b:1", group_id="g2", start="earliest", registry=registry, model_refresh_s=3.0)
    cfg = make_config(args, pipeline_options("direct", True, typed_option_args(args, []), PlatformSettings()))
    assert (cfg.bootstrap_servers, cfg.group_id, cfg.start, cfg.registry, cfg.model_refresh_s) == (
        "b:1", "g2", "earliest", registry, 3.0)


def test_defaults_without_flags(registry, monkeypatch) -> None:
    monkeypatch.setenv("TRAFFIC_MODEL_REGISTRY", registry)
    cfg = make_config(_flags(), pipeline_options("direct", True, [], PlatformSettings()))
    assert (cfg.group_id, cfg.start, cfg.max_out_of_orderness_s) == (DEFAULT_GROUP_ID, "committed", 0.0)
    assert cfg.bootstrap_servers == PlatformSettings().kafka_bootstrap and cfg.registry == registry


def test_bad_values_are_one_line_errors(registry, capsys) -> None:
    argv = ["stream", "--registry", registry, "--output", "none"]
    assert main([*argv, "--bootstrap", "a:1", "--", "--kafka_bootstrap_servers=b:2"]) == 2
    assert main([*argv, "--model-refresh-s", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "traffic: error: --bootstrap and --kafka_bootstrap_servers set the same option: give one of them",
        "traffic: error: --model-refresh-s must be positive and --kafka_max_out_of_orderness_s not negative",
    ]


class _Job:
    """A job result whose state is polled; its ``wait_until_finish`` fails as Prism's did after five minutes."""

    def __init__(self, states: list[str]) -> None:
        self.states = list(states)
        self.polled = 0

    @property
    def state(self) -> str:
        self.polled += 1
        return self.states.pop(0) if len(self.states) > 1 else self.states[0]

    def wait_until_finish(self):
        raise AssertionError("the job's streams have a deadline: its state must be polled instead")


def test_waiting_for_a_job_polls_its_state_until_it_ends() -> None:
    from apache_beam.runners.runner import PipelineState

    from pipelines.streaming_cli import wait_for_job

    job = _Job([PipelineState.STARTING, PipelineState.RUNNING, PipelineState.RUNNING, PipelineState.CANCELLED])
    assert wait_for_job(job, poll_s=0.01) == PipelineState.CANCELLED and job.polled == 4


@pytest.mark.integration
def test_traffic_stream_on_prism_outlives_the_job_server_timeout_and_stops_on_sigterm(
    registry, kafka_bootstrap, fresh_topic, tmp_path
) -> None:
    """``--job_server_timeout`` is the deadline of the job's state stream on Prism (300 s by default, 20 s here)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    env = {**os.environ, "TRAFFIC_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap}
    for field in ("raw", "events", "dead_letters", "aggregates", "predictions", "alerts", "scores"):
        env[f"TRAFFIC_TOPICS_{field.upper()}"] = fresh_topic(f"stream-cli-{field}", partitions=1)
    process = subprocess.Popen(
        [sys.executable, "-m", "runners.cli", "stream", "--runner", "prism", "--registry", registry,
         "--output", "none", "--", "--job_server_timeout=20"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )
    try:
        time.sleep(60)  # three deadlines
        alive = process.poll() is None
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert alive, out[-3000:]
    assert process.returncode == 0, out[-3000:]
    assert "stream: cancelling the job" in out and "traffic: error" not in out
