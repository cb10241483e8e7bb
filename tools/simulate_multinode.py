"""Multi-node refinement simulated on one machine, the way Ray's own tests do (``ray.cluster_utils.Cluster``).

    python tools/simulate_multinode.py --pretrained runs/base-f10/checkpoint.pt [--steps 60] [--kill-after 20]

A head node and two worker nodes (each its own raylet) form one cluster. A refinement run with two Ray Train
workers and ``scaling.placement_strategy=SPREAD`` starts; once a checkpoint past ``--kill-after`` steps is in
the shared storage folder, one worker node is removed. Ray Train restarts the worker group on the nodes left
(``scaling.max_failures``), it resumes from the last checkpoint, and the run finishes. The script prints
where each worker ran (``workers/``, one file per worker start), the checkpoints in storage and whether every
step is logged once (the log drops the steps of the failed attempt after its checkpoint), and exits non-zero
when any of that did not happen.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path

import ray
from ray.cluster_utils import Cluster

from raymotion.config import load_config
from raymotion.train.launch import run_training
from raymotion.train.worker import worker_starts



def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pretrained", required=True)
    parser.add_argument("--data", default="data/synth/default")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--kill-after", type=int, default=20)
    args = parser.parse_args()

    storage = Path(tempfile.mkdtemp(prefix="raymotion_shared_storage_"))
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
    nodes = [cluster.add_node(num_cpus=2) for _ in range(2)]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address)
    print(f"cluster: {len(ray.nodes())} nodes, {ray.cluster_resources().get('CPU')} CPUs; storage {storage}")

    cfg = load_config(overrides={
        "data.root": str(Path(args.data).resolve()), "train.pretrained": str(Path(args.pretrained).resolve()),
        "run.name": "multinode", "scaling.storage_path": str(storage), "scaling.num_workers": 2,
        "scaling.placement_strategy": "SPREAD", "scaling.max_failures": 2, "data.video_source": "local",
        "train.refine_steps": args.steps, "train.checkpoint_every": 10, "train.eval_every": args.steps,
        "train.log_every": 5, "train.max_eval_clips": 4,
    })
    run_dir = storage / "multinode"
    removed: dict[str, str] = {}

    def remove_a_node_after_a_checkpoint() -> None:
        while True:
            time.sleep(1.0)
            log = run_dir / "log.jsonl"
            steps = [json.loads(line)["step"] for line in log.read_text().splitlines()] if log.is_file() else []
            if steps and max(steps) >= args.kill_after and (run_dir / "checkpoint.pt").is_file():
                workers = worker_starts(run_dir)
                victim = next(n for n in nodes if n.node_id in {w["node_id"] for w in workers})
                print(f"removing node {victim.node_id[:8]} at step {max(steps)}", flush=True)
                removed["node_id"] = victim.node_id
                cluster.remove_node(victim)
                return

    killer = threading.Thread(target=remove_a_node_after_a_checkpoint, daemon=True)
    killer.start()
    tic = time.perf_counter()
    metrics = run_training(cfg, "refine")
    wall = time.perf_counter() - tic

    workers = worker_starts(run_dir)
    steps = [json.loads(line)["step"] for line in (run_dir / "log.jsonl").read_text().splitlines()
             if "loss" in json.loads(line)]
    print("\nworker starts (rank, node):")
    for w in workers:
        print(f"  rank {w['rank']} of {w['world']} on node {w['node_id'][:8]} pid {w['pid']}")
    first_nodes = {w["node_id"] for w in workers[:2]}
    print(f"first attempt on {len(first_nodes)} distinct node(s); removed node {removed.get('node_id', '?')[:8]}")
    print(f"checkpoints in shared storage: {sorted(p.name for p in run_dir.glob('checkpoint*'))}")
    print(f"every step logged once: {steps == sorted(set(steps))}")
    print(f"finished: step {max(steps)} of {args.steps}, test PA-MPJPE {metrics['pa_mpjpe_mm']:.1f} mm, wall {wall:.0f} s")
    ok = (len(first_nodes) == 2 and "node_id" in removed and len(workers) > 2 and max(steps) == args.steps
          and steps == sorted(set(steps)))
    ray.shutdown()
    cluster.shutdown()
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
