"""Argument parsing shared by the job scripts: --config, --set KEY=VALUE (repeatable), --resume, -v; and
``run``, which reports bad config and bad input as one message and exit code 2 (``raymotion.errors``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from raymotion.config import Config, load_config
from raymotion.errors import report_user_error


def parser(description: str, *, config_args: bool = True) -> argparse.ArgumentParser:
    """-v always; --config (a run config over the defaults), --set and --resume unless
    ``config_args=False`` (jobs/sweep.py takes a sweep file instead)."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("-v", "--verbose", action="store_true",
                   help="with an error, print its traceback too (errors in the config or the input are otherwise "
                   "one message and exit code 2)")
    if not config_args:
        return p
    p.add_argument("--config", help="YAML config of overrides (nested or dotted keys) of the defaults, which are "
                                    "the embedded default's CPU recipe (raymotion/config.py)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config key, e.g. --set scaling.num_workers=2 (repeatable)")
    p.add_argument("--resume", action="store_true", help="continue the run in <run.output_dir>/<run.name>")
    return p


def config(args: argparse.Namespace) -> Config:
    """The config of ``--config`` and ``--set`` (call it inside ``run``: a bad one exits 2 naming the key)."""
    return load_config(args.config, args.overrides)


def run(args: argparse.Namespace, call: Callable[[], Any]) -> Any:
    """``call()``; bad config or input (``raymotion.errors.USER_ERRORS``, also from inside Ray) exits 2 with the
    message as the last line on stderr (the traceback too with -v); any other error keeps its traceback."""
    try:
        return call()
    except Exception as err:
        if not report_user_error(Path(sys.argv[0]).name, err, verbose=args.verbose):
            raise
        raise SystemExit(2) from None
