"""Pose and shape metrics: MPJPE, PA-MPJPE, PVE and acceleration error, in millimetres.

Pure, batched torch functions, with the definitions used by SPIN (Kolotouros et al. 2019,
github.com/nkolot/SPIN eval.py, utils/pose_utils.py) and VIBE (Kocabas et al. 2020,
github.com/mkocabas/VIBE lib/utils/eval_utils.py), so that numbers compare with the paper's
(METHOD.md section 6). Inputs are in metres; outputs are in millimetres.

Tensor naming legend (shape suffixes):
    B = batch of frames, T = time (frames of one sequence), J = joints (the 14 eval joints unless
    said otherwise), V = mesh vertices; trailing digits are literal sizes (`joints_BJ3`,
    `rotmat_B33`). `Tm2` is T - 2 (second differences of a sequence).

Frames: any frame shared by prediction and target (camera or world, metres). MPJPE and PVE
remove the translation by aligning pelvises; PA-MPJPE removes scale, rotation and translation.
"""

import torch

from raymotion.body.joints import EVAL_HIP_PAIR

# Metres to millimetres: metrics are reported in mm (METHOD.md section 6).
_M_TO_MM = 1000.0


def pelvis_from_hips(
    joints_BJ3: torch.Tensor, *, hip_pair: tuple[int, int] = EVAL_HIP_PAIR
) -> torch.Tensor:
    """Pelvis as the mid-point of the two hip joints (SPIN's convention for the 14 eval joints).

    Args:
        joints_BJ3: (..., J, 3) joints, metres, any frame.
        hip_pair: indices of the left and right hip in the J axis (order does not matter);
            `EVAL_HIP_PAIR` for the 14 eval joints.

    Returns:
        pelvis_B3: (..., 3) pelvis, metres, same frame.
    """
    first, second = hip_pair
    return (joints_BJ3[..., first, :] + joints_BJ3[..., second, :]) / 2.0


def mpjpe_mm(
    pred_BJ3: torch.Tensor, target_BJ3: torch.Tensor, *, hip_pair: tuple[int, int] = EVAL_HIP_PAIR
) -> torch.Tensor:
    """Mean per-joint position error after aligning both skeletons at their pelvis (SPIN eval.py).

    Args:
        pred_BJ3: (B, J, 3) predicted joints, metres, any frame.
        target_BJ3: (B, J, 3) ground-truth joints, metres, same frame as pred.
        hip_pair: indices of the two hips in the J axis; each skeleton's pelvis is their
            mid-point (`EVAL_HIP_PAIR` for the 14 eval joints).

    Returns:
        (B,) mean over joints of the Euclidean error, millimetres.
    """
    pred_centred_BJ3 = pred_BJ3 - pelvis_from_hips(pred_BJ3, hip_pair=hip_pair)[..., None, :]
    target_centred_BJ3 = target_BJ3 - pelvis_from_hips(target_BJ3, hip_pair=hip_pair)[..., None, :]
    return (pred_centred_BJ3 - target_centred_BJ3).norm(dim=-1).mean(dim=-1) * _M_TO_MM


def similarity_transform(
    pred_BJ3: torch.Tensor, target_BJ3: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Least-squares similarity transform (scale, proper rotation, translation) from pred to target.

    Umeyama's solution as written in SPIN's `compute_similarity_transform` and VIBE's
    `batch_compute_similarity_transform_torch`, with points as columns X (3, J):
        X1 = pred - mu1, X2 = target - mu2, var1 = sum(X1^2), K = X1 X2^T = U S V^T,
        Z = diag(1, 1, sign(det(U V^T))), R = V Z U^T, scale = trace(R K) / var1,
        t = mu2 - scale R mu1.
    Z flips the least significant axis when the best orthogonal map is a reflection, so R is
    always a rotation (det +1). A degenerate pred (all joints at one point, var1 = 0) gives
    inf/NaN, as in SPIN.

    Args:
        pred_BJ3: (B, J, 3) points to align, metres, any frame.
        target_BJ3: (B, J, 3) points to align to, metres, any frame.

    Returns:
        scale_B: (B,) scale, unitless.
        rotmat_B33: (B, 3, 3) rotation acting on column vectors (x' = R x), det +1.
        transl_B3: (B, 3) translation, metres, target's frame.
        so that scale * R pred_j + t approximates target_j.
    """
    mean_pred_B13 = pred_BJ3.mean(dim=-2, keepdim=True)
    mean_target_B13 = target_BJ3.mean(dim=-2, keepdim=True)
    centred_pred_BJ3 = pred_BJ3 - mean_pred_B13
    centred_target_BJ3 = target_BJ3 - mean_target_B13
    var_pred_B = (centred_pred_BJ3**2).sum(dim=(-2, -1))
    # K = X1 X2^T with points as columns is X1_rows^T X2_rows with points as rows.
    cross_B33 = centred_pred_BJ3.transpose(-1, -2) @ centred_target_BJ3
    u_B33, _, vh_B33 = torch.linalg.svd(cross_B33)
    v_B33 = vh_B33.transpose(-1, -2)
    reflection_fix_B33 = torch.eye(3, dtype=pred_BJ3.dtype, device=pred_BJ3.device).repeat(
        pred_BJ3.shape[0], 1, 1
    )
    reflection_fix_B33[:, -1, -1] = torch.sign(torch.linalg.det(u_B33 @ vh_B33))
    rotmat_B33 = v_B33 @ reflection_fix_B33 @ u_B33.transpose(-1, -2)
    scale_B = torch.diagonal(rotmat_B33 @ cross_B33, dim1=-2, dim2=-1).sum(dim=-1) / var_pred_B
    rotated_mean_pred_B3 = (mean_pred_B13 @ rotmat_B33.transpose(-1, -2))[:, 0]
    transl_B3 = mean_target_B13[:, 0] - scale_B[:, None] * rotated_mean_pred_B3
    return scale_B, rotmat_B33, transl_B3


def procrustes_align(pred_BJ3: torch.Tensor, target_BJ3: torch.Tensor) -> torch.Tensor:
    """Align pred to target with the best similarity transform (see `similarity_transform`).

    Equals SPIN's `compute_similarity_transform` / VIBE's batch version applied per sample.

    Args:
        pred_BJ3: (B, J, 3) points to align, metres, any frame.
        target_BJ3: (B, J, 3) points to align to, metres, any frame.

    Returns:
        aligned_pred_BJ3: (B, J, 3) scale * R pred + t, metres, target's frame.
    """
    scale_B, rotmat_B33, transl_B3 = similarity_transform(pred_BJ3, target_BJ3)
    return scale_B[:, None, None] * (pred_BJ3 @ rotmat_B33.transpose(-1, -2)) + transl_B3[:, None, :]


def pa_mpjpe_mm(pred_BJ3: torch.Tensor, target_BJ3: torch.Tensor) -> torch.Tensor:
    """Procrustes-aligned MPJPE (SPIN's `reconstruction_error` with reduction=None).

    Args:
        pred_BJ3: (B, J, 3) predicted joints, metres, any frame.
        target_BJ3: (B, J, 3) ground-truth joints, metres, any frame.

    Returns:
        (B,) mean over joints of the Euclidean error after similarity alignment, millimetres.
    """
    aligned_pred_BJ3 = procrustes_align(pred_BJ3, target_BJ3)
    return (aligned_pred_BJ3 - target_BJ3).norm(dim=-1).mean(dim=-1) * _M_TO_MM


def pve_mm(
    pred_verts_BV3: torch.Tensor,
    target_verts_BV3: torch.Tensor,
    pred_pelvis_B3: torch.Tensor,
    target_pelvis_B3: torch.Tensor,
) -> torch.Tensor:
    """Per-vertex error after aligning the meshes at their pelvis.

    The pelvises should be the ones MPJPE uses: the mid-hips of each mesh's 14 eval joints
    (`pelvis_from_hips(eval_joints_BJ3)`), so that PVE and MPJPE share one alignment. Both
    meshes must have the same topology (vertex v of pred corresponds to vertex v of target).

    Args:
        pred_verts_BV3: (B, V, 3) predicted vertices, metres, any frame.
        target_verts_BV3: (B, V, 3) ground-truth vertices, metres, same frame as pred.
        pred_pelvis_B3: (B, 3) pelvis of the predicted body, metres, pred's frame.
        target_pelvis_B3: (B, 3) pelvis of the ground-truth body, metres, target's frame.

    Returns:
        (B,) mean over vertices of the Euclidean error, millimetres.
    """
    pred_centred_BV3 = pred_verts_BV3 - pred_pelvis_B3[..., None, :]
    target_centred_BV3 = target_verts_BV3 - target_pelvis_B3[..., None, :]
    return (pred_centred_BV3 - target_centred_BV3).norm(dim=-1).mean(dim=-1) * _M_TO_MM


def _second_difference(joints_TJ3: torch.Tensor) -> torch.Tensor:
    """(T, J, 3) -> (T - 2, J, 3): x[t] - 2 x[t + 1] + x[t + 2], i.e. acceleration per frame^2."""
    return joints_TJ3[:-2] - 2.0 * joints_TJ3[1:-1] + joints_TJ3[2:]


def accel_mm(joints_TJ3: torch.Tensor) -> torch.Tensor:
    """Acceleration magnitude of a joint sequence (VIBE's `compute_accel`).

    Args:
        joints_TJ3: (T, J, 3) joints of one sequence, metres, any frame; T >= 3.

    Returns:
        (T - 2,) mean over joints of the second finite difference's norm, mm / frame^2;
            entry t is centred on frame t + 1.
    """
    return _second_difference(joints_TJ3).norm(dim=-1).mean(dim=-1) * _M_TO_MM


def accel_error_mm(
    pred_TJ3: torch.Tensor, target_TJ3: torch.Tensor, *, vis_T: torch.Tensor | None = None
) -> torch.Tensor:
    """Acceleration error of one sequence (VIBE's `compute_error_accel`).

    VIBE's eval.py applies it to pelvis-centred joints (see `pelvis_from_hips`) and reports the
    mean of the returned values.

    Args:
        pred_TJ3: (T, J, 3) predicted joints of consecutive frames, metres, any frame; T >= 3.
        target_TJ3: (T, J, 3) ground-truth joints, metres, same frame as pred.
        vis_T: optional (T,) bool, True where the frame's target is valid; a second difference
            is kept only when all three of its frames are valid (VIBE's `vis`). None keeps all.

    Returns:
        (T - 2,) per-frame mean over joints of ||accel_pred - accel_target||, mm / frame^2
            (fewer entries when vis_T drops some); entry t is centred on frame t + 1.
    """
    accel_diff_Tm2J3 = _second_difference(pred_TJ3) - _second_difference(target_TJ3)
    error_Tm2 = accel_diff_Tm2J3.norm(dim=-1).mean(dim=-1)
    if vis_T is not None:
        keep_Tm2 = vis_T[:-2] & vis_T[1:-1] & vis_T[2:]
        error_Tm2 = error_Tm2[keep_Tm2]
    return error_Tm2 * _M_TO_MM


def clustered_mean_se(values_N: torch.Tensor, cluster_N: torch.Tensor) -> tuple[float, float]:
    """Mean of per-frame values and its standard error with clips as the independent units.

    Frames of one clip are correlated (same subject, motion and camera), so the frame count overstates
    the information; the cluster-robust standard error of a mean treats each clip as one draw:
    SE^2 = C / (C - 1) * sum_c (sum_{n in c} (x_n - mean))^2 / N^2 over C clips and N frames. With equal
    clip sizes it is std(clip means, ddof=1) / sqrt(C). Applied to per-frame *differences* of two models
    on the same frames, it is the paired standard error of their gap.

    Args:
        values_N: (N,) per-frame values (e.g. ``pa_mpjpe_mm`` of each frame), any unit.
        cluster_N: (N,) integer clip index of each frame.

    Returns:
        (mean, standard error) as floats; the error is nan with fewer than 2 clips.
    """
    values_N = values_N.double()
    mean = values_N.mean()
    clusters_N = torch.unique(cluster_N, return_inverse=True)[1]
    num_clusters = int(clusters_N.max()) + 1 if len(clusters_N) else 0
    if num_clusters < 2:
        return float(mean), float("nan")
    residual_sums_C = torch.zeros(num_clusters, dtype=values_N.dtype).index_add_(0, clusters_N, values_N - mean)
    variance = num_clusters / (num_clusters - 1) * residual_sums_C.square().sum() / len(values_N) ** 2
    return float(mean), float(variance.sqrt())
