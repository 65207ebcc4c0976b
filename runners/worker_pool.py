"""``traffic worker-pool``: Beam Python SDK workers for ``--flink_worker_pool`` (EXTERNAL), on this host.

Beam's own ``python -m apache_beam.runners.worker.worker_pool_main`` starts each
worker as ``python -c ...`` with the state cache off: the pipeline's
``--max_cache_memory_usage_mb`` never reaches a worker started that way (only one
started through Beam's ``boot`` binary, as the containers do, reads the pipeline
options), and ``python`` is whatever the PATH finds first. Without the cache every
state read goes back to the runner: the streaming job drained a 24 h backlog at
247 events/s that way, at 1,210 through this command (docs/benchmarks.md, streaming section).
This command starts the same pool with the state cache of
``TRAFFIC_SDK_STATE_CACHE_MB`` and with this environment's Python first on the
PATH of the workers it starts, and serves it on 127.0.0.1 only.

    traffic worker-pool --port 50000
    traffic stream --runner flink -- --flink_worker_pool=127.0.0.1:50000 --parallelism=2 --sdk_worker_parallelism=2
"""

from __future__ import annotations

import argparse
import gc
import os
import socket
import sys
import time
from pathlib import Path

from config.settings import get_settings
from schemas.exceptions import TrafficError

__all__ = ["WorkerPoolError", "register", "start_pool"]


class WorkerPoolError(TrafficError):
    """The worker pool cannot start."""


def start_pool(host: str, port: int, state_cache_mb: int):
    """Serve the pool on ``host:port`` (Beam's own ``start`` binds every interface); returns the gRPC server.

    Workers inherit this process's environment, with its Python's directory first on the PATH.
    """
    import atexit

    import grpc
    from apache_beam.portability.api import beam_fn_api_pb2_grpc
    from apache_beam.runners.worker.worker_pool_main import BeamFnExternalWorkerPoolServicer
    from apache_beam.utils import thread_pool_executor

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        if probe.connect_ex((host, port)) == 0:
            raise WorkerPoolError(f"port {port} on {host} is already in use (another worker pool?)")
    os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    pool = BeamFnExternalWorkerPoolServicer(use_process=True, state_cache_size=state_cache_mb << 20,
                                            data_buffer_time_limit_ms=-1)
    server = grpc.server(thread_pool_executor.shared_unbounded_instance())
    beam_fn_api_pb2_grpc.add_BeamFnExternalWorkerPoolServicer_to_server(pool, server)
    server.add_insecure_port(f"{host}:{port}")
    atexit.register(lambda: [proc.kill() for proc in pool._worker_processes.values()])  # noqa: SLF001
    atexit.register(server.stop, 0)  # also when a signal lands before the caller holds the server
    server.start()
    return server


def _run(args: argparse.Namespace) -> int:
    settings = get_settings()
    cache_mb = settings.sdk_state_cache_mb if args.state_cache_mb is None else args.state_cache_mb
    if not 0 < args.port < 65536 or cache_mb < 0:
        raise WorkerPoolError("--port must be 1-65535 and --state-cache-mb not negative")
    server = start_pool(settings.host, args.port, cache_mb)
    try:
        # What start-up built (Beam's ~2,800 modules) lives until exit: frozen, no collection walks it, and
        # the interpreter's final collection skips it. Unfrozen, exiting took 5-7 s of garbage collection on
        # a loaded 2-core machine (0.3-0.4 s frozen), and over 30 s under the test suite's load.
        gc.freeze()
        print(f"worker-pool: serving at {settings.host}:{args.port} (state cache {cache_mb} MB); Ctrl-C or "
              "SIGTERM stops it", flush=True)
        while True:
            time.sleep(3600)
    finally:
        server.stop(1).wait(5)  # workers' calls are short; the pool's own worker processes die at exit


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "worker-pool",
        description="Serve Beam's worker pool on this host: Flink starts Python SDK workers through it. Submit "
        "with `traffic stream --runner flink -- --flink_worker_pool=127.0.0.1:PORT`.",
    )
    parser.add_argument("--port", type=int, default=50000, help="the pool's port (default 50000)")
    parser.add_argument("--state-cache-mb", type=int, default=None,
                        help="each worker's state cache (default: TRAFFIC_SDK_STATE_CACHE_MB, 256)")
    parser.set_defaults(func=_run)
