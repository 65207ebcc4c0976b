"""Runner presets: one flag -> the right Beam options, and nothing else branches on runner names."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from apache_beam.options.pipeline_options import (
    HadoopFileSystemOptions,
    PortableOptions,
    StandardOptions,
)

from config.settings import PlatformSettings
from runners.options import FlinkOptions, KafkaOptions, RegistryOptions
from runners.presets import (
    PRESETS,
    RUNNERS,
    RunnerPresetError,
    add_runner_argument,
    pipeline_options,
    preset_args,
    prism_location,
)


@pytest.fixture
def settings(tmp_path: Path) -> PlatformSettings:
    """Settings whose cache holds an (empty, executable) prism file, so the prism preset resolves."""
    prism = tmp_path / "cache" / "bin" / "prism"
    prism.parent.mkdir(parents=True)
    prism.write_bytes(b"")
    prism.chmod(0o755)
    return PlatformSettings(cache_dir=tmp_path / "cache", job_server_port=18099, flink_checkpoint_interval_ms=4321,
                            hdfs_http_port=19870, hdfs_user="analyst")


def test_each_preset_maps_to_its_beam_runner(settings: PlatformSettings) -> None:
    assert RUNNERS == ("direct", "prism", "flink")
    runners = {name: pipeline_options(name, False, [], settings).view_as(StandardOptions).runner for name in RUNNERS}
    assert runners == {"direct": "DirectRunner", "prism": "PrismRunner", "flink": "PortableRunner"}


def test_prism_uses_the_binary_from_the_cache(settings: PlatformSettings) -> None:
    options = pipeline_options("prism", True, [], settings).get_all_options()
    assert options["prism_location"] == str(settings.cache_dir / "bin" / "prism")
    assert options["streaming"] is True


def test_prism_runs_its_own_server_so_a_failed_direct_run_cannot_poison_it(settings: PlatformSettings) -> None:
    experiments = pipeline_options("prism", False, [], settings).get_all_options()["experiments"]
    assert "disable_prism_server_singleton" in experiments


def test_prism_never_splits_a_bundle_so_a_key_of_a_stateful_stage_is_in_one_bundle_at_a_time(
        settings: PlatformSettings) -> None:
    """Prism's split releases the residual's keys while the primary still holds them (issue 18: settled
    predictions left unscored or scored twice); both Prism presets turn splitting off."""
    for runner in ("prism", "direct"):
        for streaming in (True, False):
            experiments = pipeline_options(runner, streaming, [], settings).get_all_options()["experiments"]
            assert "prism_disable_sdf_split" in experiments, (runner, streaming, experiments)
            assert "disable_prism_server_singleton" in experiments


def test_direct_gets_the_local_prism_when_installed(settings: PlatformSettings, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    # Beam 2.77's DirectRunner tries Prism first; without a location it would try to download it.
    assert pipeline_options("direct", False, [], settings).get_all_options()["prism_location"] == str(
        settings.cache_dir / "bin" / "prism")
    monkeypatch.delenv("TRAFFIC_PRISM_LOCATION", raising=False)
    bare = pipeline_options("direct", False, [], PlatformSettings(cache_dir=tmp_path / "empty-cache"))
    assert bare.get_all_options()["prism_location"] is None  # still runs, in-process


def test_prism_falls_back_to_the_environment_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    elsewhere = tmp_path / "tools" / "prism"
    elsewhere.parent.mkdir()
    elsewhere.write_bytes(b"")
    monkeypatch.setenv("TRAFFIC_PRISM_LOCATION", str(elsewhere))
    assert prism_location(PlatformSettings(cache_dir=tmp_path / "empty-cache")) == elsewhere


def test_missing_prism_is_a_one_line_error_not_a_download(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRAFFIC_PRISM_LOCATION", raising=False)
    with pytest.raises(RunnerPresetError, match=r"not installed at .*bin/prism \(run `traffic setup`"):
        pipeline_options("prism", False, [], PlatformSettings(cache_dir=tmp_path / "empty-cache"))


def test_flink_defaults_to_loopback_on_the_local_job_server(settings: PlatformSettings) -> None:
    options = pipeline_options("flink", False, [], settings)
    portable = options.view_as(PortableOptions)
    assert portable.job_endpoint == "127.0.0.1:18099"
    assert portable.environment_type == "LOOPBACK"
    assert options.view_as(StandardOptions).streaming is False
    assert options.view_as(FlinkOptions).checkpointing_interval is None


def test_flink_streaming_sends_the_checkpoint_interval(settings: PlatformSettings) -> None:
    options = pipeline_options("flink", True, [], settings)
    assert options.view_as(StandardOptions).streaming is True
    # Declared options are what the PortableRunner serialises for the job server.
    assert options.get_all_options(retain_unknown_options=False)["checkpointing_interval"] == 4321
    assert "--finish_bundle_before_checkpointing" in preset_args("flink", True, [], settings)
    assert "--finish_bundle_before_checkpointing" not in preset_args("flink", False, [], settings)


def test_flink_streaming_bundles_are_short_and_a_given_flag_wins(settings: PlatformSettings) -> None:
    short = settings.model_copy(update={"flink_max_bundle_ms": 40})
    assert pipeline_options("flink", True, (), short).get_all_options()["max_bundle_time_mills"] == 40
    given = pipeline_options("flink", True, ["--max_bundle_time_mills=500"], short)
    assert given.get_all_options()["max_bundle_time_mills"] == 500
    assert "--max_bundle_time_mills=40" not in preset_args("flink", False, [], short)


@pytest.mark.parametrize("runner", ["direct", "prism", "flink"])
def test_every_runner_turns_the_sdk_state_cache_on(settings: PlatformSettings, runner: str) -> None:
    options = pipeline_options(runner, True, (), settings.model_copy(update={"sdk_state_cache_mb": 64}))
    assert options.get_all_options()["max_cache_memory_usage_mb"] == 64


def test_flink_worker_pool_switches_to_external(settings: PlatformSettings) -> None:
    options = pipeline_options("flink", True, ["--flink_worker_pool=127.0.0.1:50000"], settings)
    portable = options.view_as(PortableOptions)
    assert (portable.environment_type, portable.environment_config) == ("EXTERNAL", "127.0.0.1:50000")


def test_a_bad_worker_pool_address_is_rejected(settings: PlatformSettings) -> None:
    with pytest.raises(RunnerPresetError, match="--flink_worker_pool: 'nohost' is not HOST:PORT"):
        preset_args("flink", True, ["--flink_worker_pool=nohost"], settings)
    spaced = pipeline_options("flink", False, ["--flink_worker_pool", "10.0.0.5:50000"], settings)
    assert spaced.view_as(PortableOptions).environment_config == "10.0.0.5:50000"


def test_hdfs_flags_only_when_a_path_is_hdfs(settings: PlatformSettings) -> None:
    local = pipeline_options("direct", False, ["--output=/tmp/out"], settings).view_as(HadoopFileSystemOptions)
    assert local.hdfs_host is None
    remote = pipeline_options("direct", False, [], settings, paths=["hdfs://features/2012"])
    hdfs = remote.view_as(HadoopFileSystemOptions)
    assert (hdfs.hdfs_host, hdfs.hdfs_port, hdfs.hdfs_user) == ("127.0.0.1", "19870", "analyst")


def test_explicit_hdfs_flags_are_not_overridden(settings: PlatformSettings) -> None:
    args = preset_args("prism", False, ["--output=hdfs://x", "--hdfs_host=namenode"], settings)
    assert [a for a in args if a.startswith("--hdfs_host")] == ["--hdfs_host=namenode"]
    assert "--hdfs_port=19870" in args


def test_extra_args_come_last_and_win(settings: PlatformSettings) -> None:
    args = preset_args("flink", False, ["--environment_type=PROCESS", "--job_name=nightly"], settings)
    assert args[0] == "--runner=PortableRunner"
    assert args[-2:] == ["--environment_type=PROCESS", "--job_name=nightly"]
    assert pipeline_options("flink", False, args[-2:], settings).view_as(PortableOptions).environment_type == "PROCESS"


def test_unknown_runner_names_the_choices(settings: PlatformSettings) -> None:
    with pytest.raises(RunnerPresetError, match="unknown runner 'spark'; choose one of direct, prism, flink"):
        pipeline_options("spark", False, [], settings)


def test_runner_argument_offers_exactly_the_presets() -> None:
    parser = argparse.ArgumentParser()
    add_runner_argument(parser)
    assert parser.parse_args([]).runner == "prism"
    assert parser.parse_args(["--runner", "flink"]).runner == "flink"
    with pytest.raises(SystemExit):
        parser.parse_args(["--runner", "dataflow"])
    assert set(PRESETS) == set(RUNNERS)


def test_shared_typed_options_parse() -> None:
    options = pipeline_options("direct", True, [
        "--kafka_bootstrap_servers=k:9092", "--kafka_start=earliest", "--kafka_max_out_of_orderness_s=0.5",
        "--model_registry=hdfs://models", "--model_refresh_s=5",
    ], PlatformSettings())
    kafka, registry = options.view_as(KafkaOptions), options.view_as(RegistryOptions)
    got = (kafka.kafka_bootstrap_servers, kafka.kafka_start, kafka.kafka_max_out_of_orderness_s)
    assert got == ("k:9092", "earliest", 0.5)
    assert (registry.model_registry, registry.model_refresh_s) == ("hdfs://models", 5.0)
    assert options.view_as(HadoopFileSystemOptions).hdfs_port == str(PlatformSettings().hdfs_http_port)
