"""Supervised loss on annotated frames (SPIN/EFT), as separate pure terms plus a weighted sum.

L_sup = 60 * (1 L_pose + 0.001 L_beta + 1 L_betaprior + 5 L_kp2d + 5 L_kp3d + 1 L_cam)
(METHOD.md section 2; weights from SPIN's defaults, github.com/nkolot/SPIN train/trainer.py and
utils/train_options.py, which the paper's code, AndreiDavydov/videoHMR_SSL src/losses/train_hmr.py,
reuses). Each term is a function of tensors; `supervised_loss` combines already computed terms,
so the caller (train/step.py) decides which predictions feed which term.

Tensor naming legend (shape suffixes):
    B = batch of annotated frames, J = joints, K = shape coefficients (betas);
    trailing digits are literal sizes (`rotmats_BJ33` is (B, J, 3, 3), `cam_B3` is (B, 3)).

Masks: `has_smpl_B` / `has_3d_B` are (B,) bool (or 0/1 floats) saying which samples carry that
label. Masked-out samples are excluded by multiplying by the mask, not by boolean indexing: that
avoids a host-device sync and makes an all-false mask give exactly 0 (SPIN returns 0 there too).
Labels of masked-out samples must still be finite (0 * NaN is NaN).
"""

import dataclasses
import math

import torch

# SPIN's camera-scale regulariser: exp(-10 s)^2 is ~1 for s <= 0 and vanishes for s >~ 0.3, so it
# only pushes the weak-perspective scale to be positive (SPIN trainer.py, `loss_cam`).
_CAM_SCALE_SHARPNESS = 10.0

SUPERVISED_TERMS: tuple[str, ...] = ("pose", "betas", "betas_prior", "kp2d", "kp3d", "cam")


def _masked_mse(pred_B: torch.Tensor, gt_B: torch.Tensor, mask_B: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the entries of the samples where mask_B is set; 0 if none is.

    pred_B, gt_B: (B, ...) of equal shape; mask_B: (B,) bool or 0/1.
    """
    squared_sum_B = ((pred_B - gt_B) ** 2).flatten(start_dim=1).sum(dim=1)
    mask_B = mask_B.to(squared_sum_B.dtype)
    entries_per_sample = math.prod(pred_B.shape[1:])
    num_entries = mask_B.sum().clamp_min(1.0) * entries_per_sample
    return (mask_B * squared_sum_B).sum() / num_entries


def pose_loss(
    pred_rotmats_BJ33: torch.Tensor, gt_rotmats_BJ33: torch.Tensor, has_smpl_B: torch.Tensor
) -> torch.Tensor:
    """L_pose: mean squared error of the joint rotation matrices over samples with SMPL labels.

    Args:
        pred_rotmats_BJ33: (B, J, 3, 3) predicted SMPL joint rotations (global orient first),
            parent-relative, acting on column vectors.
        gt_rotmats_BJ33: (B, J, 3, 3) ground-truth rotations, same convention.
        has_smpl_B: (B,) bool or 0/1, True where the sample has SMPL pose/shape labels.

    Returns:
        () mean over the labelled samples' J * 9 entries of the squared difference, unitless;
            0 when no sample is labelled.
    """
    return _masked_mse(pred_rotmats_BJ33, gt_rotmats_BJ33, has_smpl_B)


def betas_loss(pred_BK: torch.Tensor, gt_BK: torch.Tensor, has_smpl_B: torch.Tensor) -> torch.Tensor:
    """L_beta: mean squared error of the shape coefficients over samples with SMPL labels.

    Args:
        pred_BK: (B, K) predicted betas, unitless.
        gt_BK: (B, K) ground-truth betas, unitless.
        has_smpl_B: (B,) bool or 0/1, True where the sample has SMPL pose/shape labels.

    Returns:
        () mean over the labelled samples' K entries of the squared difference; 0 when no sample
            is labelled.
    """
    return _masked_mse(pred_BK, gt_BK, has_smpl_B)


def betas_prior_loss(pred_BK: torch.Tensor) -> torch.Tensor:
    """L_betaprior: mean of beta^2 over all samples (a Gaussian prior on shape; EFT's code).

    Args:
        pred_BK: (B, K) predicted betas, unitless.

    Returns:
        () mean over all B * K entries of beta^2.
    """
    return (pred_BK**2).mean()


def keypoint_2d_loss(
    pred_norm_BJ2: torch.Tensor, gt_norm_BJ2: torch.Tensor, vis_BJ: torch.Tensor
) -> torch.Tensor:
    """L_kp2d: visibility-weighted squared error of 2D joints, SPIN's `(conf * mse).mean()`.

    The mean runs over all B * J * 2 entries, visible or not (SPIN's reduction). The paper's code
    divides by the number of visible joints instead, which is larger by B * J * 2 / sum(vis).

    Args:
        pred_norm_BJ2: (B, J, 2) projected predicted joints, normalised crop coordinates [-1, 1]
            (x right, y down), e.g. from `weak_perspective_to_normalised`.
        gt_norm_BJ2: (B, J, 2) annotated joints, normalised crop coordinates, same convention.
        vis_BJ: (B, J) weight per joint: 0 for missing, 1 (or a detector confidence) otherwise.

    Returns:
        () mean of vis * (pred - gt)^2 over all entries, normalised crop units squared.
    """
    weights_BJ1 = vis_BJ.to(pred_norm_BJ2.dtype)[..., None]
    return (weights_BJ1 * (pred_norm_BJ2 - gt_norm_BJ2) ** 2).mean()


def keypoint_3d_loss(
    pred_BJ3: torch.Tensor, gt_BJ3: torch.Tensor, has_3d_B: torch.Tensor, *, pelvis_index: int,
    conf_BJ: torch.Tensor | None = None,
) -> torch.Tensor:
    """L_kp3d: mean squared error of pelvis-centred 3D joints over samples with 3D labels.

    Centring both skeletons at their own pelvis removes the global translation, which a
    weak-perspective regressor does not predict in metres.

    Args:
        pred_BJ3: (B, J, 3) predicted joints, metres, camera frame.
        gt_BJ3: (B, J, 3) ground-truth joints, metres, camera frame, same joint order.
        has_3d_B: (B,) bool or 0/1, True where the sample has 3D joint labels.
        pelvis_index: index in J of the joint both skeletons are centred at (a named constant
            from `raymotion.body.joints`).
        conf_BJ: (B, J) weight of each joint's squared error (SPIN's per-joint 3D confidence: 0 for a
            joint the dataset lacks, e.g. one with no namesake in its joint set); None weighs all 1.

    Returns:
        () mean over the labelled samples' J * 3 entries of the (weighted) squared difference, metres^2;
            0 when no sample is labelled.
    """
    pred_centred_BJ3 = pred_BJ3 - pred_BJ3[:, pelvis_index : pelvis_index + 1]
    gt_centred_BJ3 = gt_BJ3 - gt_BJ3[:, pelvis_index : pelvis_index + 1]
    if conf_BJ is not None:
        # sqrt of the weight on both sides: the squared error is then weighted by conf itself.
        root_BJ1 = conf_BJ.to(pred_BJ3.dtype).sqrt()[..., None]
        pred_centred_BJ3, gt_centred_BJ3 = root_BJ1 * pred_centred_BJ3, root_BJ1 * gt_centred_BJ3
    return _masked_mse(pred_centred_BJ3, gt_centred_BJ3, has_3d_B)


def camera_loss(cam_B3: torch.Tensor) -> torch.Tensor:
    """L_cam: mean(exp(-10 s)^2), which keeps the weak-perspective scale s positive.

    Args:
        cam_B3: (B, 3) predicted weak-perspective camera (s, tx, ty), normalised crop units.

    Returns:
        () mean over the batch, unitless.
    """
    return (torch.exp(-_CAM_SCALE_SHARPNESS * cam_B3[:, 0]) ** 2).mean()


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class SupervisedWeights:
    """Weights of the supervised terms; L_sup = overall * sum_k weight_k * L_k (METHOD.md section 2)."""

    pose: float = 1.0
    """Weight of L_pose (rotation-matrix MSE)."""
    betas: float = 0.001
    """Weight of L_beta (betas MSE)."""
    betas_prior: float = 1.0
    """Weight of L_betaprior (mean beta^2)."""
    kp2d: float = 5.0
    """Weight of L_kp2d (2D joints, normalised crop coordinates)."""
    kp3d: float = 5.0
    """Weight of L_kp3d (pelvis-centred 3D joints)."""
    cam: float = 1.0
    """Weight of L_cam (camera-scale regulariser)."""
    overall: float = 60.0
    """Factor on the whole weighted sum (SPIN's `loss *= 60`)."""

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if not (math.isfinite(value) and value >= 0.0):
                raise ValueError(
                    f"SupervisedWeights.{field.name} must be a finite number >= 0, got {value!r}"
                )


def supervised_loss(
    terms: dict[str, torch.Tensor], weights: SupervisedWeights
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Weighted sum of the supervised terms.

    Args:
        terms: the unweighted terms, () tensors, keyed exactly by `SUPERVISED_TERMS`
            ("pose", "betas", "betas_prior", "kp2d", "kp3d", "cam").
        weights: the per-term weights and the overall factor.

    Returns:
        total: () overall * sum_k weight_k * terms[k].
        weighted: each term times overall * weight_k, keyed like `terms`; they sum to total.
    """
    if set(terms) != set(SUPERVISED_TERMS):
        missing = sorted(set(SUPERVISED_TERMS) - set(terms))
        unknown = sorted(set(terms) - set(SUPERVISED_TERMS))
        raise ValueError(
            f"supervised_loss terms must have exactly the keys {list(SUPERVISED_TERMS)}; "
            f"missing {missing}, unknown {unknown}"
        )
    weighted = {name: weights.overall * getattr(weights, name) * terms[name] for name in SUPERVISED_TERMS}
    total = torch.stack(list(weighted.values())).sum()
    return total, weighted
