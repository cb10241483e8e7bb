"""The prepared GPU check: the CUDA paths of training, checked in one short script that needs torch only.

    python3 tools/gpu_check.py                        # on the GPU machine, from the repository root (< 5 min)
    python3 tools/gpu_check.py --quick                # smaller sizes, fewer timed steps (< 1 min after start-up)
    python3 tools/gpu_check.py --device cpu --quick   # the same checks, small, on a CPU (tests/test_gpu_check.py)

Prints PASS or FAIL per check, then a summary; exits 1 if any check FAILed. One check's failure (an
exception included) never stops the others.

What it needs: torch, torchvision, numpy, opencv and pyyaml (imported by raymotion.flow and
raymotion.config). No Ray, no DALI, no timm (only the HRNet backbone needs it), nothing from a package
registry. The raymotion modules it imports are the torch-only ones, found from the repository root (the
package need not be installed): the worker's batch conversion (``data.crops``), its update and bf16
wrapper (``train.update``), the regressor, the flow loss. smplx is optional: without it the refine-step
timing falls back to an approximation that says so (the body model and ``train.step`` import smplx).
To check the real ones on a machine without smplx, carry its wheel (pure Python) there:
``pip download --no-deps smplx==0.1.28 -d .whl`` here, ``pip install --no-deps --target /tmp/site .whl/*.whl``
and ``PYTHONPATH=/tmp/site`` there.

Checks:
  batch_conversion  the Ray Train worker's conversion of uint8 (B, S, S, 3) crops to ImageNet-normalised
                    (B, 3, S, S) float32 (``raymotion.data.crops.normalise_batch_images``, what
                    ``worker.pair_rows_to_batch`` calls), on a batch already on the device (as Ray's
                    ``iter_torch_batches`` delivers it), against a float64 CPU reference.
  bf16_autocast     the regressor (small_cnn and resnet18) under bf16 autocast, as the worker runs it on GPU:
                    float32 outputs, float32 finite losses and gradients, outputs close to float32 ones.
  ddp               DistributedDataParallel at world size 1 (NCCL on CUDA, gloo on the CPU), a few optimiser
                    steps through ``finite_step``, whose all_reduce of the skip flag must skip a NaN step.
  flow_loss_device  flow visibility (z-buffer and eroded) and the flow-consistency loss with its gradients on
                    the device equal to the CPU's, on a random sphere mesh with a fixed seed.
  raft_small        torchvision RAFT small (random weights) through ``raymotion.flow.raft.RAFTFlow`` on a
                    2-pair batch at 128 px: output shape and finiteness.
  refine_speed      refine-step pairs/s (``train.step.refine_loss`` + backward + optimiser step) against the
                    backbone's plain forward+backward images/s over the same images, timed after warm-up,
                    with ``torch.cuda.synchronize``; prints both and their ratio.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import socket
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
# Run as `python3 tools/gpu_check.py` from a copy of the repository where raymotion is not installed.
sys.path.insert(0, str(REPO))

# torchvision's ImageNet weights' normalisation (torchvision.transforms._presets.ImageClassification),
# written out here so that the check does not read the constants it checks.
REFERENCE_MEAN = (0.485, 0.456, 0.406)
REFERENCE_STD = (0.229, 0.224, 0.225)


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class Sizes:
    """How big each check runs: full on a GPU, reduced on the CPU and with --quick."""

    crop_size: int
    """Crop side in pixels for the regressor and the flow loss."""
    batch: int
    """Images per regressor batch in batch_conversion, bf16_autocast and ddp."""
    flow_pairs: int
    """Frame pairs in flow_loss_device."""
    sphere_rings: int
    """Latitude rings of the test sphere (2x as many meridians) in flow_loss_device."""
    raft_iters: int
    """RAFT's recurrent updates in raft_small."""
    speed_backbone: str
    """The regressor backbone timed in refine_speed."""
    speed_body: str
    """The embedded body model of refine_speed ('anny' or 'anny_lowres')."""
    speed_pairs: int
    """Video pairs per refine step (train.pair_batch_size)."""
    speed_labelled: int
    """Labelled frames per refine step (train.batch_size)."""
    speed_steps: int
    """Timed steps after warm-up in refine_speed."""


SIZES = {
    # The cluster's refinement setting (jobs/cluster.yaml): resnet50 at 224 px, the default batches.
    ("cuda", False): Sizes(crop_size=224, batch=32, flow_pairs=8, sphere_rings=48, raft_iters=12,
                           speed_backbone="resnet50", speed_body="anny", speed_pairs=16, speed_labelled=32,
                           speed_steps=20),
    ("cuda", True): Sizes(crop_size=128, batch=16, flow_pairs=4, sphere_rings=32, raft_iters=12,
                          speed_backbone="resnet18", speed_body="anny_lowres", speed_pairs=8, speed_labelled=16,
                          speed_steps=5),
    ("cpu", False): Sizes(crop_size=64, batch=8, flow_pairs=4, sphere_rings=24, raft_iters=6,
                          speed_backbone="small_cnn", speed_body="anny_lowres", speed_pairs=4, speed_labelled=8,
                          speed_steps=3),
    ("cpu", True): Sizes(crop_size=64, batch=4, flow_pairs=2, sphere_rings=16, raft_iters=4,
                         speed_backbone="small_cnn", speed_body="anny_lowres", speed_pairs=2, speed_labelled=4,
                         speed_steps=2),
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _have_smplx() -> bool:
    try:
        import smplx  # noqa: F401
    except ModuleNotFoundError:
        return False
    return True


def _params_loss(out, has_smpl_B: torch.Tensor) -> torch.Tensor:
    """Supervised terms that need no body model: pose (against the identity), betas prior, camera."""
    from raymotion.losses.supervised import betas_prior_loss, camera_loss, pose_loss

    target_BJ33 = torch.eye(3, device=out.rotmats_BJ33.device).expand_as(out.rotmats_BJ33)
    return (pose_loss(out.rotmats_BJ33, target_BJ33, has_smpl_B) + betas_prior_loss(out.betas_BK)
            + camera_loss(out.cam_B3))


def _random_images(batch: int, size: int, device: torch.device, *, seed: int) -> torch.Tensor:
    """(B, 3, S, S) ImageNet-normalised random crops on ``device`` (drawn on the CPU: the same on every device)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, size, size, generator=generator).to(device)


# ------------------------------------------------------------------------------------------------- checks


def check_batch_conversion(device: torch.device, sizes: Sizes) -> str:
    from raymotion.data.crops import normalise_batch_images

    generator = torch.Generator().manual_seed(0)
    images_BSS3 = torch.randint(0, 256, (sizes.batch, sizes.crop_size, sizes.crop_size, 3), dtype=torch.uint8,
                                generator=generator)
    on_device = images_BSS3.to(device)  # where iter_torch_batches(device=...) puts the rows
    out_B3SS = normalise_batch_images(on_device)
    expected = sizes.batch, 3, sizes.crop_size, sizes.crop_size
    if out_B3SS.device != on_device.device or out_B3SS.dtype != torch.float32 or tuple(out_B3SS.shape) != expected:
        raise AssertionError(f"got {out_B3SS.dtype} {tuple(out_B3SS.shape)} on {out_B3SS.device}, "
                             f"expected float32 {expected} on {on_device.device}")
    mean = torch.tensor(REFERENCE_MEAN, dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor(REFERENCE_STD, dtype=torch.float64).view(1, 3, 1, 1)
    reference = (images_BSS3.permute(0, 3, 1, 2).double() / 255.0 - mean) / std
    error = (out_B3SS.double().cpu() - reference).abs().max().item()
    if error > 1e-5:
        raise AssertionError(f"max |normalised - reference| = {error:.2e} > 1e-05")
    return f"uint8 {tuple(images_BSS3.shape)} on {device} -> float32 {expected}, max error {error:.1e}"


def check_bf16_autocast(device: torch.device, sizes: Sizes) -> str:
    from raymotion.models.regressor import MeanParams, build_regressor
    from raymotion.train.update import Bf16Autocast

    notes = []
    for backbone in ("small_cnn", "resnet18"):
        torch.manual_seed(0)
        model = build_regressor(backbone=backbone, mean_params=MeanParams.default()).to(device)
        images = _random_images(sizes.batch, sizes.crop_size, device, seed=1)
        has_smpl_B = torch.ones(sizes.batch, device=device)
        model.eval()  # dropout off: compare bf16 with float32 on the same function
        with torch.no_grad():
            reference = model(images)
            with torch.autocast(device.type, dtype=torch.bfloat16):
                raw = model(images)
            out = Bf16Autocast(model, device.type)(images)
        if raw.feature_BD.dtype != torch.bfloat16:
            raise AssertionError(f"{backbone}: the backbone's feature is {raw.feature_BD.dtype} under autocast, "
                                 "expected bfloat16 (autocast inactive on this device?)")
        # bf16 keeps 8 bits of mantissa (~0.4 % per rounding): the pooled feature may drift by a few per cent.
        feature_error = ((raw.feature_BD.float() - reference.feature_BD).norm() / reference.feature_BD.norm()).item()
        if feature_error > 0.03:
            raise AssertionError(f"{backbone}: bf16 feature differs from float32 by {100 * feature_error:.1f} % > 3 %")
        dtypes = {f.name: getattr(out, f.name).dtype for f in dataclasses.fields(out)}
        if set(dtypes.values()) != {torch.float32}:
            raise AssertionError(f"{backbone}: outputs after the float32 cast are {dtypes}")
        drift = max((getattr(out, name) - getattr(reference, name)).abs().max().item()
                    for name in ("rotmats_BJ33", "betas_BK", "cam_B3"))
        if drift > 0.05:  # the heads start near the mean parameters (gain 0.01): small absolute changes
            raise AssertionError(f"{backbone}: bf16 outputs differ from float32 by {drift:.3g} > 0.05")
        model.train()
        model.zero_grad(set_to_none=True)
        loss = _params_loss(Bf16Autocast(model, device.type)(images), has_smpl_B)
        if loss.dtype != torch.float32 or not torch.isfinite(loss):
            raise AssertionError(f"{backbone}: loss {loss.item()} of dtype {loss.dtype}")
        loss.backward()
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        if not grads or any(g.dtype != torch.float32 or not torch.isfinite(g).all() for g in grads):
            raise AssertionError(f"{backbone}: gradients missing, not float32 or not finite")
        notes.append(f"{backbone}: feature {100 * feature_error:.2f} % off fp32, outputs {drift:.1e}, "
                     f"loss {loss.item():.4f}")
    return "; ".join(notes)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def check_ddp(device: torch.device, sizes: Sizes) -> str:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from raymotion.models.regressor import MeanParams, build_regressor

    from raymotion.train.update import finite_step

    source = "raymotion.train.update.finite_step"
    backend = "nccl" if device.type == "cuda" else "gloo"  # NCCL has no CPU tensors
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        model = build_regressor(backbone="small_cnn", mean_params=MeanParams.default()).to(device)
        ddp = DistributedDataParallel(model, device_ids=[device.index or 0] if device.type == "cuda" else None)
        optimiser = torch.optim.AdamW(ddp.parameters(), lr=1e-3)
        images = _random_images(sizes.batch, sizes.crop_size, device, seed=2)
        has_smpl_B = torch.ones(sizes.batch, device=device)
        start = [p.detach().clone() for p in model.parameters()]
        losses = []
        for _ in range(3):
            loss = _params_loss(ddp(images), has_smpl_B)
            if not finite_step(loss, ddp, optimiser):
                raise AssertionError(f"a finite loss ({loss.item()}) was skipped")
            losses.append(loss.item())
        moved = sum(not torch.equal(a, p) for a, p in zip(start, model.parameters()))
        if moved == 0:
            raise AssertionError("3 optimiser steps left every parameter unchanged")
        before_nan = [p.detach().clone() for p in model.parameters()]
        nan_loss = _params_loss(ddp(images), has_smpl_B) * float("nan")
        if finite_step(nan_loss, ddp, optimiser):
            raise AssertionError("a NaN loss was not skipped")
        if not all(torch.equal(a, p) for a, p in zip(before_nan, model.parameters())):
            raise AssertionError("a skipped step changed the parameters")
        total = torch.ones(1, device=device)
        dist.all_reduce(total)
        if total.item() != 1.0:
            raise AssertionError(f"all_reduce over 1 rank gave {total.item()}")
    finally:
        dist.destroy_process_group()
    return (f"{backend}, world size 1: 3 steps (loss {losses[0]:.4f} -> {losses[-1]:.4f}, {moved} tensors "
            f"updated), NaN step skipped via the all-reduced flag; {source}")


def sphere_mesh(rings: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A unit UV sphere: (V, 3) vertices (V = (rings - 1) * 2 * rings + 2) and (F, 3) int64 faces."""
    meridians = 2 * rings
    theta = torch.arange(1, rings, dtype=torch.float64) * math.pi / rings  # polar angle of each inner ring
    phi = torch.arange(meridians, dtype=torch.float64) * 2 * math.pi / meridians
    ring_RM3 = torch.stack([theta.sin()[:, None] * phi.cos()[None], theta.cos()[:, None].expand(-1, meridians),
                            theta.sin()[:, None] * phi.sin()[None]], dim=-1)
    verts = torch.cat([torch.tensor([[0.0, 1.0, 0.0]], dtype=torch.float64), ring_RM3.reshape(-1, 3),
                       torch.tensor([[0.0, -1.0, 0.0]], dtype=torch.float64)])
    faces = []
    south = verts.shape[0] - 1

    def at(ring: int, m: int) -> int:
        return 1 + ring * meridians + m % meridians

    for m in range(meridians):
        faces.append((0, at(0, m + 1), at(0, m)))
        faces.append((south, at(rings - 2, m), at(rings - 2, m + 1)))
        for ring in range(rings - 2):
            faces.append((at(ring, m), at(ring, m + 1), at(ring + 1, m)))
            faces.append((at(ring, m + 1), at(ring + 1, m + 1), at(ring + 1, m)))
    return verts.float(), torch.tensor(faces, dtype=torch.int64)


def _flow_inputs(sizes: Sizes) -> dict[str, torch.Tensor]:
    """Projected sphere vertices in two frames (the second moved 0.5-2 px, bumpy) and noisy flow, on the CPU."""
    generator = torch.Generator().manual_seed(3)
    verts_V3, faces_F3 = sphere_mesh(sizes.sphere_rings)
    num_pairs, size = sizes.flow_pairs, sizes.crop_size
    bumps_BV1 = 1 + 0.1 * torch.rand(num_pairs, verts_V3.shape[0], 1, generator=generator)
    radius_px = size * (0.25 + 0.1 * torch.rand(num_pairs, 1, 1, generator=generator))
    centre_B12 = size * (0.4 + 0.2 * torch.rand(num_pairs, 1, 2, generator=generator))
    surface_BV3 = verts_V3 * bumps_BV1 * radius_px
    pix1_BV3 = torch.cat([surface_BV3[..., :2] + centre_B12, surface_BV3[..., 2:] / size], dim=-1)  # z in ~metres
    shift_B12 = 0.5 + 1.5 * torch.rand(num_pairs, 1, 2, generator=generator)
    pix2_BV3 = pix1_BV3 + torch.cat([shift_B12, torch.zeros(num_pairs, 1, 1)], dim=-1)
    pix2_BV3 = pix2_BV3 + 0.2 * torch.randn(pix2_BV3.shape, generator=generator) * torch.tensor([1.0, 1.0, 0.0])
    flow_fwd = shift_B12.permute(0, 2, 1)[..., None] + 0.3 * torch.randn(num_pairs, 2, size, size, generator=generator)
    flow_bwd = -shift_B12.permute(0, 2, 1)[..., None] + 0.3 * torch.randn(num_pairs, 2, size, size, generator=generator)
    return {"pix1": pix1_BV3, "pix2": pix2_BV3, "faces": faces_F3, "flow_fwd": flow_fwd, "flow_bwd": flow_bwd}


def check_flow_loss_device(device: torch.device, sizes: Sizes) -> str:
    from raymotion.config import LossConfig
    from raymotion.losses.consistency import VISIBILITY_MODES, flow_consistency_loss, flow_visibility

    loss_cfg = LossConfig()  # the default loss: normaliser floor and rejection limit

    cpu_inputs = _flow_inputs(sizes)
    size = sizes.crop_size
    places = {"cpu": torch.device("cpu"), "device": device}  # on --device cpu both are the CPU
    notes = []
    for mode in VISIBILITY_MODES:
        vis = {}
        for key, where in places.items():
            x = {k: v.to(where) for k, v in cpu_inputs.items()}
            vis[key] = flow_visibility(x["pix1"], x["pix2"], x["faces"], height=size, width=size, mode=mode).cpu()
        # Rasterisation can flip a vertex whose pixel centre lies on an edge within float rounding (fused
        # multiply-adds on GPUs): allow a few in a thousand, not more.
        mismatch = (vis["cpu"] != vis["device"]).float().mean().item()
        if mismatch > 0.005 or not vis["cpu"].any():
            raise AssertionError(f"{mode}: visibility differs on {100 * mismatch:.2f} % of vertices "
                                 f"({int(vis['cpu'].sum())} visible on the CPU)")
        # The loss and its gradients, with the CPU's mask on both (the mask is a constant of the loss).
        losses, grads = {}, {}
        for key, where in places.items():
            x = {k: v.to(where) for k, v in cpu_inputs.items()}
            pix1_BV2 = x["pix1"][..., :2].clone().requires_grad_(True)
            pix2_BV2 = x["pix2"][..., :2].clone().requires_grad_(True)
            out = flow_consistency_loss(pix1_BV2, pix2_BV2, x["flow_fwd"], x["flow_bwd"], vis["cpu"].to(where),
                                        crop_size=size, normaliser_floor_px=loss_cfg.flow_normaliser_floor_px,
                                        max_flow_224=loss_cfg.flow_max_224)
            out.loss.backward()
            losses[key], grads[key] = out.loss.detach().cpu(), torch.cat([pix1_BV2.grad, pix2_BV2.grad]).cpu()
        if not torch.isfinite(losses["cpu"]) or losses["cpu"] <= 0:
            raise AssertionError(f"{mode}: degenerate CPU loss {losses['cpu'].item()}")
        torch.testing.assert_close(losses["device"], losses["cpu"], rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(grads["device"], grads["cpu"], rtol=1e-3, atol=1e-6)
        notes.append(f"{mode}: {int(vis['cpu'].sum())}/{vis['cpu'].numel()} visible, {100 * mismatch:.2f} % differ, "
                     f"loss {losses['cpu'].item():.4f}")
    return f"{cpu_inputs['pix1'].shape[1]} vertices x {sizes.flow_pairs} pairs at {size} px; " + "; ".join(notes)


def check_raft_small(device: torch.device, sizes: Sizes) -> str:
    from torchvision.models.optical_flow import raft_small

    from raymotion.flow.raft import RAFTFlow

    torch.manual_seed(0)
    flow = RAFTFlow(raft_small(weights=None), name="raft_small", num_iters=sizes.raft_iters, device=device,
                    tag="random-weights")
    rng = np.random.default_rng(4)
    frames0 = rng.integers(0, 256, (2, 128, 128, 3), dtype=np.uint8)
    frames1 = np.roll(frames0, shift=2, axis=2)  # a 2 px shift to the right
    flow_NHW2 = flow.batch(frames0, frames1)
    if flow_NHW2.shape != (2, 128, 128, 2) or flow_NHW2.dtype != np.float32:
        raise AssertionError(f"flow is {flow_NHW2.dtype} {flow_NHW2.shape}, expected float32 (2, 128, 128, 2)")
    if not np.isfinite(flow_NHW2).all():
        raise AssertionError("flow has non-finite values")
    return f"2 pairs at 128 px, {sizes.raft_iters} updates: float32 {flow_NHW2.shape}, finite (random weights)"


def _timed(step: Callable[[], None], device: torch.device, *, warmup: int, steps: int) -> float:
    """Seconds per call of ``step``, after ``warmup`` calls; the device is synchronised around the timing."""
    for _ in range(warmup):
        step()
    _sync(device)
    tic = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return (time.perf_counter() - tic) / steps


def _refine_step_fn(device: torch.device, sizes: Sizes, model: torch.nn.Module, frozen: torch.nn.Module,
                    use_bf16: bool) -> tuple[Callable[[], None], str]:
    """One refinement step (loss, backward, optimiser step) and what it is: the real one with smplx, else
    an approximation."""
    from raymotion.config import load_config
    from raymotion.train.update import Bf16Autocast

    cfg = load_config(overrides={"body.model": sizes.speed_body, "data.crop_size": sizes.crop_size,
                                 "model.backbone": sizes.speed_backbone})
    size, num_pairs, num_labelled = sizes.crop_size, sizes.speed_pairs, sizes.speed_labelled
    generator = torch.Generator().manual_seed(5)
    pairs = {"image1": torch.randn(num_pairs, 3, size, size, generator=generator),
             "image2": torch.randn(num_pairs, 3, size, size, generator=generator),
             "flow_fwd": torch.randn(num_pairs, 2, size, size, generator=generator),
             "flow_bwd": torch.randn(num_pairs, 2, size, size, generator=generator)}
    pairs = {k: v.to(device) for k, v in pairs.items()}
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-5)
    trained = Bf16Autocast(model, device.type) if use_bf16 else model  # the worker's choice with scaling.mixed_precision=auto

    if _have_smplx():
        from raymotion.body.body_model import load_body_model
        from raymotion.train.step import refine_loss

        body = load_body_model(cfg.body).to(device)
        labelled = {"image": torch.randn(num_labelled, 3, size, size, generator=generator),
                    "joints2d": torch.rand(num_labelled, 24, 2, generator=generator) * 2 - 1,
                    "joints2d_vis": torch.ones(num_labelled, 24),
                    "joints3d": torch.randn(num_labelled, 24, 3, generator=generator) * 0.3,
                    "pose_cam": 0.3 * torch.randn(num_labelled, 24, 3, generator=generator),
                    "betas": torch.zeros(num_labelled, 10), "has_smpl": torch.ones(num_labelled),
                    "has_joints3d": torch.ones(num_labelled), "joints3d_conf": torch.ones(num_labelled, 24)}
        labelled = {k: v.to(device) for k, v in labelled.items()}

        def step() -> None:
            loss, _ = refine_loss(trained, frozen, body, pairs, labelled, cfg.loss, step=1, total_steps=100)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()

        return step, f"raymotion.train.step.refine_loss, body {sizes.speed_body} ({body.num_verts} vertices)"

    from raymotion.geometry import weak_perspective_project
    from raymotion.losses.consistency import flow_consistency_loss, flow_visibility

    # Approximation without smplx: the same regressor work (2 x pairs + labelled crops, trained; the frozen
    # copy on the pairs) and the flow loss on a sphere mesh of the body's size moved by the predicted root
    # rotation; no skinning (the body model's cost is left out).
    verts_V3, faces_F3 = sphere_mesh(48 if sizes.speed_body == "anny" else 16)
    verts_V3, faces_F3 = verts_V3.to(device) * 0.5, faces_F3.to(device)
    labelled_images = torch.randn(num_labelled, 3, size, size, generator=generator).to(device)

    def step() -> None:
        images = torch.cat([pairs["image1"], pairs["image2"]])
        out = trained(torch.cat([images, labelled_images]))
        with torch.no_grad():
            frozen(images)
        verts_BV3 = torch.einsum("bij,vj->bvi", out.rotmats_BJ33[: 2 * num_pairs, 0], verts_V3)
        pix_BV2 = weak_perspective_project(verts_BV3, out.cam_B3[: 2 * num_pairs], crop_size=size)
        pix_BV3 = torch.cat([pix_BV2, verts_BV3[..., 2:]], dim=-1)
        vis = flow_visibility(pix_BV3[:num_pairs], pix_BV3[num_pairs:], faces_F3, height=size, width=size,
                              mode=cfg.loss.flow_visibility)
        flow = flow_consistency_loss(pix_BV2[:num_pairs], pix_BV2[num_pairs:], pairs["flow_fwd"], pairs["flow_bwd"],
                                     vis, crop_size=size, normaliser_floor_px=cfg.loss.flow_normaliser_floor_px,
                                     max_flow_224=cfg.loss.flow_max_224)
        loss = flow.loss + _params_loss(out, torch.ones(out.cam_B3.shape[0], device=device))
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()

    return step, (f"APPROXIMATION (smplx missing): regressor + flow loss on a {verts_V3.shape[0]}-vertex sphere, "
                  "no body model")


def check_refine_speed(device: torch.device, sizes: Sizes) -> str:
    from raymotion.models.regressor import MeanParams, build_regressor

    use_bf16 = device.type == "cuda"  # scaling.mixed_precision=auto
    torch.manual_seed(0)
    model = build_regressor(backbone=sizes.speed_backbone, mean_params=MeanParams.default()).to(device).train()
    frozen = build_regressor(backbone=sizes.speed_backbone, mean_params=MeanParams.default()).to(device).eval()
    refine_step, what = _refine_step_fn(device, sizes, model, frozen, use_bf16)
    warmup = 2
    refine_s = _timed(refine_step, device, warmup=warmup, steps=sizes.speed_steps)

    num_images = 2 * sizes.speed_pairs + sizes.speed_labelled  # what the step pushes through the trained net
    images = _random_images(num_images, sizes.crop_size, device, seed=6)

    def backbone_step() -> None:
        model.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
            feature_BD = model.backbone(images)
        feature_BD.float().mean().backward()

    backbone_s = _timed(backbone_step, device, warmup=warmup, steps=sizes.speed_steps)
    pairs_per_s, images_per_s = sizes.speed_pairs / refine_s, num_images / backbone_s
    if not (math.isfinite(pairs_per_s) and math.isfinite(images_per_s) and pairs_per_s > 0 and images_per_s > 0):
        raise AssertionError(f"bad timings: {refine_s} s, {backbone_s} s")
    return (f"{what}; {sizes.speed_backbone} at {sizes.crop_size} px, {'bf16 autocast' if use_bf16 else 'float32'}, "
            f"{sizes.speed_pairs} pairs + {sizes.speed_labelled} labelled, {sizes.speed_steps} steps after {warmup} "
            f"warm-up\n      refine step: {pairs_per_s:.1f} pairs/s ({1000 * refine_s:.1f} ms/step)"
            f"\n      backbone forward+backward: {images_per_s:.1f} images/s ({1000 * backbone_s:.1f} ms for the "
            f"same {num_images} images)\n      ratio refine step / backbone fwd+bwd: {refine_s / backbone_s:.2f}x")


CHECKS: dict[str, Callable[[torch.device, Sizes], str]] = {
    "batch_conversion": check_batch_conversion,
    "bf16_autocast": check_bf16_autocast,
    "ddp": check_ddp,
    "flow_loss_device": check_flow_loss_device,
    "raft_small": check_raft_small,
    "refine_speed": check_refine_speed,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"],
                        help="cuda (default; the first GPU) or cpu (reduced sizes, gloo instead of NCCL)")
    parser.add_argument("--quick", action="store_true", help="smaller sizes and fewer timed steps")
    parser.add_argument("--only", nargs="+", choices=list(CHECKS), help="run only these checks")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch.cuda.is_available() is False here; use --device cpu")
    device = torch.device("cuda:0" if args.device == "cuda" else "cpu")
    sizes = SIZES[(device.type, args.quick)]
    have_smplx = _have_smplx()
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"gpu_check on {where}: torch {torch.__version__}, "
          f"smplx {'present' if have_smplx else 'MISSING (stand-ins where noted, see --help)'}, "
          f"{'quick' if args.quick else 'full'} sizes", flush=True)
    results: dict[str, str] = {}
    for name in args.only or CHECKS:
        tic = time.perf_counter()
        try:
            detail = CHECKS[name](device, sizes)
            status = "PASS"
        except Exception as error:  # one broken check must not hide the others' results
            status, detail = "FAIL", f"{type(error).__name__}: {error}"
            traceback.print_exc()
        results[name] = status
        print(f"{status} {name} ({time.perf_counter() - tic:.1f} s): {detail}", flush=True)
    counts = {s: sum(v == s for v in results.values()) for s in ("PASS", "FAIL")}
    print(f"summary: {counts['PASS']} PASS, {counts['FAIL']} FAIL"
          + (f" (failed: {', '.join(n for n, s in results.items() if s == 'FAIL')})" if counts["FAIL"] else ""))
    return 1 if counts["FAIL"] else 0


if __name__ == "__main__":
    sys.exit(main())
