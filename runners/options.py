"""Typed pipeline options the project's pipelines share.

Beam collects every ``PipelineOptions`` subclass that has been imported, so
importing this module makes the flags below known to any ``PipelineOptions``
parse; read them with ``options.view_as(KafkaOptions)`` etc. HDFS settings are
Beam's own :class:`HadoopFileSystemOptions` (``--hdfs_host``, ``--hdfs_port`` =
the WebHDFS HTTP port, ``--hdfs_user``), re-exported here.

``--checkpointing_interval`` and ``--max_bundle_time_mills`` are declared here
(Beam's Python SDK does not) so that they are typed and the portable runner
always sends them to the Flink job server, which maps them onto
``FlinkPipelineOptions.checkpointingInterval`` and ``maxBundleTimeMills``.
"""

from __future__ import annotations

import argparse

from apache_beam.options.pipeline_options import HadoopFileSystemOptions, PipelineOptions

from ml.registry import MODEL_REFRESH_S

__all__ = [
    "FlinkOptions",
    "HadoopFileSystemOptions",
    "KafkaOptions",
    "RegistryOptions",
    "host_port",
]

KAFKA_START_POSITIONS = ("earliest", "latest", "committed")


def host_port(value: str) -> str:
    """argparse type for ``HOST:PORT`` values."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{value!r} is not HOST:PORT")
    return value


class KafkaOptions(PipelineOptions):
    """Where the pipelines read and write Kafka."""

    @classmethod
    def _add_argparse_args(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--kafka_bootstrap_servers", type=str, default=None,
                            help="Kafka bootstrap servers (default: the local platform's broker)")
        parser.add_argument("--kafka_group_id", type=str, default=None,
                            help="consumer group whose offsets the reader commits (best effort)")
        parser.add_argument("--kafka_start", choices=KAFKA_START_POSITIONS, default="committed",
                            help="where a fresh job starts reading: earliest, latest or committed")
        parser.add_argument("--kafka_max_out_of_orderness_s", type=float, default=0.0,
                            help="how far behind the newest record time the reader's watermark stays")


class RegistryOptions(PipelineOptions):
    """Where the streaming job finds its models."""

    @classmethod
    def _add_argparse_args(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--model_registry", type=str, default=None,
                            help="model registry root, local or hdfs:// (default: the work directory's)")
        parser.add_argument("--model_refresh_s", type=float, default=MODEL_REFRESH_S,
                            help="how often the streaming job looks for a newer model")


class FlinkOptions(PipelineOptions):
    """Flink settings the job server reads from the submitted options."""

    @classmethod
    def _add_argparse_args(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--checkpointing_interval", type=int, default=None,
                            help="Flink checkpoint interval in milliseconds (streaming jobs)")
        parser.add_argument("--max_bundle_time_mills", type=int, default=None,
                            help="longest a Flink bundle stays open, in milliseconds (Beam's default: 1000)")
        parser.add_argument("--flink_worker_pool", type=host_port, default=None,
                            help="HOST:PORT of a Beam Python worker pool (worker_pool_main): run the SDK "
                            "harness there (EXTERNAL) instead of inside the submitting process (LOOPBACK)")
