"""``traffic serve``: run the prediction API and dashboard with uvicorn."""

from __future__ import annotations

import argparse
from pathlib import Path

from api.settings import ApiSettings
from ml.network import add_network_argument, network_of

__all__ = ["register"]


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from api.app import create_app

    given = {"host": args.host, "port": args.port, "bootstrap_servers": args.bootstrap_servers,
             "model_registry": args.registry}
    overrides = {k: v for k, v in given.items() if v is not None}
    settings = ApiSettings(**overrides)
    network = network_of(args)  # an unknown network: one line, before anything binds
    if "model_registry" not in settings.model_fields_set:  # an imported network's models live apart
        settings = settings.model_copy(update={"model_registry": Path(network.home_under(
            str(settings.model_registry)))})
    app = create_app(settings, network=network)  # raises VendorFilesMissing (one line) before anything binds
    print(f"serve: network {network.name} ({len(network.sensor_ids)} sensors), dashboard at "
          f"http://{settings.host}:{settings.port}/dashboard/ (API docs at /docs, Kafka {settings.bootstrap_servers}, "
          f"models {settings.model_registry})", flush=True)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=args.log_level,
                timeout_graceful_shutdown=int(settings.shutdown_grace_s) + 3, access_log=args.access_log)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve",
        description="Serve the API and dashboard. Every setting also comes from TRAFFIC_API_* variables "
        "(see docs/api-dashboard.md); flags override them.",
    )
    add_network_argument(parser)
    parser.add_argument("--host", help="bind address (default 127.0.0.1, TRAFFIC_API_HOST)")
    parser.add_argument("--port", type=int, help="port (default 8000, TRAFFIC_API_PORT)")
    parser.add_argument("--bootstrap-servers", "--bootstrap", dest="bootstrap_servers",
                        help="Kafka bootstrap servers (default: the platform's, TRAFFIC_KAFKA_BOOTSTRAP_SERVERS)")
    parser.add_argument("--registry", help="model registry root (default: $TRAFFIC_MODEL_REGISTRY or <work>/models)")
    parser.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    parser.add_argument("--access-log", action="store_true", help="log every request")
    parser.set_defaults(func=_serve)
