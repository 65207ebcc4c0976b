"""``traffic stream``'s configuration: its flags and the typed pipeline options they stand for."""

from __future__ import annotations

import argparse

import pytest
from small_models import register_ridge_bundle

from pipelines.streaming import DEFAULT_GROUP_ID, StreamingError, make_config, typed_option_args
from runners.cli import main
from runners.presets import pipeline_options
from runners.settings import PlatformSettings


def _flags(**given) -> argparse.Namespace:
    defaults = {"bootstrap": None, "group_id": None, "start": None, "registry": None, "model_refresh_s": None,
                "output": "none", "window_s": 300, "allowed_lateness_s": 300}
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
