"""``raymotion doctor``: what this machine can run, and what is missing with how to fix it.

It prints versions, the body models it finds (and, for a missing or broken SMPL file, which file, where
to put it and where to register for it), whether CUDA, DALI and its GPU decoder are usable, whether
headless rendering works, and whether a Ray cluster is reachable. ``run_doctor`` returns non-zero when the
configured body model is unusable.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import os
import platform
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from raymotion.body.body_model import BodyModel, embedded_body_path, load_body_model, smpl_file_path
from raymotion.config import BodyConfig, Config

PACKAGES = (
    "torch",
    "torchvision",
    "numpy",
    "smplx",
    "ray",
    "nvidia-dali-cuda130",
    "optuna",
    "pyarrow",
    "opencv-python-headless",
    "av",
    "pyrender",
    "PyOpenGL",
)


@dataclass(frozen=True, slots=True)
class Check:
    """One line of the report."""

    name: str
    ok: bool
    detail: str


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _describe_body(body: BodyModel) -> str:
    return f"{body.num_verts} vertices, {body.faces_F3.shape[0]} faces, {body.num_betas} betas ({body.source})"


def check_body_models(body_cfg: BodyConfig) -> tuple[list[Check], bool]:
    """Every body model raymotion knows about, and whether the configured one loads."""
    checks: list[Check] = []
    configured_ok = False
    for model in ("anny", "anny_lowres"):
        try:
            body = load_body_model(BodyConfig(model=model, num_betas=body_cfg.num_betas))
            checks.append(Check(f"body '{model}' (embedded)", True, _describe_body(body)))
            configured_ok |= body_cfg.model == model
        except Exception as err:  # noqa: BLE001 - the doctor reports every failure and carries on
            checks.append(Check(f"body '{model}' (embedded)", False, f"{err} [{embedded_body_path(model)}]"))
    for gender in ("neutral", "male", "female"):
        name = f"body 'smpl' {gender}"
        try:
            path = smpl_file_path(body_cfg.smpl_dir, gender)
        except FileNotFoundError as err:
            if body_cfg.model == "smpl" and body_cfg.gender == gender:
                checks.append(Check(name, False, str(err)))
            else:
                checks.append(Check(name, True, f"not installed (optional): no SMPL_{gender.upper()} in {body_cfg.smpl_dir}/"))
            continue
        try:
            body = load_body_model(dataclasses.replace(body_cfg, model="smpl", gender=gender))
            checks.append(Check(name, True, _describe_body(body)))
            configured_ok |= body_cfg.model == "smpl" and body_cfg.gender == gender
        except Exception as err:  # noqa: BLE001
            checks.append(Check(name, False, f"{path} is unusable: {err}"))
    return checks, configured_ok


def check_accelerators() -> list[Check]:
    """CUDA, DALI and its decoders."""
    from raymotion.dali import dali_status

    checks: list[Check] = []
    cuda = torch.cuda.is_available()
    if cuda:
        checks.append(Check("cuda", True, f"{torch.cuda.device_count()} device(s): {torch.cuda.get_device_name(0)}"))
    else:
        checks.append(Check("cuda", True, f"not available (torch {torch.__version__} runs on the CPU)"))
    status = dali_status(cuda_available=cuda)
    if status.version is None:
        checks.append(Check("dali", False, status.detail))
    else:
        checks.append(
            Check(
                "dali",
                status.cpu_decoding,
                f"{status.version}; CPU decoder {'yes' if status.cpu_decoding else 'no'} (VP8/VP9/MJPEG video, JPEG/PNG "
                f"images); GPU decoder {'yes' if status.gpu_decoding else 'no'} (NVDEC video, nvJPEG images)" + (f" ({status.detail})" if status.detail else ""),
            )
        )
    return checks


def check_rendering() -> Check:
    """Create a tiny offscreen context (OSMesa on the CPU, EGL on GPUs)."""
    try:
        from raymotion.synth.render import MeshRenderer

        with MeshRenderer(width=8, height=8):
            pass
        return Check("rendering", True, f"pyrender offscreen via {os.environ['PYOPENGL_PLATFORM']}")
    except Exception as err:  # noqa: BLE001
        return Check(
            "rendering",
            False,
            f"{type(err).__name__}: {err}. On Debian/Ubuntu: apt-get install libosmesa6 and PyOpenGL==3.1.10 "
            "(./bootstrap.sh does both); on GPU machines PYOPENGL_PLATFORM=egl",
        )


def check_ray() -> Check:
    """Ray's version and whether a cluster is already running (without starting one: that takes seconds)."""
    import ray

    address = os.environ.get("RAY_ADDRESS")
    if address:
        where = f"RAY_ADDRESS={address}"
    elif Path("/tmp/ray/ray_current_cluster").is_file():
        where = f"local cluster at {Path('/tmp/ray/ray_current_cluster').read_text().strip()}"
    else:
        where = "no cluster running (jobs start a local one, or connect with RAY_ADDRESS / `ray start`)"
    return Check("ray", True, f"{ray.__version__}; {where}")


def run_doctor(cfg: Config, *, render: bool = False) -> int:
    """Print the report; render the default body if asked. Returns the process exit code."""
    print(f"raymotion doctor: Python {platform.python_version()} on {platform.platform()} ({os.cpu_count()} CPUs)")
    print("packages: " + ", ".join(f"{p} {_version(p)}" for p in PACKAGES))
    body_checks, configured_ok = check_body_models(cfg.body)
    checks = [*body_checks, *check_accelerators(), check_rendering(), check_ray()]
    width = max(len(c.name) for c in checks)
    for check in checks:
        print(f"  [{'ok' if check.ok else 'FAIL'}] {check.name:<{width}}  {check.detail}")
    if not configured_ok:
        print(f"the configured body model (body.model={cfg.body.model}) is unusable: see above", file=sys.stderr)
        return 1
    print(f"configured body model: body.model={cfg.body.model} is usable")
    if render:
        from raymotion.viz import render_body_picture

        path = render_body_picture(cfg)
        print(f"wrote {path}: the '{cfg.body.model}' body, motion '{cfg.render.motion}' at phase {cfg.render.phase}")
    return 0
