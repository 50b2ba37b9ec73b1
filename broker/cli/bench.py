# `millpond bench`: the benchmark product (see bench/). This module only registers the subcommand; the options,
# profiles and workloads live in the bench package so `python -m bench` is the same command.
from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    from millpond.bench import cli

    p = sub.add_parser("bench", help="measure produce, consume and end-to-end latency",
                       description=cli.DESCRIPTION)
    cli.add_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from millpond.bench import cli

    return cli.run(args)
