"""The frame-pair pipeline without training: Ray Data against a plain single-process loop, one run.

    python benchmarks/bench_data.py [--max-clips 0] [--crop-size 128] [--window 32] [--flow-actors 2]
        [--decoder auto] [--source streamed|precomputed] [--plain-threads 0]
        [--config X.yaml] [--set data.root=data/synth/default ...]

The same as ``raymotion bench-data`` (same arguments; the work is ``raymotion.data.bench.run_bench``, see
its module doc for what is timed). Prints pairs/s of the plain loop and of the pipeline end to end, the
pipeline's start-up (time to the first batch) and steady-state rate apart, their ratios, decoded frames per
used frame, and seconds per stage.
"""

from __future__ import annotations

import sys

from raymotion.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench-data", *sys.argv[1:]]))
