"""The single-frame regressor (HMR/SPIN style): crop -> backbone -> pooled feature -> iterative
error feedback -> SMPL rotations (6D), shape coefficients and a weak-perspective camera.

Legend: B batch, H, W crop height and width (square crops in practice), D pooled-feature width
(2048 for ResNet-50 and timm's HRNet-W32, 512 for ResNet-18, 256 for small_cnn), J = 24 SMPL joints,
K shape coefficients, P = J * 6 + K + 3 packed parameters [rot6d, betas, cam]; the "2" of context_B2P is
the 2 context frames (NUM_CONTEXT_FRAMES).
Trailing digits are literal sizes.

Input images are (B, 3, H, W) float RGB, ImageNet-normalised by the caller:
(rgb in [0, 1] - IMAGENET_MEAN) / IMAGENET_STD per channel (``raymotion.data.crops``: the statistics the
torchvision and timm backbones were trained with; SPIN and the paper's code normalise the same way).

The camera is weak-perspective in normalised crop coordinates: a body point X (metres, camera axes:
x right, y down, z forward) lands at n = s * X_xy + (tx, ty), n in [-1, 1] across the crop
(raymotion.geometry.weak_perspective_project turns that into pixels).

Nothing is ever downloaded: backbones start from random weights or from a local state-dict file.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torchvision
from torch import Tensor, nn

from raymotion.body.joints import NUM_SMPL_JOINTS
from raymotion.geometry import rot6d_to_rotmat, rotmat_to_rot6d

ROT6D_DIM = 6
CAM_DIM = 3  # (s, tx, ty)
# SPIN's regressor (Kolotouros et al. 2019, models/hmr.py): two 1024-wide FC layers with dropout 0.5,
# 3 iterations, last layers xavier-initialised with gain 0.01 so the first predictions stay near the mean.
HIDDEN_DIM = 1024
DROPOUT = 0.5
DECODER_INIT_GAIN = 0.01
# Width of the FiLM conditioning MLP (METHOD.md 5; the paper gives no size).
FILM_HIDDEN_DIM = 512
NUM_CONTEXT_FRAMES = 2  # METHOD.md 5: the previous 2 frames condition the current one.
# SPIN's smpl_mean_params.npz camera: scale 0.9, no offset.
DEFAULT_MEAN_CAM = (0.9, 0.0, 0.0)


def num_packed_params(num_betas: int) -> int:
    """P = 24 * 6 + K + 3: the width of the packed parameter vector [rot6d, betas, cam]."""
    return NUM_SMPL_JOINTS * ROT6D_DIM + num_betas + CAM_DIM


@dataclass(frozen=True, slots=True)
class RegressorOutput:
    """Predictions for a batch of crops.

    rotmats_BJ33: (B, 24, 3, 3) SMPL joint rotations (relative to the parent; joint 0 is the global
        orientation in the camera frame, y down), from rot6d_BJ6 by Gram-Schmidt.
    rot6d_BJ6: (B, 24, 6) the raw 6D predictions (SPIN layout, raymotion.geometry.rot6d_to_rotmat).
    betas_BK: (B, K) shape coefficients.
    cam_B3: (B, 3) weak-perspective (s, tx, ty): normalised crop coords n = s * X_xy + (tx, ty).
    feature_BD: (B, D) the pooled feature the decoder read (after FiLM when the regressor has it).
    """

    rotmats_BJ33: Tensor
    rot6d_BJ6: Tensor
    betas_BK: Tensor
    cam_B3: Tensor
    feature_BD: Tensor

    def packed_BP(self) -> Tensor:
        """(B, P) [rot6d (24 * 6), betas (K), cam (3)], the layout the decoder and FiLM read."""
        return torch.cat((self.rot6d_BJ6.flatten(1), self.betas_BK, self.cam_B3), dim=1)


def film_context(older: RegressorOutput, newer: RegressorOutput) -> Tensor:
    """Pack the predictions of the 2 previous frames as FiLM context, detached.

    Args:
        older: predictions for frame t - 2.
        newer: predictions for frame t - 1.

    Returns:
        context_B2P: (B, 2, P), oldest first, no gradient.
    """
    return torch.stack((older.packed_BP(), newer.packed_BP()), dim=1).detach()


def push_context(context_B2P: Tensor, newest: RegressorOutput) -> Tensor:
    """Slide the FiLM context one frame on: drop the oldest prediction, append ``newest`` (detached).

    Args:
        context_B2P: (B, 2, P) the context the ``newest`` predictions were made with, oldest first.
        newest: predictions for the frame after the context's newest.

    Returns:
        (B, 2, P) the context of the next frame: [context_B2P[:, 1], newest], no gradient.
    """
    return torch.cat((context_B2P[:, 1:], newest.packed_BP().detach()[:, None]), dim=1).detach()


def start_context(model: nn.Module, images_B3HW: Tensor) -> Tensor:
    """The FiLM context of a sequence's first frame: its own context-free prediction, twice (no gradient).

    The one start rule of the FiLM variant (METHOD.md 5 gives none): before a clip's first frame there are
    no predictions to condition on, so the history is filled with what the regressor says without FiLM
    (``model(images, context_free=True)``, the base model's prediction when FiLM is still the identity).
    Evaluation starts every clip with it, the refinement step every 3-frame window and every labelled frame.

    Args:
        model: a regressor (possibly wrapped for DDP or autocast) that accepts ``context_free=True``.
        images_B3HW: (B, 3, H, W) the first frames, ImageNet-normalised.

    Returns:
        (B, 2, P) context, no gradient.
    """
    with torch.no_grad():
        first = model(images_B3HW, context_free=True)
    return film_context(first, first)


@dataclass(frozen=True, slots=True)
class MeanParams:
    """The parameters the iterative regressor starts from (SPIN's smpl_mean_params.npz content).

    rot6d_J6: (24, 6) joint rotations, 6D (SPIN layout).
    betas_K: (K,) shape coefficients.
    cam_3: (3,) weak-perspective (s, tx, ty).
    """

    rot6d_J6: Tensor
    betas_K: Tensor
    cam_3: Tensor

    def __post_init__(self) -> None:
        if tuple(self.rot6d_J6.shape) != (NUM_SMPL_JOINTS, ROT6D_DIM):
            raise ValueError(f"mean params rot6d_J6 must be ({NUM_SMPL_JOINTS}, 6), got {tuple(self.rot6d_J6.shape)}")
        if self.betas_K.ndim != 1:
            raise ValueError(f"mean params betas_K must be 1-D (K,), got {tuple(self.betas_K.shape)}")
        if tuple(self.cam_3.shape) != (CAM_DIM,):
            raise ValueError(f"mean params cam_3 must be (3,), got {tuple(self.cam_3.shape)}")

    @property
    def num_betas(self) -> int:
        return self.betas_K.shape[0]

    def packed_P(self) -> Tensor:
        """(P,) [rot6d, betas, cam], float32."""
        return torch.cat((self.rot6d_J6.flatten(), self.betas_K, self.cam_3)).float()

    @classmethod
    def default(cls, *, num_betas: int = 10) -> MeanParams:
        """Identity joint rotations, zero betas, cam (0.9, 0, 0); global orientation 180 deg about x.

        SMPL bodies are modelled y up, but the camera frame has y down (image rows grow downwards), so
        an upright person seen by the camera has its root rotated by pi about x; SPIN's mean pose
        starts from the same upright orientation. The remaining joints start at the rest pose here,
        whereas SPIN's file holds the mean of its training poses; pass that file to `from_npz`.
        """
        rotmats_J33 = torch.eye(3).repeat(NUM_SMPL_JOINTS, 1, 1)
        rotmats_J33[0] = torch.diag(torch.tensor([1.0, -1.0, -1.0]))  # R_x(pi)
        return cls(
            rot6d_J6=rotmat_to_rot6d(rotmats_J33),
            betas_K=torch.zeros(num_betas),
            cam_3=torch.tensor(DEFAULT_MEAN_CAM),
        )

    @classmethod
    def from_npz(cls, path: str | Path) -> MeanParams:
        """Read keys pose_6d (144,), betas (K,), cam (3,). (SPIN's file calls them pose, shape, cam.)"""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"mean-parameter file not found: {path}")
        with np.load(path) as data:
            missing = [key for key in ("pose_6d", "betas", "cam") if key not in data]
            if missing:
                raise ValueError(f"mean-parameter file {path} lacks keys {missing}; it has {sorted(data.keys())}")
            pose_6d = data["pose_6d"]
            if pose_6d.size != NUM_SMPL_JOINTS * ROT6D_DIM:
                raise ValueError(f"{path}: pose_6d must hold {NUM_SMPL_JOINTS * ROT6D_DIM} values, got {pose_6d.shape}")
            return cls(
                rot6d_J6=torch.from_numpy(pose_6d.astype(np.float32)).reshape(NUM_SMPL_JOINTS, ROT6D_DIM),
                betas_K=torch.from_numpy(data["betas"].astype(np.float32)).reshape(-1),
                cam_3=torch.from_numpy(data["cam"].astype(np.float32)).reshape(-1),
            )

    def to_npz(self, path: str | Path) -> None:
        """Write keys pose_6d (144,), betas (K,), cam (3,) as float32."""
        np.savez(
            path,
            pose_6d=self.rot6d_J6.detach().cpu().reshape(-1).numpy().astype(np.float32),
            betas=self.betas_K.detach().cpu().numpy().astype(np.float32),
            cam=self.cam_3.detach().cpu().numpy().astype(np.float32),
        )


# ---------------------------------------------------------------- backbones
# Each builder returns (module mapping (B, 3, H, W) -> pooled (B, D), D, classifier key prefixes).
# The prefixes name the ImageNet classifier a checkpoint of that architecture carries and the backbone
# does not have (it is removed); exactly those keys are dropped when loading a weights file.


def _resnet(name: str, feature_dim: int) -> Callable[[], tuple[nn.Module, int, tuple[str, ...]]]:
    def build() -> tuple[nn.Module, int, tuple[str, ...]]:
        model = getattr(torchvision.models, name)(weights=None)
        model.fc = nn.Identity()  # keeps torchvision's global average pool + flatten
        return model, feature_dim, ("fc.",)

    return build


def _hrnet_w32() -> tuple[nn.Module, int, tuple[str, ...]]:
    # num_classes=0 keeps timm's classification neck (incre blocks + 1x1 conv to 2048) and its
    # global average pool, so the output is a pooled (B, 2048) feature.
    import timm  # only this backbone needs it (tools/gpu_check.py runs where timm is not installed)

    model = timm.create_model("hrnet_w32", pretrained=False, num_classes=0)
    return model, model.num_features, ("classifier.",)


SMALL_CNN_CHANNELS = (32, 64, 128, 256, 256)


def _small_cnn() -> tuple[nn.Module, int, tuple[str, ...]]:
    """5 x (3x3 conv stride 2, BN, ReLU), then global average pooling: for 64-128 px CPU experiments."""
    layers: list[nn.Module] = []
    in_channels = 3
    for out_channels in SMALL_CNN_CHANNELS:
        layers += [
            nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        ]
        in_channels = out_channels
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(1)]
    return nn.Sequential(*layers), in_channels, ()


BACKBONES: dict[str, Callable[[], tuple[nn.Module, int, tuple[str, ...]]]] = {
    "resnet50": _resnet("resnet50", 2048),
    "resnet18": _resnet("resnet18", 512),
    "hrnet_w32": _hrnet_w32,
    "small_cnn": _small_cnn,
}


def load_backbone_weights(backbone: nn.Module, path: str | Path, *, drop_prefixes: tuple[str, ...] = ()) -> None:
    """Load a state dict from a local file into `backbone` (torch.load with weights_only=True).

    Keys starting with one of `drop_prefixes` (the classifier of an ImageNet checkpoint) are dropped;
    any other missing or unexpected key raises ValueError naming the first few.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"backbone weights file not found: {path} (raymotion never downloads weights; "
            "save a state dict of the backbone there, e.g. torchvision's ImageNet checkpoint)"
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = {k: v for k, v in state.items() if not k.startswith(drop_prefixes)}
    result = backbone.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(
            f"backbone weights file {path} does not match the backbone: "
            f"{len(result.missing_keys)} missing keys (first: {result.missing_keys[:5]}), "
            f"{len(result.unexpected_keys)} unexpected keys (first: {result.unexpected_keys[:5]})"
        )


# ---------------------------------------------------------------- modules


class FeatureFiLM(nn.Module):
    """Temporal context (METHOD.md 5): feature * (1 + gamma) + beta, (gamma, beta) = MLP(context).

    The context is the detached predictions of the previous 2 frames in the regressor's own packed
    layout, 2 x (144 + K + 3) with rotations in 6D, instead of the paper's 2 x 85 with axis-angle: 6D is
    continuous (axis-angle jumps at pi) and is what the regressor predicts, so no conversion is needed.
    The last layer starts at zero, so the module starts as the identity: a FiLM regressor loaded from a base
    without FiLM weights (``train.components.load_base_weights``) predicts exactly as the base.

    How the context is formed (one rule for training and evaluation): ``start_context`` and
    ``push_context`` below; the refinement step reads 3-frame windows with it (``train.step.video_params``),
    evaluation whole clips (``eval.evaluate.predict_in_context``).
    """

    def __init__(self, *, num_params: int, feature_dim: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(NUM_CONTEXT_FRAMES * num_params, FILM_HIDDEN_DIM),
            nn.ReLU(inplace=True),
            nn.Linear(FILM_HIDDEN_DIM, 2 * feature_dim),
        )
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, feature_BD: Tensor, context_B2P: Tensor) -> Tensor:
        # Detached by definition (METHOD.md 5): no gradient flows into the previous frames' predictions.
        gamma_BD, beta_BD = self.mlp(context_B2P.detach().flatten(1)).chunk(2, dim=1)
        return feature_BD * (1.0 + gamma_BD) + beta_BD


class Regressor(nn.Module):
    """Backbone -> pooled feature -> iterative error feedback from the mean parameters (HMR/SPIN).

    Each iteration reads concat(feature, current params) and adds a predicted correction:
    FC(1024) -> ReLU -> Dropout(0.5) -> FC(1024) -> ReLU -> Dropout(0.5) -> three linear heads
    (pose 144, betas K, cam 3). The ReLUs follow HMR (Kanazawa et al. 2018); SPIN's port drops them.
    As in SPIN the heads' weights are xavier-uniform with gain 0.01 and their biases keep PyTorch's
    default init, so the first predictions are near, not exactly at, the mean parameters.
    """

    def __init__(
        self,
        backbone: nn.Module,
        *,
        feature_dim: int,
        mean_params: MeanParams,
        iterations: int = 3,
        film: bool = False,
    ) -> None:
        super().__init__()
        if iterations < 1:
            raise ValueError(f"iterations must be >= 1, got {iterations}")
        self.backbone = backbone
        self.iterations = iterations
        self.num_betas = mean_params.num_betas
        num_params = num_packed_params(self.num_betas)
        self.film = FeatureFiLM(num_params=num_params, feature_dim=feature_dim) if film else None
        self.mlp = nn.Sequential(
            nn.Linear(feature_dim + num_params, HIDDEN_DIM),
            nn.ReLU(inplace=True),
            nn.Dropout(DROPOUT),
            nn.Linear(HIDDEN_DIM, HIDDEN_DIM),
            nn.ReLU(inplace=True),
            nn.Dropout(DROPOUT),
        )
        self.head_pose = nn.Linear(HIDDEN_DIM, NUM_SMPL_JOINTS * ROT6D_DIM)
        self.head_betas = nn.Linear(HIDDEN_DIM, self.num_betas)
        self.head_cam = nn.Linear(HIDDEN_DIM, CAM_DIM)
        for head in (self.head_pose, self.head_betas, self.head_cam):
            nn.init.xavier_uniform_(head.weight, gain=DECODER_INIT_GAIN)
        # Persistent buffers: a checkpoint carries the parameters its regressor starts from.
        self.register_buffer("mean_rot6d_J6", mean_params.rot6d_J6.float().clone())
        self.register_buffer("mean_betas_K", mean_params.betas_K.float().clone())
        self.register_buffer("mean_cam_3", mean_params.cam_3.float().clone())

    def forward(self, images_B3HW: Tensor, context_B2P: Tensor | None = None, *,
                context_free: bool = False) -> RegressorOutput:
        """Regress SMPL parameters and a camera from ImageNet-normalised crops.

        Args:
            images_B3HW: (B, 3, H, W) float RGB crops, ImageNet-normalised (see module docstring).
            context_B2P: (B, 2, P) previous-frame predictions (`film_context`, `push_context`); required
                when the regressor was built with film=True (unless context_free), refused otherwise.
            context_free: skip the FiLM module (the pooled feature goes to the decoder unmodulated): the
                prediction ``start_context`` fills a clip's history with. Must be asked for explicitly, so
                that a FiLM regressor called without context fails instead of silently ignoring FiLM.

        Returns:
            RegressorOutput for the B crops.
        """
        if images_B3HW.ndim != 4 or images_B3HW.shape[1] != 3:
            raise ValueError(f"images_B3HW must be (B, 3, H, W), got {tuple(images_B3HW.shape)}")
        batch = images_B3HW.shape[0]
        feature_BD = self.backbone(images_B3HW)
        if context_free:
            if context_B2P is not None:
                raise ValueError("context_B2P was given with context_free=True; pass one or the other")
        elif self.film is not None:
            expected = (batch, NUM_CONTEXT_FRAMES, num_packed_params(self.num_betas))
            if context_B2P is None or tuple(context_B2P.shape) != expected:
                got = None if context_B2P is None else tuple(context_B2P.shape)
                raise ValueError(f"a FiLM regressor needs context_B2P of shape {expected}, got {got}")
            feature_BD = self.film(feature_BD, context_B2P)
        elif context_B2P is not None:
            raise ValueError("context_B2P was given but the regressor was built with film=False")

        rot6d_BJ6 = self.mean_rot6d_J6.flatten().expand(batch, -1)
        betas_BK = self.mean_betas_K.expand(batch, -1)
        cam_B3 = self.mean_cam_3.expand(batch, -1)
        for _ in range(self.iterations):
            hidden = self.mlp(torch.cat((feature_BD, rot6d_BJ6, betas_BK, cam_B3), dim=1))
            rot6d_BJ6 = rot6d_BJ6 + self.head_pose(hidden)
            betas_BK = betas_BK + self.head_betas(hidden)
            cam_B3 = cam_B3 + self.head_cam(hidden)

        rot6d_BJ6 = rot6d_BJ6.reshape(batch, NUM_SMPL_JOINTS, ROT6D_DIM)
        return RegressorOutput(
            rotmats_BJ33=rot6d_to_rotmat(rot6d_BJ6),
            rot6d_BJ6=rot6d_BJ6,
            betas_BK=betas_BK,
            cam_B3=cam_B3,
            feature_BD=feature_BD,
        )


def build_regressor(
    *,
    backbone: str,
    num_betas: int = 10,
    mean_params: MeanParams,
    weights_path: str | Path | None = None,
    iterations: int = 3,
    film: bool = False,
) -> Regressor:
    """Build a regressor; the backbone starts random or from a local state-dict file (never downloaded).

    Args:
        backbone: one of BACKBONES ('resnet50', 'resnet18', 'hrnet_w32', 'small_cnn').
        num_betas: K; must match mean_params.
        mean_params: where the iterative regressor starts.
        weights_path: a state dict for the backbone alone (an ImageNet checkpoint's classifier keys,
            'fc.*' for ResNets and 'classifier.*' for HRNet, are dropped).
        iterations: error-feedback iterations (3 in SPIN).
        film: add the temporal-context FiLM module (METHOD.md 5).
    """
    if backbone not in BACKBONES:
        raise ValueError(f"unknown backbone {backbone!r}; choices: {sorted(BACKBONES)}")
    if mean_params.num_betas != num_betas:
        raise ValueError(f"num_betas={num_betas} but mean_params has {mean_params.num_betas} betas")
    module, feature_dim, classifier_prefixes = BACKBONES[backbone]()
    if weights_path is not None:
        load_backbone_weights(module, weights_path, drop_prefixes=classifier_prefixes)
    return Regressor(module, feature_dim=feature_dim, mean_params=mean_params, iterations=iterations, film=film)


# ---------------------------------------------------------------- BatchNorm freezing


def _keep_eval(module: nn.Module, args: tuple[Tensor, ...]) -> None:
    module.train(False)


def freeze_batchnorm(model: nn.Module) -> int:
    """Freeze every BatchNorm's statistics: eval-mode normalisation, no running-statistics updates.

    METHOD.md 4: refinement keeps the pretrained BN statistics. A forward pre-hook on each BatchNorm
    puts it back in eval mode before every call, so the freeze survives later model.train() calls
    (dropout elsewhere still follows train/eval). The affine weight and bias stay trainable. Call it
    after any module surgery that replaces BatchNorms (e.g. nn.SyncBatchNorm.convert_sync_batchnorm):
    new modules carry no hook. Calling it twice is harmless.

    Returns:
        The number of BatchNorm modules frozen (a warning is emitted when there are none).
    """
    num_frozen = 0
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()
            if _keep_eval not in module._forward_pre_hooks.values():
                module.register_forward_pre_hook(_keep_eval)
            num_frozen += 1
    if num_frozen == 0:
        warnings.warn(f"freeze_batchnorm: {type(model).__name__} has no BatchNorm layers; nothing frozen")
    return num_frozen
