"""Labelled-frame memory per Ray Train worker at 1 and 2 workers, side by side in one run.

    python benchmarks/bench_labelled_memory.py [--config my_run.yaml] [--set KEY=VALUE ...]
        [--worlds 1 2 4]

Each worker of a run holds only its shard of the labelled fraction (``LabelledFrames(shard=(rank, world))``,
what ``train/worker.py`` builds). For each world size this starts a fresh Python process per measurement
(so peaks do not mix) that imports raymotion, records its resident memory, builds rank 0's shard as the
worker does (``components.labelled_frames`` with the run's fraction and augmentation), and reports the
bytes the shard holds and the process's peak resident memory above the import baseline (which includes
decoding one clip at a time). Prints both per world size and their ratio to 1 worker (ideal: 1/world).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path


CHILD = r"""
import json, resource, sys
from raymotion.config import load_config
from raymotion.train.components import labelled_frames

def peak_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB

args = json.loads(sys.argv[1])
cfg = load_config(args["config"], args["overrides"])
baseline = peak_mib()
frames = labelled_frames(cfg, "labelled", augment=cfg.train.augment, fraction=cfg.train.fraction,
                         shard=(0, args["world"]))
print(json.dumps({"frames": len(frames), "held_mib": frames.nbytes / 2**20, "peak_above_import_mib": peak_mib() - baseline}))
"""


def measure(config: str | None, overrides: list[str], world: int) -> dict:
    run = subprocess.run([sys.executable, "-c", CHILD, json.dumps({"config": config, "overrides": overrides,
                                                                   "world": world})],
                         capture_output=True, text=True, check=True)
    return json.loads(run.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=None, help="YAML overrides of the defaults (the embedded recipe)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--worlds", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    results = {world: measure(args.config, args.overrides, world) for world in args.worlds}
    one = results[args.worlds[0]]
    print(f"labelled frames of rank 0 ({Path(args.config).name if args.config else 'the defaults'} {' '.join(args.overrides)})")
    print(f"{'workers':>7s} {'frames':>7s} {'held MiB':>9s} {'ratio':>6s} {'peak above import MiB':>22s} {'ratio':>6s}")
    for world, r in results.items():
        print(f"{world:7d} {r['frames']:7d} {r['held_mib']:9.1f} {r['held_mib'] / one['held_mib']:6.2f} "
              f"{r['peak_above_import_mib']:22.1f} {r['peak_above_import_mib'] / one['peak_above_import_mib']:6.2f}")


if __name__ == "__main__":
    main()
