"""Runner presets: one ``--runner direct|prism|flink`` flag -> Beam pipeline options.

This table is the only place that knows runner names; pipelines call
:func:`pipeline_options` and never branch on the runner.

=======  ==============================================================================
direct   ``DirectRunner``: unit tests, small batch runs (no unbounded streaming); Beam 2.77
         runs it on Prism when it can, so it gets the local binary too
prism    ``PrismRunner`` with the Go-built binary from ``traffic setup`` (never a
         download): local batch and real unbounded streaming; the default
flink    ``PortableRunner`` to the Beam Flink job server of the local platform
         (``--job_endpoint=127.0.0.1:8099``), SDK harness ``LOOPBACK`` (inside the
         submitting process) or, with ``--flink_worker_pool=HOST:PORT``, ``EXTERNAL``
         (a ``worker_pool_main`` process); streaming jobs get ``--checkpointing_interval``
=======  ==============================================================================

The Prism presets (``direct`` runs on Prism too) switch off Prism's runner-initiated bundle
splits (``prism_disable_sdf_split``): a split lets two bundles of one key of a stateful stage
run at once (see ``_NO_PRISM_SPLITS``).

Every preset adds ``--max_cache_memory_usage_mb`` (the SDK harness's state cache,
``sdk_state_cache_mb``), ``--streaming`` for streaming jobs and, when a path in the
arguments is ``hdfs://``, the platform's WebHDFS settings (``--hdfs_host``,
``--hdfs_port``, ``--hdfs_user``). Flags in ``extra_args`` come last and win.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from apache_beam.options.pipeline_options import PipelineOptions

from config.hdfs import hdfs_options
from config.settings import PlatformSettings, get_settings
from runners.install import InstallLayout
from runners.options import host_port
from runners.sdk_harness import shorten_state_sampling
from schemas.exceptions import TrafficError

__all__ = [
    "PRESETS",
    "RUNNERS",
    "PresetContext",
    "RunnerPreset",
    "RunnerPresetError",
    "add_runner_argument",
    "pipeline_options",
    "preset_args",
    "prism_location",
]

PRISM_LOCATION_ENV = "TRAFFIC_PRISM_LOCATION"


class RunnerPresetError(TrafficError):
    """An unknown runner name, or a runner whose binary is not installed."""


@dataclass(frozen=True)
class PresetContext:
    """What a preset needs to build its flags."""

    settings: PlatformSettings
    streaming: bool
    worker_pool: str | None


@dataclass(frozen=True)
class RunnerPreset:
    """A runner choice: its Beam runner class and the flags it adds."""

    beam_runner: str
    description: str
    flags: Callable[[PresetContext], list[str]]


def prism_location(settings: PlatformSettings | None = None) -> Path:
    """The Go-built Prism binary: ``<cache_dir>/bin/prism``, else ``$TRAFFIC_PRISM_LOCATION``."""
    settings = settings or get_settings()
    installed = InstallLayout.from_settings(settings).prism
    if installed.is_file():
        return installed
    override = os.environ.get(PRISM_LOCATION_ENV)
    if override and Path(override).expanduser().is_file():
        return Path(override).expanduser()
    raise RunnerPresetError(
        f"the Prism runner is not installed at {installed} (run `traffic setup`, or set {PRISM_LOCATION_ENV})"
    )


# Beam keeps one Prism job server per process; a DirectRunner run without --prism_location (which
# tries to download Prism, and fails offline) leaves a broken one there that later Prism runs reuse.
_OWN_PRISM = "--experiments=disable_prism_server_singleton"
# Prism 2.77 splits a slow bundle and re-queues the residual, releasing the residual's keys while the
# primary still processes the same keys (engine/elementmanager.go, stageState.splitBundle; beam#35771
# for bundles with timers). A stateful stage then runs two bundles of one key at once on the same
# state: updates are lost or applied twice (settled predictions left unscored, or scored twice; a
# network step forecast twice). Without runner-initiated splits every key is in one bundle at a time;
# SDF self-checkpoints (the Kafka read's defer_remainder) are not splits and still happen.
_NO_PRISM_SPLITS = "--experiments=prism_disable_sdf_split"


def _direct(ctx: PresetContext) -> list[str]:
    # Beam 2.77's DirectRunner first tries to run the pipeline on Prism: point it at the local binary
    # (no download attempt); without one it falls back to its in-process runners.
    try:
        return [f"--prism_location={prism_location(ctx.settings)}", _OWN_PRISM, _NO_PRISM_SPLITS]
    except RunnerPresetError:
        return []


def _prism(ctx: PresetContext) -> list[str]:
    return [f"--prism_location={prism_location(ctx.settings)}", _OWN_PRISM, _NO_PRISM_SPLITS]


def _flink(ctx: PresetContext) -> list[str]:
    s = ctx.settings
    flags = [f"--job_endpoint={s.host}:{s.job_server_port}"]
    if ctx.worker_pool:
        flags += ["--environment_type=EXTERNAL", f"--environment_config={ctx.worker_pool}"]
    else:
        flags += ["--environment_type=LOOPBACK"]
    if ctx.streaming:
        flags.append(f"--checkpointing_interval={s.flink_checkpoint_interval_ms}")
        # Otherwise a checkpoint that lands mid-bundle makes Beam's Flink operator buffer that bundle's outputs
        # until its next input: at the end of a replay (or in a lull) they never leave (no window files, missing
        # predictions).
        flags.append("--finish_bundle_before_checkpointing")
        # Each fused stage holds its outputs until its bundle finishes; Flink's default of 1 s per bundle
        # adds up to a second per stage to a step's end-to-end latency.
        flags.append(f"--max_bundle_time_mills={s.flink_max_bundle_ms}")
    return flags


PRESETS: Mapping[str, RunnerPreset] = {
    "direct": RunnerPreset("DirectRunner", "in-process; tests and small batch runs", _direct),
    "prism": RunnerPreset("PrismRunner", "local portable runner (batch and unbounded streaming)", _prism),
    "flink": RunnerPreset("PortableRunner", "the Flink cluster through the Beam job server", _flink),
}
RUNNERS: tuple[str, ...] = tuple(PRESETS)


def _worker_pool(args: Sequence[str]) -> str | None:
    value = None
    for i, arg in enumerate(args):
        if arg.startswith("--flink_worker_pool="):
            value = arg.split("=", 1)[1]
        elif arg == "--flink_worker_pool" and i + 1 < len(args):
            value = args[i + 1]
    if value is None:
        return None
    try:
        return host_port(value)
    except argparse.ArgumentTypeError as exc:
        raise RunnerPresetError(f"--flink_worker_pool: {exc}") from None


def flag_given(args: Sequence[str], name: str) -> bool:
    """Whether ``--name`` or ``--name=value`` is among ``args``."""
    return any(a == f"--{name}" or a.startswith(f"--{name}=") for a in args)


def _hdfs_flags(settings: PlatformSettings, args: Sequence[str], paths: Sequence[str]) -> list[str]:
    if not any("hdfs://" in str(value) for value in (*args, *paths)):
        return []
    return [f"--{name}={value}" for name, value in hdfs_options(settings).items() if not flag_given(args, name)]


def preset_args(
    runner: str,
    streaming: bool,
    extra_args: Sequence[str] = (),
    settings: PlatformSettings | None = None,
    paths: Sequence[str] = (),
) -> list[str]:
    """The full argument list for ``runner``: preset flags first, then ``extra_args``."""
    preset = PRESETS.get(runner)
    if preset is None:
        raise RunnerPresetError(f"unknown runner {runner!r}; choose one of {', '.join(RUNNERS)}")
    settings = settings or get_settings()
    extra = list(extra_args)
    worker_pool = _worker_pool(extra)
    args = [f"--runner={preset.beam_runner}"]
    args += preset.flags(PresetContext(settings, streaming, worker_pool))
    args.append(f"--max_cache_memory_usage_mb={settings.sdk_state_cache_mb}")
    if streaming:
        args.append("--streaming")
    args += _hdfs_flags(settings, extra, paths)
    return args + extra


def pipeline_options(
    runner: str,
    streaming: bool,
    extra_args: Sequence[str] = (),
    settings: PlatformSettings | None = None,
    paths: Sequence[str] = (),
) -> PipelineOptions:
    """``PipelineOptions`` for ``runner`` (``direct``, ``prism`` or ``flink``); see the module doc.

    ``paths``: input/output locations of the job; any ``hdfs://`` one adds the WebHDFS flags.
    The SDK harness of a ``direct`` or ``LOOPBACK`` job runs in this process: its state sampler's
    period is shortened here (:mod:`runners.sdk_harness`), before the job starts.
    """
    shorten_state_sampling()
    return PipelineOptions(preset_args(runner, streaming, extra_args, settings, paths))


def add_runner_argument(parser: argparse.ArgumentParser, default: str = "prism") -> None:
    """Adds the one ``--runner`` flag a pipeline command needs."""
    choices = ", ".join(f"{name} ({preset.description})" for name, preset in PRESETS.items())
    parser.add_argument("--runner", choices=RUNNERS, default=default, help=f"where the job runs: {choices}")
