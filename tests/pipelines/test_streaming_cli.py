"""``traffic stream`` (pipelines/streaming_cli.py): its flags and typed options, waiting for the job, stopping it."""

from __future__ import annotations

import argparse

import pytest
from small_models import register_ridge_bundle

from cli.main import main
from config.settings import PlatformSettings
from pipelines.streaming import DEFAULT_GROUP_ID, StreamingError
from pipelines.streaming_cli import make_config, typed_option_args
from runners.presets import pipeline_options


def _flags(**given) -> argparse.Namespace:
    defaults = {"bootstrap_servers": None, "group_id": None, "start": None, "registry": None, "model_refresh_s": None,
                "output": "none", "window_s": 300, "allowed_lateness_s": 300, "file_window_s": 3600, "to_store": False,
                "scores": True, "incidents": True}
    return argparse.Namespace(**{**defaults, **given})


@pytest.fixture(scope="module")
def registry(tmp_path_factory) -> str:
    root = str(tmp_path_factory.mktemp("registry"))
    register_ridge_bundle(root, n_sensors=4, days=1)
    return root


def test_only_the_flags_given_become_typed_options() -> None:
    args = _flags(bootstrap_servers="k:9092", start="earliest", model_refresh_s=5.0)
    assert typed_option_args(args, ["--checkpointing_interval=10000"]) == [
        "--kafka_bootstrap_servers=k:9092", "--kafka_start=earliest", "--model_refresh_s=5.0"]
    assert typed_option_args(_flags(), []) == []


@pytest.mark.parametrize(("given", "beam_arg", "flag"), [
    ({"bootstrap_servers": "k:1"}, "--kafka_bootstrap_servers=k:2", "--bootstrap-servers"),
    ({}, "--kafka_bootstrap_servers=k:2", "--bootstrap-servers"),
    ({"registry": "/a"}, "--model_registry", "--registry"),
    ({}, "--kafka_group_id=h", "--group-id"),
])
def test_an_option_the_command_has_a_flag_for_is_refused_after_the_dashes(given, beam_arg, flag) -> None:
    """One spelling per option: the command's flag (Beam flags after -- are for what it has no flag for)."""
    with pytest.raises(StreamingError, match=f"give {flag} before --, not after it"):
        typed_option_args(_flags(**given), [beam_arg])


def test_beam_flags_the_command_has_no_flag_for_pass_after_the_dashes(capsys) -> None:
    from cli.main import build_parser
    from pipelines.beam_flags import beam_flags, parse_args

    args = parse_args(build_parser("stream"), ["stream", "--bootstrap-servers", "k:1", "--",
                                               "--kafka_max_out_of_orderness_s=5", "--checkpointing_interval=10"])
    assert args.bootstrap_servers == "k:1"
    assert beam_flags(args) == ["--kafka_max_out_of_orderness_s=5", "--checkpointing_interval=10"]
    assert typed_option_args(args, beam_flags(args)) == ["--kafka_bootstrap_servers=k:1"]


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
    args = _flags(bootstrap_servers="b:1", group_id="g2", start="earliest", registry=registry, model_refresh_s=3.0)
    cfg = make_config(args, pipeline_options("direct", True, typed_option_args(args, []), PlatformSettings()))
    assert (cfg.bootstrap_servers, cfg.group_id, cfg.start, cfg.registry, cfg.model_refresh_s) == (
        "b:1", "g2", "earliest", registry, 3.0)


def test_defaults_without_flags(registry, monkeypatch) -> None:
    monkeypatch.setenv("TRAFFIC_MODEL_REGISTRY", registry)
    cfg = make_config(_flags(), pipeline_options("direct", True, [], PlatformSettings()))
    assert (cfg.group_id, cfg.start, cfg.max_out_of_orderness_s) == (DEFAULT_GROUP_ID, "committed", 0.0)
    assert cfg.file_window_s == 3600  # a Parquet file an hour per output
    assert cfg.bootstrap_servers == PlatformSettings().bootstrap_servers and cfg.registry == registry


def test_bad_values_are_one_line_errors(registry, capsys) -> None:
    argv = ["stream", "--registry", registry, "--output", "none"]
    assert main([*argv, "--bootstrap-servers", "a:1", "--", "--kafka_bootstrap_servers=b:2"]) == 2
    assert main([*argv, "--model-refresh-s", "0"]) == 2
    assert main([*argv, "--file-window-s", "400"]) == 2
    assert main([*argv, "--file-window-s", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "traffic: error: --kafka_bootstrap_servers is a flag of traffic stream: give --bootstrap-servers before --, "
        "not after it",
        "traffic: error: --model-refresh-s must be positive and --kafka_max_out_of_orderness_s not negative",
        "traffic: error: --file-window-s must be a positive multiple of the 300 s window, not 400",
        "traffic: error: --file-window-s must be a positive multiple of the 300 s window, not 0",
    ]


def test_the_file_window_reaches_the_config(registry) -> None:
    args = _flags(registry=registry, file_window_s=900)
    cfg = make_config(args, pipeline_options("direct", True, typed_option_args(args, []), PlatformSettings()))
    assert cfg.file_window_s == 900


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
    """``--job_server_timeout`` is the deadline of the job's state stream on Prism (300 s by default, 20 s here).

    The job must have started (it validates a step of readings), still work after three such deadlines
    (it validates the next step), and stop on SIGTERM.
    """
    import os
    import signal
    import subprocess
    import sys
    import time

    from topic_contents import record_count

    from kafka_client import producer_config
    from ml.dataset import STEP_MS, VAL_END_MS
    from pipelines.replay import replay

    timeout_s = 20
    env = {**os.environ, "TRAFFIC_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap}
    topics = {field: fresh_topic(f"stream-cli-{field}", partitions=1)
              for field in ("raw", "events", "dead_letters", "aggregates", "predictions", "alerts", "incidents",
                            "scores")}
    env.update({f"TRAFFIC_TOPICS_{field.upper()}": name for field, name in topics.items()})
    log = tmp_path / "stream.log"
    with open(log, "w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "stream", "--runner", "prism", "--registry", registry,
             "--output", "none", "--start", "earliest", "--", f"--job_server_timeout={timeout_s}"],
            stdout=out, stderr=subprocess.STDOUT, text=True, env=env,
        )
    sent = 0

    def send_step(index: int) -> None:
        nonlocal sent
        first = VAL_END_MS - 3600 * 1000 + index * STEP_MS  # validation-period readings (the test period is held out)
        report = replay(None, producer_config(kafka_bootstrap), topics["raw"], speed=float("inf"),
                        start_ms=first, end_ms=first + STEP_MS - 1, progress=False)
        assert report.steps == 1
        sent += report.events

    def wait_until_validated(timeout: float) -> float:
        """Until every raw record sent is a validated event or a dead letter; returns when that happened."""
        deadline = time.monotonic() + timeout
        while record_count(kafka_bootstrap, topics["events"]) + \
                record_count(kafka_bootstrap, topics["dead_letters"]) < sent:
            assert process.poll() is None, f"traffic stream exited: {log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"the job did not validate the readings: {log.read_text()[-3000:]}"
            time.sleep(1)
        return time.monotonic()

    try:
        send_step(0)
        running_since = wait_until_validated(300)  # the job has started: it read and validated a step
        while time.monotonic() < running_since + 3 * timeout_s + 5:  # the time under test: three deadlines
            assert process.poll() is None, f"traffic stream exited: {log.read_text()[-3000:]}"
            time.sleep(1)
        send_step(1)
        wait_until_validated(120)  # the job itself (not only the command) is still working
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    out = log.read_text()
    assert process.returncode == 0, out[-3000:]
    assert "stream: cancelling the job" in out and "traffic: error" not in out
    assert record_count(kafka_bootstrap, topics["raw"]) == sent


def test_scoring_and_incidents_can_be_left_out_of_the_job(registry, tmp_path) -> None:
    import apache_beam as beam

    from pipelines.streaming import build_pipeline
    from pipelines.streaming_cli import _add_arguments
    parser = argparse.ArgumentParser()
    _add_arguments(parser)
    options = pipeline_options("direct", True, [f"--model_registry={registry}"], PlatformSettings())
    full = make_config(parser.parse_args(["--output", str(tmp_path)]), options)
    lean = make_config(parser.parse_args(["--output", str(tmp_path), "--no-scores", "--no-incidents"]), options)
    assert (full.scores, full.incidents, lean.scores, lean.incidents) == (True, True, False, False)

    def labels(cfg) -> set[str]:
        p = beam.Pipeline()
        build_pipeline(p, cfg)
        return {t.full_label.split("/")[0] for t in p.transforms_stack[0].parts}

    def file_outputs(cfg) -> set[str]:  # the outputs the one file grouping is given
        p = beam.Pipeline()
        build_pipeline(p, cfg)
        write = next(t for t in p.transforms_stack[0].parts if t.full_label == "WriteFiles")
        return {t.full_label.split("/")[1] for t in write.parts if t.full_label.startswith("WriteFiles/Key")}

    assert labels(full) - labels(lean) == {"StepActuals", "ScoreForecasts", "PublishScores", "TrackIncidents",
                                           "PublishIncidents", "WindowScoresForFiles"}
    assert file_outputs(full) == {"KeyAggregates", "KeyPredictions", "KeyScores"}
    assert file_outputs(lean) == {"KeyAggregates", "KeyPredictions"}


def test_the_files_are_windowed_by_the_file_window(registry, tmp_path) -> None:
    import apache_beam as beam

    from pipelines.streaming import build_pipeline
    from pipelines.streaming_cli import _add_arguments
    parser = argparse.ArgumentParser()
    _add_arguments(parser)
    options = pipeline_options("direct", True, [f"--model_registry={registry}"], PlatformSettings())

    def file_windows(argv: list[str]) -> set[int]:
        p = beam.Pipeline()
        build_pipeline(p, make_config(parser.parse_args(["--output", str(tmp_path), *argv]), options))
        windowing = [t.transform.windowing.windowfn for t in p.transforms_stack[0].parts
                     if t.full_label.endswith("ForFiles")]
        assert len(windowing) == 3, "aggregates, predictions and scores"
        return {fn.size.micros // 1_000_000 for fn in windowing}

    assert file_windows([]) == {3600}
    assert file_windows(["--file-window-s", "600"]) == {600}
