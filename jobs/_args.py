"""Argument parsing shared by the job scripts: --config, --set KEY=VALUE (repeatable), --resume."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from raymotion.config import Config, load_config

EMBEDDED_DEFAULT = Path(__file__).resolve().parent / "embedded_default.yaml"


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--config", help=f"YAML config (nested or dotted keys); default: {EMBEDDED_DEFAULT.name}, "
                                    "the embedded default's CPU recipe")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config key, e.g. --set scaling.num_workers=2 (repeatable)")
    p.add_argument("--resume", action="store_true", help="continue the run in <run.output_dir>/<run.name>")
    return p


def config(args: argparse.Namespace) -> Config:
    """The config, or exit 2 with the error (naming the key) before anything starts."""
    try:
        return load_config(args.config or EMBEDDED_DEFAULT, args.overrides)
    except (ValueError, FileNotFoundError) as err:
        notes = "".join(f"\n  ({note})" for note in getattr(err, "__notes__", []))
        print(f"{Path(sys.argv[0]).name}: {err}{notes}", file=sys.stderr)
        raise SystemExit(2) from None
