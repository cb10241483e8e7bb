"""Bake NAVER's free Anny body model into the SMPL file layout (a dev-time tool).

raymotion never imports this file: it needs `anny` (the `bake` extra), which pulls warp-lang. Run it only to
(re)build the embedded body files:

    pip install torch==2.14.1 smplx==0.1.28 anny==0.6.2 scipy
    python tools/bake_default_body.py --out-dir raymotion/assets

The first run builds Anny's model data (~2 minutes, 1.5 GB of RAM, ~820 MB written to ~/.cache/anny);
later runs take seconds. The output is deterministic for a given --seed and --num-samples.

Recipe, for each topology (full resolution 'anny', low resolution 'notoes_collapse10pc'):
1. Sample adult phenotypes from anny's WHO-calibrated shape distribution (adult ages, heights cut to a
   range), and build each sample's rest mesh and bone heads (A-pose), rotated into the SMPL frame.
2. Merge Anny's 104-bone skinning weights into SMPL's 24 parts; take the 24 joints at Anny bone heads.
3. Re-pose every sample from Anny's A-pose to a T-pose (arms straight along +-x) with those 24-part
   weights, by linear blend skinning.
4. PCA over the T-posed samples of the full mesh -> v_template (mean) and 10 shapedirs, scaled so that
   each beta has unit standard deviation over the samples; the low-resolution mesh gets the basis that
   reproduces the same samples from the same betas, so a beta vector is the same person on both meshes.
5. Fit a local joint regressor (24, V) to the bone heads, a convex Human3.6M evaluation regressor
   (17, V), and the vertex ids of smplx's 21 extra surface joints on this mesh.

Legend: N phenotype samples, V mesh vertices, F faces, Bn Anny bones, J = 24 SMPL joints, K betas,
T texture coordinates. Frames: Anny is z up and faces -y; SMPL is y up, faces +z, subject's left is +x.
Units are metres.
"""

from __future__ import annotations

import argparse
import functools
import importlib.metadata
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import anny
import numpy as np
import torch
from anny.keypoints import KeypointsRegressor
from anny.shape_distribution import SimpleShapeDistribution
from scipy.optimize import nnls
from smplx.lbs import batch_rigid_transform

FULL_TOPOLOGY = "anny"
LOWRES_TOPOLOGY = "notoes_collapse10pc"
OUTPUT_FILES = {FULL_TOPOLOGY: "anny_smpl.npz", LOWRES_TOPOLOGY: "anny_smpl_lowres.npz"}

# Anny (z up, facing -y) -> SMPL (y up, facing +z); x (the subject's left) is kept.
ANNY_TO_SMPL_R33 = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])

# The 24 SMPL joints in SMPL order (must match raymotion/body/joints.py) and the Anny bone whose head
# each one sits at. Anny's '.L' bones lie at +x, the subject's left, as SMPL's 'left' joints do.
SMPL_JOINT_BONES: dict[str, str] = {
    "pelvis": "root",
    "left_hip": "upperleg01.L",
    "right_hip": "upperleg01.R",
    "spine1": "spine04",
    "left_knee": "lowerleg01.L",
    "right_knee": "lowerleg01.R",
    "spine2": "spine03",
    "left_ankle": "foot.L",
    "right_ankle": "foot.R",
    "spine3": "spine02",
    "left_foot": "toe3-1.L",
    "right_foot": "toe3-1.R",
    "neck": "neck01",
    "left_collar": "clavicle.L",
    "right_collar": "clavicle.R",
    "head": "head",
    "left_shoulder": "upperarm01.L",
    "right_shoulder": "upperarm01.R",
    "left_elbow": "lowerarm01.L",
    "right_elbow": "lowerarm01.R",
    "left_wrist": "wrist.L",
    "right_wrist": "wrist.R",
    "left_hand": "finger3-1.L",
    "right_hand": "finger3-1.R",
}
SMPL_JOINT_NAMES = tuple(SMPL_JOINT_BONES)
JOINT = {name: i for i, name in enumerate(SMPL_JOINT_NAMES)}
SMPL_PARENTS = (-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21)
# SMPL files store the root's parent as the uint32 -1.
KINTREE_ROOT_PARENT = 4294967295
NUM_POSE_BASIS = 207  # 23 body joints x 9: smplx needs the columns even though they are all zero

# Parts that do not follow the "nearest mapped ancestor" rule: in SMPL all toes move with the foot joint
# and all fingers (thumb included) with the hand joint, while in Anny they hang off foot/wrist/metacarpals.
BONE_PREFIX_PARTS = {("toe", ".L"): "left_foot", ("toe", ".R"): "right_foot",
                     ("finger", ".L"): "left_hand", ("finger", ".R"): "right_hand"}

# smplx's VertexJointSelector names (raymotion/body/joints.py EXTRA_JOINT_NAMES) -> Anny's COCO
# keypoint regressor labels, for the face and feet landmarks.
COCO_EXTRA_JOINTS = {
    "nose": "nose", "reye": "right_eye", "leye": "left_eye", "rear": "right_ear", "lear": "left_ear",
    "LBigToe": "left_big_toe", "LSmallToe": "left_small_toe", "LHeel": "left_heel",
    "RBigToe": "right_big_toe", "RSmallToe": "right_small_toe", "RHeel": "right_heel",
}
# Finger tips: the distal bone of each finger (makehuman numbers the thumb 1, the little finger 5).
FINGER_TIP_BONES = {f"{side}{name}": f"finger{digit}-3.{suffix}"
                    for side, suffix in (("l", "L"), ("r", "R"))
                    for digit, name in enumerate(("thumb", "index", "middle", "ring", "pinky"), start=1)}
EXTRA_JOINT_NAMES = (*COCO_EXTRA_JOINTS, *FINGER_TIP_BONES)

# Rows of the Human3.6M evaluation regressor in the order SPIN's J_regressor_h36m.npy is read by SPIN's
# H36M_TO_J14 (raymotion/body/joints.py H36M_JOINT_NAMES: the legs left first, then the arms left first).
H36M_FROM_SMPL = {0: "pelvis", 1: "left_hip", 2: "left_knee", 3: "left_ankle", 4: "right_hip",
                  5: "right_knee", 6: "right_ankle", 11: "left_shoulder", 12: "left_elbow",
                  13: "left_wrist", 14: "right_shoulder", 15: "right_elbow", 16: "right_wrist"}
H36M_SPINE, H36M_THORAX, H36M_NECK_NOSE, H36M_HEAD_TOP = 7, 8, 9, 10
NUM_H36M_JOINTS = 17
HEAD_TOP_RADIUS_M = 0.02  # the head-top joint averages the skull vertices this close to the top vertex
# Ridge of the joint regressor, relative to the data's scale. On the full mesh (~850 neighbours) 1e-5 gave
# 0.5 mm held-out error with the negative weights of a joint summing to < 10; 1e-6 gave 0.26 mm but sums
# up to 14, 1e-4 gave 1.0 mm and 6.
REGRESSOR_RIDGE = 1e-5


@dataclass(frozen=True, slots=True)
class Sampling:
    """How the phenotypes behind the shape space are drawn."""

    num_samples: int
    seed: int
    age_range_years: tuple[float, float] = (20.0, 60.0)
    height_range_m: tuple[float, float] = (1.50, 1.95)


@dataclass(frozen=True, slots=True)
class ShapeSpace:
    """A linear shape space fitted to T-posed samples.

    template_V3: (V, 3) mean T-pose mesh, metres. shapedirs_V3K: (V, 3, K) per unit beta.
    betas_NK: (N, K) the samples' coefficients. explained_K: (K,) fraction of the samples' variance
    each component explains.
    """

    template_V3: np.ndarray
    shapedirs_V3K: np.ndarray
    betas_NK: np.ndarray
    explained_K: np.ndarray


def load_anny(topology: str) -> anny.Anny:
    """Anny's default full-body model (rig 'anny', the 6 default phenotype sliders) on ``topology``."""
    return anny.Anny(topology=topology)


def rest_shapes(model: anny.Anny, phenotypes_N6: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Rest (A-pose) meshes and bone heads of phenotype samples, in the SMPL frame.

    Args:
        phenotypes_N6: (N, 6) slider values in [0, 1], in the order of ``model.phenotype_labels``.
    Returns:
        verts_NV3: (N, V, 3) and heads_NBn3: (N, Bn, 3), metres, float64.
    """
    verts, heads = [], []
    with torch.no_grad():
        for chunk in phenotypes_N6.split(50):
            out = model(phenotype_kwargs=chunk.to(model.dtype))
            verts.append(out["rest_vertices"].numpy())
            heads.append(out["rest_bone_heads"].numpy())
    return np.concatenate(verts) @ ANNY_TO_SMPL_R33.T, np.concatenate(heads) @ ANNY_TO_SMPL_R33.T


def mesh_heights(verts_NV3: np.ndarray) -> np.ndarray:
    """(N,) standing heights (vertical extent along SMPL's y), metres."""
    return verts_NV3[..., 1].max(axis=1) - verts_NV3[..., 1].min(axis=1)


def sample_phenotypes(model: anny.Anny, sampling: Sampling) -> torch.Tensor:
    """Adult phenotypes from anny's WHO-calibrated ``SimpleShapeDistribution``.

    Morphological ages are uniform over ``sampling.age_range_years`` and samples whose height falls
    outside ``sampling.height_range_m`` are redrawn. Deterministic for a seed (torch's global RNG).

    Returns:
        phenotypes_N6: (N, 6) sliders in the order of ``model.phenotype_labels``, float64.
    """
    torch.manual_seed(sampling.seed)
    low, high = (torch.tensor(age, dtype=model.dtype) for age in sampling.age_range_years)
    distribution = SimpleShapeDistribution(
        model, morphological_age_distribution=torch.distributions.Uniform(low, high)
    )
    kept: list[torch.Tensor] = []
    num_kept = 0
    while num_kept < sampling.num_samples:
        _, sliders = distribution.sample(sampling.num_samples)
        batch_N6 = torch.stack([sliders[label] for label in model.phenotype_labels], dim=1)
        heights_N = mesh_heights(rest_shapes(model, batch_N6)[0])
        inside = (heights_N >= sampling.height_range_m[0]) & (heights_N <= sampling.height_range_m[1])
        kept.append(batch_N6[torch.from_numpy(inside)])
        num_kept += int(inside.sum())
    return torch.cat(kept)[: sampling.num_samples]


def bone_parts(bone_labels: list[str], bone_parents: list[int]) -> np.ndarray:
    """(Bn,) the SMPL part (joint index) each Anny bone's skinning weight goes to.

    A bone goes to the SMPL joint at its nearest ancestor-or-self that is a joint bone (so spine01 joins
    spine3 and shoulder01 the collar), except toes and fingers (``BONE_PREFIX_PARTS``).
    """
    joint_of_bone = {bone: JOINT[name] for name, bone in SMPL_JOINT_BONES.items()}
    parts = np.empty(len(bone_labels), dtype=np.int64)
    for index, label in enumerate(bone_labels):
        prefix_part = [part for (prefix, suffix), part in BONE_PREFIX_PARTS.items()
                       if label.startswith(prefix) and label.endswith(suffix)]
        if prefix_part:
            parts[index] = JOINT[prefix_part[0]]
            continue
        ancestor = index
        while bone_labels[ancestor] not in joint_of_bone:
            ancestor = bone_parents[ancestor]
        parts[index] = joint_of_bone[bone_labels[ancestor]]
    return parts


def merge_skinning_weights(model: anny.Anny) -> np.ndarray:
    """(V, 24) SMPL-part skinning weights, the sums of Anny's per-bone weights; rows sum to 1."""
    parts_Bn = bone_parts(model.bone_labels, model.bone_parents)
    weights_V9 = model.vertex_bone_weights.numpy()
    parts_V9 = parts_Bn[model.vertex_bone_indices.numpy()]
    weights_VJ = np.zeros((weights_V9.shape[0], len(SMPL_JOINT_NAMES)))
    np.add.at(weights_VJ, (np.arange(weights_V9.shape[0])[:, None], parts_V9), weights_V9)
    return weights_VJ / weights_VJ.sum(axis=1, keepdims=True)


def rotation_between(from_N3: np.ndarray, to_3: np.ndarray) -> np.ndarray:
    """(N, 3, 3) the smallest rotations taking directions ``from_N3`` to the direction ``to_3``."""
    a = from_N3 / np.linalg.norm(from_N3, axis=1, keepdims=True)
    b = to_3 / np.linalg.norm(to_3)
    axis = np.cross(a, b)
    cos = a @ b
    skew = np.zeros((len(a), 3, 3))
    skew[:, 0, 1], skew[:, 0, 2], skew[:, 1, 2] = -axis[:, 2], axis[:, 1], -axis[:, 0]
    skew -= skew.transpose(0, 2, 1)
    return np.eye(3) + skew + skew @ skew / (1.0 + cos)[:, None, None]


def tpose_rotations(joints_NJ3: np.ndarray) -> np.ndarray:
    """(N, 24, 3, 3) local joint rotations that take Anny's A-pose to a T-pose.

    Each arm is straightened along +-x bone by bone: the upper arm (shoulder -> elbow), the forearm
    (elbow -> wrist, which Anny bends ~45 deg forward) and the hand (wrist -> middle knuckle). The legs,
    spine and head keep Anny's rest pose.
    """
    num = joints_NJ3.shape[0]
    global_NJ33 = np.tile(np.eye(3), (num, len(SMPL_JOINT_NAMES), 1, 1))
    for side, sign in (("left", 1.0), ("right", -1.0)):
        chain = [JOINT[f"{side}_{name}"] for name in ("shoulder", "elbow", "wrist", "hand")]
        rot_N33 = np.tile(np.eye(3), (num, 1, 1))
        for joint, child in zip(chain[:-1], chain[1:]):
            bone_N3 = np.einsum("nij,nj->ni", rot_N33, joints_NJ3[:, child] - joints_NJ3[:, joint])
            rot_N33 = rotation_between(bone_N3, np.array([sign, 0.0, 0.0])) @ rot_N33
            global_NJ33[:, joint] = rot_N33
        global_NJ33[:, chain[-1]] = rot_N33
    parents = list(SMPL_PARENTS)
    local_NJ33 = global_NJ33.copy()
    local_NJ33[:, 1:] = global_NJ33[:, parents[1:]].transpose(0, 1, 3, 2) @ global_NJ33[:, 1:]
    return local_NJ33


def pose_with_lbs(
    verts_NV3: np.ndarray, *, joints_NJ3: np.ndarray, rotmats_NJ33: np.ndarray, weights_VJ: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Pose meshes by linear blend skinning on SMPL's kinematic tree (smplx's own rigid transform).

    Returns:
        verts_NV3, joints_NJ3: the posed meshes and joints, metres, float64.
    """
    parents = torch.tensor(SMPL_PARENTS)
    weights = torch.from_numpy(weights_VJ)
    posed_verts, posed_joints = [], []
    for start in range(0, len(verts_NV3), 25):
        verts = torch.from_numpy(verts_NV3[start : start + 25])
        joints, transforms_NJ44 = batch_rigid_transform(
            torch.from_numpy(rotmats_NJ33[start : start + 25]),
            torch.from_numpy(joints_NJ3[start : start + 25]),
            parents,
            dtype=torch.float64,
        )
        per_vertex_NV44 = torch.einsum("vj,njab->nvab", weights, transforms_NJ44)
        posed = torch.einsum("nvab,nvb->nva", per_vertex_NV44[..., :3, :3], verts)
        posed_verts.append((posed + per_vertex_NV44[..., :3, 3]).numpy())
        posed_joints.append(joints.numpy())
    return np.concatenate(posed_verts), np.concatenate(posed_joints)


def signed_volume(verts_V3: np.ndarray, faces_F3: np.ndarray) -> float:
    """Enclosed volume of a closed mesh with outward faces, cubic metres."""
    v0, v1, v2 = (verts_V3[faces_F3[:, i]] for i in range(3))
    return float(np.einsum("fi,fi->f", v0, np.cross(v1, v2)).sum() / 6.0)


def fit_shape_space(verts_NV3: np.ndarray, *, faces_F3: np.ndarray, num_betas: int) -> ShapeSpace:
    """PCA of T-posed sample meshes, scaled so each beta has unit standard deviation over the samples.

    Signs: a positive beta 0 makes the body taller, a positive beta k > 0 makes it larger in volume.
    """
    num = len(verts_NV3)
    template_V3 = verts_NV3.mean(axis=0)
    centred_NX = (verts_NV3 - template_V3).reshape(num, -1)
    u_NK, s_K, vt_KX = np.linalg.svd(centred_NX, full_matrices=False)
    std_K = s_K[:num_betas] / np.sqrt(num - 1)
    shapedirs_V3K = (vt_KX[:num_betas] * std_K[:, None]).T.reshape(-1, 3, num_betas)
    betas_NK = u_NK[:, :num_betas] * np.sqrt(num - 1)
    for k in range(num_betas):
        plus, minus = template_V3 + shapedirs_V3K[..., k], template_V3 - shapedirs_V3K[..., k]
        if k == 0:
            grows = np.ptp(plus[:, 1]) > np.ptp(minus[:, 1])
        else:
            grows = signed_volume(plus, faces_F3) > signed_volume(minus, faces_F3)
        if not grows:
            shapedirs_V3K[..., k] *= -1.0
            betas_NK[:, k] *= -1.0
    explained_K = s_K[:num_betas] ** 2 / np.sum(s_K**2)
    return ShapeSpace(template_V3, shapedirs_V3K, betas_NK, explained_K)


def shape_space_for_betas(verts_NV3: np.ndarray, betas_NK: np.ndarray) -> ShapeSpace:
    """The least-squares shape basis that reproduces ``verts_NV3`` from given betas (another mesh's)."""
    num, num_betas = betas_NK.shape
    template_V3 = verts_NV3.mean(axis=0)
    centred_NX = (verts_NV3 - template_V3).reshape(num, -1)
    basis_KX = np.linalg.lstsq(betas_NK - betas_NK.mean(axis=0), centred_NX, rcond=None)[0]
    # The PCA betas are uncorrelated, so the fitted variance splits into one share per beta.
    explained_K = np.sum(betas_NK**2, axis=0) * np.sum(basis_KX**2, axis=1) / np.sum(centred_NX**2)
    return ShapeSpace(template_V3, basis_KX.T.reshape(-1, 3, num_betas), betas_NK, explained_K)


def nearest_vertices(template_V3: np.ndarray, point_3: np.ndarray, count: int) -> np.ndarray:
    """(count,) ids of the vertices of ``template_V3`` nearest to ``point_3``."""
    return np.argsort(np.linalg.norm(template_V3 - point_3, axis=1))[:count]


def fit_joint_regressor(
    verts_NV3: np.ndarray, joints_NJ3: np.ndarray, *, num_neighbours: int, ridge: float
) -> np.ndarray:
    """(J, V) an accurate joint regressor for the shaped T-pose: local, rows summing to 1, signed.

    Each joint is an affine combination of its ``num_neighbours`` nearest vertices on the mean mesh,
    fitted by least squares over the samples with a ridge (relative to the data's scale) that pulls the
    weights towards the neighbours' centroid. Rows sum to 1, so joints move with any translation. Weights
    may be negative: convex weights miss the spine and knee joints by ~1 cm (Anny places them off the
    centroid of the surrounding surface, differently for each phenotype). smplx applies this regressor
    only to the shaped rest mesh, never to a posed one.
    """
    template_V3 = verts_NV3.mean(axis=0)
    regressor_JV = np.zeros((joints_NJ3.shape[1], verts_NV3.shape[1]))
    for joint in range(joints_NJ3.shape[1]):
        neighbours = nearest_vertices(template_V3, joints_NJ3[:, joint].mean(axis=0), num_neighbours)
        design = verts_NV3[:, neighbours].transpose(0, 2, 1).reshape(-1, num_neighbours)
        gram = design.T @ design
        strength = ridge * np.trace(gram) / num_neighbours
        # KKT system of: min |design w - joint|^2 + strength |w - 1/n|^2 subject to sum(w) = 1.
        kkt = np.zeros((num_neighbours + 1, num_neighbours + 1))
        kkt[:-1, :-1] = gram + strength * np.eye(num_neighbours)
        kkt[:-1, -1] = kkt[-1, :-1] = 1.0
        rhs = np.append(design.T @ joints_NJ3[:, joint].reshape(-1) + strength / num_neighbours, 1.0)
        regressor_JV[joint, neighbours] = np.linalg.solve(kkt, rhs)[:-1]
    return regressor_JV


def fit_convex_joint_regressor(verts_NV3: np.ndarray, joints_NJ3: np.ndarray, *, num_neighbours: int) -> np.ndarray:
    """(J, V) a convex joint regressor: nonnegative weights summing to 1 on nearby vertices.

    Less accurate on the rest mesh than ``fit_joint_regressor`` but each joint stays inside the hull of
    its neighbours, also on posed meshes: the evaluation joints are built from it.
    """
    num = verts_NV3.shape[0]
    template_V3 = verts_NV3.mean(axis=0)
    # A heavily weighted extra row asks for a weight sum of 1; the renormalisation then removes round-off.
    sum_weight = 1e3 * np.sqrt(num)
    regressor_JV = np.zeros((joints_NJ3.shape[1], verts_NV3.shape[1]))
    for joint in range(joints_NJ3.shape[1]):
        neighbours = nearest_vertices(template_V3, joints_NJ3[:, joint].mean(axis=0), num_neighbours)
        design = verts_NV3[:, neighbours].transpose(0, 2, 1).reshape(-1, num_neighbours)
        design = np.vstack([design, np.full((1, num_neighbours), sum_weight)])
        target = np.append(joints_NJ3[:, joint].reshape(-1), sum_weight)
        weights, _ = nnls(design, target, maxiter=100 * num_neighbours)
        regressor_JV[joint, neighbours] = weights / weights.sum()
    return regressor_JV


def holdout_errors_mm(
    fit: Callable[[np.ndarray, np.ndarray], np.ndarray], verts_NV3: np.ndarray, joints_NJ3: np.ndarray
) -> np.ndarray:
    """(N/3, J) errors (mm) of a regressor fitted on the first two thirds of the samples, on the rest."""
    split = 2 * len(verts_NV3) // 3
    regressor_JV = fit(verts_NV3[:split], joints_NJ3[:split])
    return regression_errors_mm(regressor_JV, verts_NV3[split:], joints_NJ3[split:])


def regression_errors_mm(regressor_JV: np.ndarray, verts_NV3: np.ndarray, joints_NJ3: np.ndarray) -> np.ndarray:
    """(N, J) distances between regressed and true joints, millimetres."""
    regressed_NJ3 = np.einsum("jv,nvc->njc", regressor_JV, verts_NV3)
    return 1000.0 * np.linalg.norm(regressed_NJ3 - joints_NJ3, axis=-1)


def extra_joint_targets(model: anny.Anny, template_V3: np.ndarray, wrists_23: np.ndarray) -> dict[str, np.ndarray]:
    """Positions (3,) of smplx's 21 extra surface joints on the full mesh's T-pose template.

    Face and feet landmarks come from Anny's COCO keypoint regressor; a finger tip is the vertex of the
    finger's distal bone (by largest skinning weight) farthest from the wrist.

    Args:
        template_V3: (V, 3) the full-resolution T-pose template, metres.
        wrists_23: (2, 3) the left and right wrist joints of that template.
    """
    coco = KeypointsRegressor.coco(model)
    keypoints_K3 = coco({"vertices": torch.from_numpy(template_V3)[None]})[0].numpy()
    targets = {name: keypoints_K3[coco.labels.index(label)] for name, label in COCO_EXTRA_JOINTS.items()}
    dominant_V = model.vertex_bone_indices.gather(1, model.vertex_bone_weights.argmax(1, keepdim=True))[:, 0]
    for name, bone in FINGER_TIP_BONES.items():
        finger_verts = np.flatnonzero(dominant_V.numpy() == model.bone_labels.index(bone))
        wrist_3 = wrists_23[0] if name.startswith("l") else wrists_23[1]
        distances = np.linalg.norm(template_V3[finger_verts] - wrist_3, axis=1)
        targets[name] = template_V3[finger_verts[np.argmax(distances)]]
    return {name: targets[name] for name in EXTRA_JOINT_NAMES}


def nearest_vertex_ids(template_V3: np.ndarray, targets: dict[str, np.ndarray]) -> dict[str, int]:
    """The vertex of ``template_V3`` nearest to each target point."""
    return {name: int(np.argmin(np.linalg.norm(template_V3 - point, axis=1))) for name, point in targets.items()}


def h36m_regressor(convex_JV: np.ndarray, template_V3: np.ndarray, *, nose_vertex: int) -> np.ndarray:
    """(17, V) a Human3.6M-style evaluation regressor, nonnegative with rows summing to 1.

    It is applied to posed meshes, so it is built from the convex SMPL-joint rows ``convex_JV`` (J, V):
    limbs and pelvis reuse them; the thorax is the mean of the neck and collar joints (the
    base of the neck, between the shoulders); the spine is midway between pelvis and thorax; neck/nose is
    the nose vertex; the head top averages the skull vertices within ``HEAD_TOP_RADIUS_M`` of the highest
    vertex near the midline.
    """
    rows_17V = np.zeros((NUM_H36M_JOINTS, template_V3.shape[0]))
    for row, name in H36M_FROM_SMPL.items():
        rows_17V[row] = convex_JV[JOINT[name]]
    rows_17V[H36M_THORAX] = convex_JV[[JOINT["neck"], JOINT["left_collar"], JOINT["right_collar"]]].mean(0)
    rows_17V[H36M_SPINE] = 0.5 * (rows_17V[0] + rows_17V[H36M_THORAX])
    rows_17V[H36M_NECK_NOSE, nose_vertex] = 1.0
    midline = np.flatnonzero(np.abs(template_V3[:, 0]) < 0.01)
    top_3 = template_V3[midline[np.argmax(template_V3[midline, 1])]]
    skull = np.flatnonzero(np.linalg.norm(template_V3 - top_3, axis=1) <= HEAD_TOP_RADIUS_M)
    rows_17V[H36M_HEAD_TOP, skull] = 1.0 / len(skull)
    return rows_17V


def texture_layout(model: anny.Anny) -> dict[str, np.ndarray]:
    """Anny's UV layout as in an OBJ file, or nothing if the topology has none.

    UVs are per face corner, not per vertex: ~1.2k vertices lie on seams and carry 2-4 UVs, so a renderer
    that wants per-vertex UVs must split the vertices along ``ft``. Returns vt (T, 2) and ft (F, 3).
    """
    if model.texture_coordinates is None:
        return {}
    return {
        "vt": model.texture_coordinates.numpy().astype(np.float32),
        "ft": model.face_texture_coordinate_indices.numpy().astype(np.int32),
    }


def bake_topology(
    model: anny.Anny,
    phenotypes_N6: torch.Tensor,
    *,
    betas_NK: np.ndarray | None,
    targets: dict[str, np.ndarray] | None,
    num_betas: int,
) -> tuple[dict[str, np.ndarray], ShapeSpace, dict[str, float | str]]:
    """Bake one Anny model (one topology) into SMPL-layout arrays (all but the metadata).

    With ``betas_NK`` (the full mesh's sample betas) the shape basis reproduces the same samples from the
    same betas; without, it is this mesh's PCA. With ``targets`` (points on the full mesh) the extra-joint
    vertices are the nearest ones; without, they are found on this mesh.
    """
    faces_F3 = model.faces.numpy()
    rest_verts_NV3, heads_NBn3 = rest_shapes(model, phenotypes_N6)
    joint_bones = [model.bone_labels.index(bone) for bone in SMPL_JOINT_BONES.values()]
    weights_VJ = merge_skinning_weights(model)
    rotmats_NJ33 = tpose_rotations(heads_NBn3[:, joint_bones])
    verts_NV3, joints_NJ3 = pose_with_lbs(
        rest_verts_NV3, joints_NJ3=heads_NBn3[:, joint_bones], rotmats_NJ33=rotmats_NJ33, weights_VJ=weights_VJ
    )
    if betas_NK is None:
        space = fit_shape_space(verts_NV3, faces_F3=faces_F3, num_betas=num_betas)
    else:
        space = shape_space_for_betas(verts_NV3, betas_NK)
    num_verts = verts_NV3.shape[1]
    fit_accurate = functools.partial(
        fit_joint_regressor, num_neighbours=max(128, num_verts // 16), ridge=REGRESSOR_RIDGE
    )
    fit_convex = functools.partial(fit_convex_joint_regressor, num_neighbours=max(64, num_verts // 32))
    heldout_NJ = holdout_errors_mm(fit_accurate, verts_NV3, joints_NJ3)
    convex_heldout_NJ = holdout_errors_mm(fit_convex, verts_NV3, joints_NJ3)
    regressor_JV = fit_accurate(verts_NV3, joints_NJ3)
    convex_JV = fit_convex(verts_NV3, joints_NJ3)
    if targets is None:
        wrists_23 = joints_NJ3[:, [JOINT["left_wrist"], JOINT["right_wrist"]]].mean(axis=0)
        targets = extra_joint_targets(model, space.template_V3, wrists_23)
    vertex_ids = nearest_vertex_ids(space.template_V3, targets)
    kintree_table = np.array([[KINTREE_ROOT_PARENT, *SMPL_PARENTS[1:]], list(range(len(SMPL_PARENTS)))])
    arrays = {
        "v_template": space.template_V3.astype(np.float32),
        "shapedirs": space.shapedirs_V3K.astype(np.float32),
        "posedirs": np.zeros((len(space.template_V3), 3, NUM_POSE_BASIS), dtype=np.float32),
        "J_regressor": regressor_JV.astype(np.float32),
        "J_regressor_h36m": h36m_regressor(
            convex_JV, space.template_V3, nose_vertex=vertex_ids["nose"]
        ).astype(np.float32),
        "weights": weights_VJ.astype(np.float32),
        "kintree_table": kintree_table.astype(np.int64),
        "f": faces_F3.astype(np.int32),
        **{f"vertex_ids_{name}": np.array(vid, dtype=np.int64) for name, vid in vertex_ids.items()},
        **texture_layout(model),
    }
    shoulder_trace_N = np.trace(rotmats_NJ33[:, JOINT["left_shoulder"]], axis1=1, axis2=2)
    stats = {
        "joint_regressor": f"local affine least squares, ridge {REGRESSOR_RIDGE}, "
        f"{fit_accurate.keywords['num_neighbours']} nearest vertices per joint",
        "joint_regressor_heldout_error_mm_mean": float(heldout_NJ.mean()),
        "joint_regressor_heldout_error_mm_max": float(heldout_NJ.max()),
        "h36m_regressor": f"convex (nonnegative) on {fit_convex.keywords['num_neighbours']} nearest vertices",
        "convex_regressor_heldout_error_mm_mean": float(convex_heldout_NJ.mean()),
        "upper_arm_raise_deg_mean": float(np.degrees(np.arccos((shoulder_trace_N - 1.0) / 2.0)).mean()),
    }
    return arrays, space, stats


def beta_heights(space: ShapeSpace, beta: int, values: tuple[float, ...]) -> list[float]:
    """Template heights (m) with one beta set to each value and the others at 0."""
    return [float(np.ptp((space.template_V3 + value * space.shapedirs_V3K[..., beta])[:, 1])) for value in values]


def bake(out_dir: Path, sampling: Sampling, *, num_betas: int = 10) -> None:
    """Bake both topologies into ``out_dir`` (``OUTPUT_FILES``)."""
    started = time.perf_counter()
    full_model = load_anny(FULL_TOPOLOGY)
    phenotypes_N6 = sample_phenotypes(full_model, sampling)
    full_arrays, full_space, full_stats = bake_topology(
        full_model, phenotypes_N6, betas_NK=None, targets=None, num_betas=num_betas
    )
    targets = {name: full_arrays["v_template"][int(full_arrays[f"vertex_ids_{name}"])].astype(np.float64)
               for name in EXTRA_JOINT_NAMES}
    low_arrays, low_space, low_stats = bake_topology(
        load_anny(LOWRES_TOPOLOGY),
        phenotypes_N6,
        betas_NK=full_space.betas_NK,
        targets=targets,
        num_betas=num_betas,
    )
    sample_heights_N = mesh_heights(rest_shapes(full_model, phenotypes_N6)[0])
    sweep = (-2.0, -1.0, 0.0, 1.0, 2.0)
    common = {
        "tool": "tools/bake_default_body.py",
        "anny_version": anny.__version__,
        "smplx_version": importlib.metadata.version("smplx"),
        "rig": "anny (default)",
        "phenotype_distribution": (
            "anny.shape_distribution.SimpleShapeDistribution (WHO-calibrated), morphological age uniform "
            "in age_range_years, samples outside height_range_m redrawn"
        ),
        "phenotype_labels": list(full_model.phenotype_labels),
        "age_range_years": list(sampling.age_range_years),
        "height_range_m": list(sampling.height_range_m),
        "num_samples": sampling.num_samples,
        "seed": sampling.seed,
        "sample_height_m_percentiles_0_5_50_95_100": np.percentile(sample_heights_N, [0, 5, 50, 95, 100])
        .round(3)
        .tolist(),
        "template": (
            "mean T-pose mesh of the samples (not Anny's all-0.5 phenotype, a ~13-year-old); "
            "mean phenotype sliders " + json.dumps(dict(zip(full_model.phenotype_labels,
                                                            phenotypes_N6.mean(0).round(decimals=3).tolist())))
        ),
        "rest_pose": "T-pose: Anny's A-pose arms (upper arm, forearm, hand) straightened along +-x by LBS",
        "frame": "y up, facing +z, subject's left +x, metres (Anny z-up/-y rotated by [[1,0,0],[0,0,1],[0,-1,0]])",
        "posedirs": "zeros (no pose correctives)",
        "extra_joints": "face/feet from Anny's COCO keypoint regressor, finger tips from distal-bone vertices; "
        "nearest vertex on this mesh to the full mesh's points",
        "h36m_rows": "SPIN order as read by H36M_TO_J14: pelvis, lhip, lknee, lankle, rhip, rknee, rankle, "
        "spine, thorax, neck/nose, head top, lshoulder, lelbow, lwrist, rshoulder, relbow, rwrist",
    }
    print(json.dumps(common, indent=1))
    for topology, arrays, space, stats in ((FULL_TOPOLOGY, full_arrays, full_space, full_stats),
                                           (LOWRES_TOPOLOGY, low_arrays, low_space, low_stats)):
        specific = {
            "topology": topology,
            "num_vertices": int(arrays["v_template"].shape[0]),
            "num_faces": int(arrays["f"].shape[0]),
            "shape_basis": "PCA of this mesh" if topology == FULL_TOPOLOGY
            else f"least-squares fit to the '{FULL_TOPOLOGY}' mesh's sample betas (same betas, same person)",
            "variance_explained_per_beta": space.explained_K.round(6).tolist(),
            "variance_explained_total": round(float(space.explained_K.sum()), 6),
            "template_height_m": round(float(np.ptp(space.template_V3[:, 1])), 4),
            "beta0_heights_m_at_-2_-1_0_1_2": np.round(beta_heights(space, 0, sweep), 4).tolist(),
            "beta1_heights_m_at_-2_-1_0_1_2": np.round(beta_heights(space, 1, sweep), 4).tolist(),
            "uv": "vt (T, 2) and ft (F, 3), per face corner as in OBJ" if "vt" in arrays else "none",
            **{key: round(value, 4) if isinstance(value, float) else value for key, value in stats.items()},
        }
        path = out_dir / OUTPUT_FILES[topology]
        info = json.dumps({**common, **specific})
        np.savez_compressed(path, **arrays, bake_info=np.array(info), gender=np.array("neutral"))
        print(f"{path}: {path.stat().st_size / 1e6:.2f} MB")
        print(json.dumps(specific, indent=1))
    print(f"baked in {time.perf_counter() - started:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, required=True, help="where to write the .npz files")
    parser.add_argument("--num-samples", type=int, default=300, help="phenotype samples behind the shape space")
    parser.add_argument("--seed", type=int, default=0, help="seed of the phenotype sampling")
    args = parser.parse_args()
    if args.num_samples < 20:
        raise ValueError(f"--num-samples must be at least 20 to fit 10 betas, got {args.num_samples}")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    bake(args.out_dir, Sampling(num_samples=args.num_samples, seed=args.seed))


if __name__ == "__main__":
    main()
