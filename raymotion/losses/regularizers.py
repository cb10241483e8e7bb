"""Anchoring regularisers against degenerate flow-only solutions, and loss-weight schedules.

METHOD.md section 4: besides keeping the supervised loss on labelled frames, the paper's earlier
variant anchors the refined network to a frozen copy of the pretrained one on the same video
frames (L2 on 3D joints and betas, weight 1). raymotion also schedules the anchor weights over
training steps (constant, linear or cosine decay, step decay), which the Tune sweeps search.

Tensor naming legend (shape suffixes):
    B = batch of video frames, J = joints, K = shape coefficients (betas);
    trailing digits are literal sizes (`joints_BJ3` is (B, J, 3)).
"""

import bisect
import math

import torch

SCHEDULE_KINDS: tuple[str, ...] = ("constant", "linear", "cosine", "step")


def anchor_loss(
    pred_joints_BJ3: torch.Tensor,
    frozen_joints_BJ3: torch.Tensor,
    pred_betas_BK: torch.Tensor,
    frozen_betas_BK: torch.Tensor,
    *,
    pelvis_index: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """L2 anchor of the refined network's predictions to a frozen pretrained copy's.

    The frozen predictions are detached here, so the anchor only ever moves the refined network
    (the frozen copy is a fixed target even if the caller forgot `torch.no_grad()`).

    Args:
        pred_joints_BJ3: (B, J, 3) 3D joints of the network being refined, metres, camera frame.
        frozen_joints_BJ3: (B, J, 3) 3D joints of the frozen pretrained copy on the same frames,
            metres, camera frame, same joint order.
        pred_betas_BK: (B, K) betas of the network being refined, unitless.
        frozen_betas_BK: (B, K) betas of the frozen copy, unitless.
        pelvis_index: index in J of the joint both skeletons are centred at before comparing
            (a named constant from `raymotion.body.joints`).

    Returns:
        joints_loss: () mean over B * J * 3 entries of the squared difference of the
            pelvis-centred joints, metres^2.
        betas_loss: () mean over B * K entries of the squared betas difference.
    """
    frozen_joints_BJ3 = frozen_joints_BJ3.detach()
    frozen_betas_BK = frozen_betas_BK.detach()
    pred_centred_BJ3 = pred_joints_BJ3 - pred_joints_BJ3[:, pelvis_index : pelvis_index + 1]
    frozen_centred_BJ3 = frozen_joints_BJ3 - frozen_joints_BJ3[:, pelvis_index : pelvis_index + 1]
    joints_loss = ((pred_centred_BJ3 - frozen_centred_BJ3) ** 2).mean()
    betas_loss = ((pred_betas_BK - frozen_betas_BK) ** 2).mean()
    return joints_loss, betas_loss


def schedule_value(
    kind: str,
    step: int,
    *,
    total_steps: int,
    start: float,
    end: float,
    milestones: tuple[int, ...] = (),
    gamma: float = 0.1,
) -> float:
    """Value of a loss-weight schedule at a training step.

    Kinds (`SCHEDULE_KINDS`), with p = min(step / total_steps, 1):
        "constant": start.
        "linear":   start + (end - start) * p; end from total_steps on.
        "cosine":   end + (start - end) * (1 + cos(pi * p)) / 2 (half-cosine); end from
                    total_steps on.
        "step":     start * gamma ** (number of milestones <= step), as torch's MultiStepLR:
                    the decay applies from the milestone step itself.
    `end` is unused by "constant" and "step"; `milestones` and `gamma` only by "step".

    Args:
        kind: one of `SCHEDULE_KINDS`.
        step: current optimiser step, counted from 0.
        total_steps: steps over which "linear" and "cosine" go from start to end; >= 1.
        start: value at step 0.
        end: value at step total_steps and after ("linear", "cosine").
        milestones: steps at which "step" multiplies the value by gamma (any order).
        gamma: factor applied at each milestone ("step").

    Returns:
        The weight at `step`.
    """
    if kind not in SCHEDULE_KINDS:
        raise ValueError(f"schedule kind {kind!r} is not one of {list(SCHEDULE_KINDS)}")
    if step < 0:
        raise ValueError(f"schedule step must be >= 0, got {step}")
    if total_steps < 1:
        raise ValueError(f"schedule total_steps must be >= 1, got {total_steps}")
    progress = min(step / total_steps, 1.0)
    if kind == "constant":
        return start
    if kind == "linear":
        return start + (end - start) * progress
    if kind == "cosine":
        return end + (start - end) * (1.0 + math.cos(math.pi * progress)) / 2.0
    num_decays = bisect.bisect_right(sorted(milestones), step)
    return start * gamma**num_decays
