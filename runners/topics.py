"""``traffic topics create|list|delete``: the project's Kafka topics.

Names, partitions, retention, compression and the largest accepted message
come from :class:`schemas.topics.TopicSettings` (environment prefix
``TRAFFIC_TOPICS_``); ``--partitions``, ``--retention-ms`` and ``--compression``
override them for one call. ``create`` is idempotent: a topic that exists is
brought to the configured settings (configs altered, partitions only ever
added) instead of failing. Every Kafka call has a short timeout, so a broker
that is down gives one line, not a hang. The Kafka work itself is
:mod:`kafka_client.admin`'s.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from pydantic import ValidationError

from config.settings import get_settings
from kafka_client import (
    DEFAULT_TIMEOUT_S,
    TopicError,
    TopicState,
    admin_client,
    create_topics,
    delete_topics,
    describe_topics,
)
from schemas.topics import TopicSettings, get_topic_settings

__all__ = ["register"]

# --- command line -------------------------------------------------------------------------------

_SHOWN_CONFIGS = ("retention.ms", "retention.bytes", "compression.type", "max.message.bytes")


def _settings_from(args: argparse.Namespace) -> TopicSettings:
    overrides = {
        key: value
        for key, value in (
            ("partitions", args.partitions),
            ("retention_ms", args.retention_ms),
            ("compression", args.compression),
        )
        if value is not None
    }
    settings = get_topic_settings()
    if not overrides:
        return settings
    try:
        return TopicSettings(**{**settings.model_dump(), **overrides})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise TopicError(f"invalid topic settings: {problems}") from None


def _print_table(states: Sequence[TopicState], with_status: bool) -> None:
    header = ["topic", "partitions", *_SHOWN_CONFIGS] + (["status"] if with_status else [])
    rows = [
        [s.name, str(s.partitions), *(s.configs.get(k, "-") for k in _SHOWN_CONFIGS)]
        + ([s.status] if with_status else [])
        for s in states
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def _cmd_create(args: argparse.Namespace) -> int:
    settings = _settings_from(args)
    admin = admin_client(args.bootstrap_servers, args.timeout_s)
    _print_table(create_topics(admin, settings), with_status=True)
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    admin = admin_client(args.bootstrap_servers, args.timeout_s)
    names = None if args.all else get_topic_settings().all_topics()
    states = describe_topics(admin, names, args.timeout_s)
    if not states:
        print("no topics; create them with `traffic topics create`", file=sys.stderr)
        return 0
    _print_table(states, with_status=False)
    return 0


def _cmd_delete(args: argparse.Namespace) -> int:
    names = args.topics or get_topic_settings().all_topics()
    if not args.yes:
        raise TopicError(f"refusing to delete {', '.join(names)} without --yes")
    admin = admin_client(args.bootstrap_servers, args.timeout_s)
    for name, outcome in delete_topics(admin, names).items():
        print(f"{name}  {outcome}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "topics", description=__doc__.split("\n\n")[0]
    )
    actions = parser.add_subparsers(dest="topics_command", metavar="ACTION", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--bootstrap-servers", default=get_settings().bootstrap_servers, help="default: %(default)s")
        p.add_argument("--timeout-s", type=float, default=DEFAULT_TIMEOUT_S, help="broker timeout (%(default)s s)")

    create = actions.add_parser("create", help="create the topics (idempotent: fixes configs of existing ones)")
    common(create)
    create.add_argument("--partitions", type=int, help="override TRAFFIC_TOPICS_PARTITIONS")
    create.add_argument("--retention-ms", type=int, help="override TRAFFIC_TOPICS_RETENTION_MS")
    create.add_argument("--compression", choices=["none", "gzip", "snappy", "lz4", "zstd", "producer"])
    create.set_defaults(func=_cmd_create)

    listing = actions.add_parser("list", help="the project's topics with partitions and configs")
    common(listing)
    listing.add_argument("--all", action="store_true", help="every topic on the broker, not only the project's")
    listing.set_defaults(func=_cmd_list)

    delete = actions.add_parser("delete", help="delete topics (the project's when none are named)")
    common(delete)
    delete.add_argument("topics", nargs="*", metavar="TOPIC")
    delete.add_argument("--yes", action="store_true", help="really delete")
    delete.set_defaults(func=_cmd_delete)
