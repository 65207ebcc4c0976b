"""``traffic network``: import a sensor network from a user's files, list the networks, show one.

    traffic network import --name my-city --readings readings.csv --locations sensors.csv [--graph edges.csv]
    traffic network list
    traffic network show my-city

docs/networks.md describes the files and walks through an example.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from config.hdfs import hdfs_options_for
from config.settings import PlatformSettings
from ml.network import known_networks, load_network
from ml.network_graph import NEAREST
from ml.network_import import import_network

__all__ = ["register"]


def _import(args: argparse.Namespace) -> int:
    output = Path(args.output) if args.output else PlatformSettings().work_dir / "networks" / args.name
    print(f"importing network {args.name} from {args.readings} and {args.locations} ...", flush=True)
    imported = import_network(
        args.readings, args.locations, name=args.name, output=output, graph=args.graph, title=args.title,
        split=args.split, nearest=args.nearest, force=args.force,
        hdfs_options=hdfs_options_for([args.readings, args.locations, args.graph]) or None)
    print(imported.summary)
    print(f"use it with --network {args.name if not args.output else output}")
    return 0


def _list(_args: argparse.Namespace) -> int:
    for name in known_networks():
        network = load_network(name)
        print(f"{name:<20} {len(network.sensor_ids):>5} sensors  {network.title}  ({network.root})")
    return 0


def _show(args: argparse.Namespace) -> int:
    print(json.dumps(load_network(args.network).describe(), indent=2))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("network", description=__doc__.split("\n\n")[0])
    actions = parser.add_subparsers(dest="network_command", metavar="ACTION", required=True)

    imp = actions.add_parser("import", help="check a network's files and write its network directory")
    imp.add_argument("--name", required=True, help="the network's name (lower-case letters, digits, - and _)")
    imp.add_argument("--readings", required=True,
                     help="long CSV/Parquet (sensor_id,time,speed) or wide .npz/.h5; local or hdfs://")
    imp.add_argument("--locations", required=True, help="CSV sensor_id,latitude,longitude; local or hdfs://")
    imp.add_argument("--graph", help="edge-list CSV from,to[,weight|cost], an .npz (adjacency, sensor_ids) or "
                     "DCRNN's adj_mx.pkl; default: built from the locations")
    imp.add_argument("--title", help="the dashboard's title (default: '<name> traffic forecast')")
    imp.add_argument("--split", default="0.7,0.1,0.2",
                     help="train,val,test fractions of the windows, or two dates TRAIN_END,VAL_END "
                          "(default %(default)s, the standard protocol's)")
    imp.add_argument("--nearest", type=int, default=NEAREST,
                     help="without --graph: link each sensor to this many nearest sensors (default %(default)s)")
    imp.add_argument("--output", help="the network directory (default: <work>/networks/<name>)")
    imp.add_argument("--force", action="store_true", help="replace an existing network of that name")
    imp.set_defaults(func=_import)

    listing = actions.add_parser("list", help="the bundled and imported networks")
    listing.set_defaults(func=_list)

    show = actions.add_parser("show", help="one network's manifest: sensors, step, split, graph")
    show.add_argument("network", nargs="?", default=None, help="name or directory (default: $TRAFFIC_NETWORK)")
    show.set_defaults(func=_show)
