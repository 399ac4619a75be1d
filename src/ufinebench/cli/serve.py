"""``ufinebench serve``: the web page and JSON API over an index."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import torch

from ufinebench.cli.common import port
from ufinebench.serve.app import LOOPBACK_HOSTS, create_app, server_config


def add_parser(sub: Any) -> None:
    p = sub.add_parser("serve", help="web page and JSON API over an index", description="Serve POST /search, GET /images/{id}, "
                       "GET /healthz and a search page at /. Bound to 127.0.0.1 unless told otherwise.")
    p.add_argument("index", metavar="INDEX_DIR")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=port, default=8000)
    p.add_argument("--allowed-host", action="append", metavar="NAME",
                   help="also accept requests whose Host header is NAME (repeatable; '*' accepts any). "
                   "Loopback names and --host are always accepted; others are refused (DNS rebinding)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import uvicorn  # the web stack is heavy and only this command needs it

    torch.set_num_threads(1)  # requests run side by side in the server's thread pool (61 vs 49 req/s on 2 cores)
    hosts = list(LOOPBACK_HOSTS) + [h for h in [args.host] if h not in ("0.0.0.0", "::")] + list(args.allowed_host or [])
    app = create_app(args.index, allowed_hosts=hosts)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: serving on {args.host}, reachable from other machines; Host headers accepted: {', '.join(hosts)}",
              file=sys.stderr)
    print(f"serving {args.index} on http://{args.host}:{args.port}/ (Ctrl-C stops)")
    uvicorn.Server(server_config(app, args.host, args.port)).run()
    return 0
