"""Body-model forward time: batch-32 forward passes of the embedded bodies on this machine.

    python benchmarks/bench_body.py [--batch 32] [--repeats 20]

Prints milliseconds per batch (median of repeats) for 'anny' and 'anny_lowres', side by side.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from raymotion.body.body_model import load_body_model
from raymotion.config import BodyConfig
from raymotion.geometry import axis_angle_to_rotmat


def time_forward(model: str, *, batch: int, repeats: int) -> tuple[int, float]:
    body = load_body_model(BodyConfig(model=model))
    generator = torch.Generator().manual_seed(0)
    rotmats = axis_angle_to_rotmat(0.3 * torch.randn(batch, 24, 3, generator=generator))
    betas = torch.randn(batch, body.num_betas, generator=generator)
    times = []
    with torch.no_grad():
        body(rotmats_BJ33=rotmats, betas_BK=betas)  # warm-up
        for _ in range(repeats):
            start = time.perf_counter()
            body(rotmats_BJ33=rotmats, betas_BK=betas)
            times.append(time.perf_counter() - start)
    return body.num_verts, statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}")
    results = {m: time_forward(m, batch=args.batch, repeats=args.repeats) for m in ("anny", "anny_lowres")}
    for model, (verts, ms) in results.items():
        print(f"{model:<12} {verts:>6} vertices  {ms:7.1f} ms per batch")
    print(f"full / low-res time ratio: {results['anny'][1] / results['anny_lowres'][1]:.1f}x")


if __name__ == "__main__":
    main()
