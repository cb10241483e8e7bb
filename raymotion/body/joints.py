"""Joint names and named indices; no bare joint integers elsewhere in raymotion.

Three joint sets are used:
- ``SMPL_JOINT_NAMES``: the 24 kinematic joints of SMPL (and of the embedded body, baked into the same
  layout). Their order is fixed by the SMPL file format's ``kintree_table``.
- ``H36M_JOINT_NAMES``: the 17 joints of a Human3.6M-style regressor (SPIN's ``J_regressor_h36m.npy``).
- ``EVAL_JOINT_NAMES``: the 14 LSP-style joints on which MPJPE / PA-MPJPE are reported (SPIN, VIBE, and the
  paper), taken from the 17 H36M joints with ``H36M_TO_EVAL14`` (SPIN's ``H36M_TO_J14``).
"""

from __future__ import annotations

SMPL_JOINT_NAMES: tuple[str, ...] = (
    "pelvis",
    "left_hip",
    "right_hip",
    "spine1",
    "left_knee",
    "right_knee",
    "spine2",
    "left_ankle",
    "right_ankle",
    "spine3",
    "left_foot",
    "right_foot",
    "neck",
    "left_collar",
    "right_collar",
    "head",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_hand",
    "right_hand",
)
NUM_SMPL_JOINTS = len(SMPL_JOINT_NAMES)
SMPL_JOINT = {name: i for i, name in enumerate(SMPL_JOINT_NAMES)}

# SMPL's kinematic tree: parent of each joint (-1 for the root), as in every SMPL file's kintree_table.
SMPL_PARENTS: tuple[int, ...] = (-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21)

# Axis-angle pose is (24, 3): the root's global orientation followed by 23 body joints (SMPL's body_pose).
NUM_BODY_JOINTS = NUM_SMPL_JOINTS - 1

# Row order of SPIN's J_regressor_h36m.npy as SPIN's H36M_TO_J14 reads it (constants.py names index 6
# "Right Ankle" and 1 "Left Hip": the legs are listed left first, the arms left first too).
H36M_JOINT_NAMES: tuple[str, ...] = (
    "pelvis",
    "left_hip",
    "left_knee",
    "left_ankle",
    "right_hip",
    "right_knee",
    "right_ankle",
    "spine",
    "thorax",
    "neck_nose",
    "head_top",
    "left_shoulder",
    "left_elbow",
    "left_wrist",
    "right_shoulder",
    "right_elbow",
    "right_wrist",
)
NUM_H36M_JOINTS = len(H36M_JOINT_NAMES)
H36M_JOINT = {name: i for i, name in enumerate(H36M_JOINT_NAMES)}

EVAL_JOINT_NAMES: tuple[str, ...] = (
    "right_ankle",
    "right_knee",
    "right_hip",
    "left_hip",
    "left_knee",
    "left_ankle",
    "right_wrist",
    "right_elbow",
    "right_shoulder",
    "left_shoulder",
    "left_elbow",
    "left_wrist",
    "neck",
    "head_top",
)
NUM_EVAL_JOINTS = len(EVAL_JOINT_NAMES)
EVAL_JOINT = {name: i for i, name in enumerate(EVAL_JOINT_NAMES)}

# SPIN's H36M_TO_J14 (constants.py): the 14 evaluation joints from the 17 H36M regressor joints, by name.
# "neck" is the H36M thorax joint (8), as in SPIN; every other evaluation joint has its H36M namesake.
EVAL_FROM_H36M_NAME = {"neck": "thorax"}
H36M_TO_EVAL14: tuple[int, ...] = tuple(H36M_JOINT[EVAL_FROM_H36M_NAME.get(name, name)] for name in EVAL_JOINT_NAMES)

# Pelvis for root-relative metrics on the 14 joints: the mid-point of the two hips (SPIN, METHOD.md 6).
EVAL_HIP_PAIR: tuple[int, int] = (EVAL_JOINT["left_hip"], EVAL_JOINT["right_hip"])

# smplx's VertexJointSelector appends joints at these surface vertices (face, feet, finger tips).
# Their vertex ids depend on the mesh, so each body file carries its own (see body_model.py).
EXTRA_JOINT_NAMES: tuple[str, ...] = (
    "nose",
    "reye",
    "leye",
    "rear",
    "lear",
    "LBigToe",
    "LSmallToe",
    "LHeel",
    "RBigToe",
    "RSmallToe",
    "RHeel",
    "lthumb",
    "lindex",
    "lmiddle",
    "lring",
    "lpinky",
    "rthumb",
    "rindex",
    "rmiddle",
    "rring",
    "rpinky",
)


def flip_permutation(names: tuple[str, ...]) -> tuple[int, ...]:
    """Index map that swaps every ``left_*`` joint with its ``right_*`` twin (others stay)."""

    def mirror(name: str) -> str:
        if name.startswith("left_"):
            return "right_" + name[len("left_"):]
        if name.startswith("right_"):
            return "left_" + name[len("right_"):]
        return name

    index = {name: i for i, name in enumerate(names)}
    return tuple(index[mirror(name)] for name in names)


SMPL_FLIP_PERM = flip_permutation(SMPL_JOINT_NAMES)
"""Left/right swap of the 24 SMPL joints."""
EVAL_FLIP_PERM = flip_permutation(EVAL_JOINT_NAMES)
"""Left/right swap of the 14 evaluation joints."""


# ----------------------------------------------------------------------------- the field's joint sets
# Importers (raymotion/importers/) map a dataset's joints onto SMPL_JOINT_NAMES by name; a joint with no
# namesake gets confidence 0. The datasets' hips and shoulders are annotated surface-ish locations, close to but
# not SMPL's joint centres: a known approximation (SPIN instead regresses its 24 "GT" joints from the mesh).

SPIN_GT_JOINT_NAMES: tuple[str, ...] = (
    "right_ankle", "right_knee", "right_hip", "left_hip", "left_knee", "left_ankle", "right_wrist",
    "right_elbow", "right_shoulder", "left_shoulder", "left_elbow", "left_wrist", "neck", "head_top",
    "pelvis", "thorax", "spine", "jaw", "head_h36m", "nose", "left_eye", "right_eye", "left_ear", "right_ear",
)
"""SPIN's 24 "GT" joints (``constants.JOINT_NAMES[25:]``), the joint axis of its npz files' ``part`` and ``S``:
LSP's 14 (whose first 14 are ``EVAL_JOINT_NAMES``: SPIN's J24_TO_J14), MPII's pelvis and thorax, H36M's spine,
jaw and head, and the COCO face joints."""

COCO18_JOINT_NAMES: tuple[str, ...] = (
    "nose", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder", "left_elbow", "left_wrist",
    "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle", "right_eye", "left_eye",
    "right_ear", "left_ear",
)
"""OpenPose's COCO-18 joints: 3DPW's ``poses2d`` joint axis (VIBE calls it 'pw3d')."""

COCO18_BODY_JOINTS: tuple[int, ...] = tuple(range(COCO18_JOINT_NAMES.index("right_shoulder"),
                                                  COCO18_JOINT_NAMES.index("left_ankle") + 1))
"""The 12 limb joints of COCO-18 (shoulders to ankles) that the VIBE/TCMR 3DPW protocol counts."""


def joint_map(source: tuple[str, ...], target: tuple[str, ...]) -> tuple[int, ...]:
    """For each ``target`` joint, the index of its namesake in ``source``, or -1 where ``source`` has none."""
    index = {name: i for i, name in enumerate(source)}
    return tuple(index.get(name, -1) for name in target)


SMPL_FROM_SPIN_GT = joint_map(SPIN_GT_JOINT_NAMES, SMPL_JOINT_NAMES)
"""SPIN GT joint of each SMPL joint (-1: none): the limbs, neck and pelvis."""
EVAL_FROM_SPIN_GT = joint_map(SPIN_GT_JOINT_NAMES, EVAL_JOINT_NAMES)
"""SPIN GT joint of each evaluation joint: the first 14 (SPIN's J24_TO_J14)."""
SMPL_FROM_COCO18 = joint_map(COCO18_JOINT_NAMES, SMPL_JOINT_NAMES)
"""COCO-18 joint of each SMPL joint (-1: none)."""
