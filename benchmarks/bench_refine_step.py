"""One refinement step on the CPU, split by stage: backbone, body model, visibility, flow sampling, backward.

    python benchmarks/bench_refine_step.py [--crop-size 64] [--body anny_lowres] [--pairs 16] [--labelled 32]
        [--steps 10] [--threads 2]

Runs the pieces of ``raymotion.train.step.refine_loss`` in its order on random images and flow (the work
does not depend on the pixel values): the regressor on 2 x pairs + labelled crops, the body model on the
same, the frozen anchor network (forward, no grad), the visibility of the predicted meshes in both frames
(z-buffer rasteriser + erosion), the flow-consistency loss (mesh flow, bilinear sampling at the vertices,
normalisation), then backward of the total. Prints ms per stage (median over --steps after one warm-up)
and pairs/s of the whole step.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import defaultdict

import torch

from raymotion.body.body_model import load_body_model
from raymotion.config import load_config
from raymotion.geometry import weak_perspective_project
from raymotion.losses.consistency import flow_consistency_loss, flow_visibility
from raymotion.train.components import build_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--crop-size", type=int, default=64)
    parser.add_argument("--body", default="anny_lowres")
    parser.add_argument("--backbone", default="small_cnn")
    parser.add_argument("--pairs", type=int, default=16)
    parser.add_argument("--labelled", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_config(overrides={"body.model": args.body, "data.crop_size": args.crop_size,
                                 "model.backbone": args.backbone})
    body = load_body_model(cfg.body)
    model, frozen = build_model(cfg).train(), build_model(cfg).eval()
    size, pairs = args.crop_size, args.pairs
    images = torch.randn(2 * pairs + args.labelled, 3, size, size)
    flow_fwd, flow_bwd = torch.randn(pairs, 2, size, size), torch.randn(pairs, 2, size, size)
    times: dict[str, list[float]] = defaultdict(list)

    def timed(name: str, fn):
        tic = time.perf_counter()
        out = fn()
        times[name].append(time.perf_counter() - tic)
        return out

    for step in range(args.steps + 1):
        if step == 1:
            times.clear()  # the first step warms up allocators and kernels
        tic = time.perf_counter()
        params = timed("backbone + regressor", lambda: model(images))
        out = timed("body model", lambda: body(rotmats_BJ33=params.rotmats_BJ33, betas_BK=params.betas_BK))

        def anchor():
            with torch.no_grad():
                p = frozen(images[: 2 * pairs])
                return body(rotmats_BJ33=p.rotmats_BJ33, betas_BK=p.betas_BK)

        timed("frozen anchor net", anchor)
        verts_BV3 = out.verts_BV3[: 2 * pairs]
        pix_BV2 = weak_perspective_project(verts_BV3, params.cam_B3[: 2 * pairs], crop_size=size)
        pix_BV3 = torch.cat([pix_BV2, verts_BV3[..., 2:]], dim=-1)
        pix1, pix2 = pix_BV3[:pairs], pix_BV3[pairs:]
        vis = timed("visibility", lambda: flow_visibility(pix1, pix2, body.faces_F3, height=size, width=size,
                                                          mode=cfg.loss.flow_visibility))
        flow = timed("flow sampling + loss", lambda: flow_consistency_loss(
            pix1[..., :2], pix2[..., :2], flow_fwd, flow_bwd, vis, crop_size=size,
            max_flow_224=cfg.loss.flow_max_224, normaliser_floor_px=cfg.loss.flow_normaliser_floor_px))
        total = flow.loss + out.joints_BJ3.square().mean() + params.betas_BK.square().mean()
        model.zero_grad(set_to_none=True)
        timed("backward", total.backward)
        times["whole step"].append(time.perf_counter() - tic)

    print(f"refine step: {args.backbone}, {size} px crops, body {args.body} ({body.num_verts} vertices), "
          f"{pairs} pairs + {args.labelled} labelled frames, {args.threads} threads, median of {args.steps}")
    whole = statistics.median(times["whole step"])
    for name, values in times.items():
        ms = 1000 * statistics.median(values)
        print(f"  {name:22s} {ms:8.1f} ms  {100 * ms / (1000 * whole):5.1f} %")
    print(f"  {'pairs/s':22s} {pairs / whole:8.1f}")


if __name__ == "__main__":
    main()
