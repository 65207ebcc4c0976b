"""``traffic setup``: install the platform's jars, Flink and Go tools (cached, idempotent)."""

from __future__ import annotations

import argparse

from config.settings import PlatformSettings
from runners.install import install, plan

__all__ = ["register"]


def _run(args: argparse.Namespace) -> int:
    settings = PlatformSettings()
    if args.list:
        for step in plan(settings, with_test_tools=args.with_test_tools):
            print(f"{step.name:18} {step.title}")
        return 0
    ran = install(settings, with_test_tools=args.with_test_tools, only=args.only or ())
    print(f"setup: ready in {settings.cache_dir} ({len(ran)} step(s) ran, the rest were cached)")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "setup",
        description="Install everything the local platform needs into the cache directory "
        "(TRAFFIC_CACHE_DIR, default ~/.cache/traffic-forecast). Finished steps are skipped.",
    )
    parser.add_argument("--with-test-tools", action="store_true",
                        help="also install Chromium, chromedriver and docker-compose (apt) for the browser tests")
    parser.add_argument("--only", nargs="+", metavar="STEP", help="run only these steps (see --list)")
    parser.add_argument("--list", action="store_true", help="list the steps and exit")
    parser.set_defaults(func=_run)
