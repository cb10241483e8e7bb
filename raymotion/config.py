"""The one typed config tree: every default lives here, and no other module parses config.

Flow: ``Config()`` holds the defaults; a YAML file and ``--set a.b=v`` items are *overrides*
(``load_config``), applied by ``apply_overrides`` and validated as a whole. Ray moves plain dicts,
so workers receive ``to_dict(cfg)`` and turn it back with ``Config.from_dict(d)`` on their first line.

Each field carries its help text in ``field(metadata={"help": ...})`` (and, where it has one, its
inclusive numeric ``range``), so ``describe()`` and error messages read it back. Choices are
``Literal`` types. Validation runs in every ``__post_init__``; a nested section does not know its
dotted prefix, so it raises ``ConfigError`` with its leaf key and ``from_dict`` prefixes it.

Adding a section: write its ``@dataclass(kw_only=True, slots=True)`` class (docstring, fields,
``__post_init__`` calling ``_validate_fields``), then add one ``name: XConfig = _section(XConfig)``
line to ``Config``.
"""

import dataclasses
import difflib
import functools
import os
import re
import tempfile
import types
import typing
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

T = TypeVar("T")
BadInput = Literal["fail", "skip"]
"""``data.bad_input``'s choices (raymotion.data.manifest.BAD_INPUT_POLICIES)."""


class ConfigError(ValueError):
    """A bad config value. ``key`` is the dotted path as the user types it (``body.gender``)."""

    def __init__(self, key: str, value: Any, expected: str) -> None:
        super().__init__(key, value, expected)  # keeps the error picklable (Ray moves exceptions)
        self.key, self.value, self.expected = key, value, expected

    def __str__(self) -> str:
        return (f"{self.key}={self.value!r} is invalid: {self.expected}. "
                f"Fix it in the config file or with --set {self.key}=<value>.")

    def under(self, prefix: str) -> "ConfigError":
        """The same error with ``prefix`` prepended to its key."""
        return ConfigError(_join(prefix, self.key), self.value, self.expected)


class UnknownKeyError(ValueError):
    """A key that is not in the config tree; ``key`` is its dotted path, the message lists the valid keys."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(key, message)  # picklable, like ConfigError
        self.key, self.message = key, message

    def __str__(self) -> str:
        return self.message


def _field(default: Any, doc: str, *, range: tuple[float | None, float | None] | None = None) -> Any:
    """A leaf field with its help text and optional inclusive (min, max) range; None = unbounded."""
    return field(default=default, metadata={"help": doc, "range": range})


def _section(cls: type) -> Any:
    """A section field; its help text is the section class docstring."""
    return field(default_factory=cls, metadata={"help": cls.__doc__, "range": None})


# ----------------------------------------------------------------------------- sections

@dataclass(kw_only=True, slots=True)
class BodyConfig:
    """Which parametric body model produces the mesh, and where its files are."""

    model: Literal["anny", "anny_lowres", "smpl"] = _field(
        "anny", "Body model: 'anny' = embedded full-resolution default body (no download); "
        "'anny_lowres' = embedded 1.2k-vertex body for tests; 'smpl' = your own SMPL files in body.smpl_dir.")
    smpl_dir: str = _field(
        "body_models/smpl", "Folder holding SMPL_NEUTRAL/MALE/FEMALE .pkl or .npz "
        "(the SPIN/MMHuman3D layout). Only used with body.model=smpl.")
    gender: Literal["neutral", "male", "female"] = _field(
        "neutral", "SMPL body gender. Only used with body.model=smpl.")
    h36m_regressor: str = _field(
        "../J_regressor_h36m.npy", "SPIN's 17-joint Human3.6M joint regressor (.npy); needed for evaluation "
        "joints with body.model=smpl. A relative path is relative to body.smpl_dir (the default is "
        "body_models/J_regressor_h36m.npy beside body_models/smpl/), never to the working directory; an "
        "absolute path is used as given.")
    num_betas: int = _field(10, "Number of shape coefficients (betas).", range=(1, 300))

    def __post_init__(self) -> None:
        _validate_fields(self)


@dataclass(kw_only=True, slots=True)
class RunConfig:
    """Where a run writes its outputs, and how it is seeded (where it runs: ``scaling``)."""

    output_dir: str = _field("runs", "Parent folder of run directories.")
    name: str = _field("default", "Run name, used as a folder name: letters, digits, '-', '_', '.'.")
    seed: int = _field(0, "Random seed for torch, numpy and Python.", range=(0, None))

    def __post_init__(self) -> None:
        _validate_fields(self)
        # Must start with a letter, digit or '_': rules out '.', '..' and names that look like flags.
        if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9._-]*", self.name):
            raise ConfigError("name", self.name, "expected a filesystem-safe name: letters, digits, "
                              "'-', '_', '.', not starting with '.' or '-'")


@dataclass(kw_only=True, slots=True)
class RenderConfig:
    """The picture of the body that `raymotion doctor` renders."""

    image_size: int = _field(512, "Width and height of the square image, in pixels.", range=(64, 4096))
    motion: Literal["walk", "tpose"] = _field("walk", "Pose to render: 'walk' (gait cycle) or 'tpose'.")
    phase: float = _field(0.25, "Position in the gait cycle (0 = start, 1 = one full cycle).",
                          range=(0.0, 1.0))
    output: str = _field("raymotion_body.png", "Path of the PNG to write.")

    def __post_init__(self) -> None:
        _validate_fields(self)


@dataclass(kw_only=True, slots=True)
class SynthConfig:
    """The synthetic motion-video benchmark (`raymotion synth`). Defaults are the 'default' preset;
    SYNTH_PRESETS holds the others ('tiny' for tests, 'large' for clusters)."""

    out_dir: str = _field("data/synth/default", "Folder the benchmark is written to (manifest.parquet, clips).")
    seed: int = _field(0, "Seed of the benchmark: subjects, motions, cameras, textures, splits.", range=(0, None))
    image_size: int = _field(224, "Width and height of the rendered video frames, pixels.", range=(32, 2048))
    supersample: int = _field(
        2, "Render at this many times the resolution and average down: anti-aliases the texture so that "
        "optical flow can track it.", range=(1, 4))
    fps: int = _field(30, "Frame rate of the motion and of the videos, frames per second.", range=(1, 240))
    focal_length_224: float = _field(
        5000.0, "Focal length in pixels for a 224 px frame (scaled with image_size). 5000 is SPIN's "
        "near-orthographic convention, which the weak-perspective model matches; ~500 is a normal lens "
        "(strong perspective).", range=(50.0, 100000.0))
    body_fill: float = _field(0.72, "Height of the standing body as a fraction of the frame height.",
                              range=(0.2, 1.0))
    elevation_deg: tuple[float, float] = _field((-5.0, 20.0), "Range of the camera elevation, degrees.")
    body_model: Literal["anny", "anny_lowres", "smpl"] = _field(
        "anny", "Body the benchmark is rendered with (its labels come from it), independent of body.model, the "
        "body the regressor predicts: the embedded default renders the full-resolution Anny mesh; "
        "'anny_lowres' renders faster (tests); 'smpl' uses your SMPL files (body.smpl_dir, body.gender).")
    view_yaw_deg: tuple[float, float] = _field(
        (-90.0, 90.0), "Range of the camera's azimuth about the body at frame 0, degrees from straight in "
        "front (0 = the person faces the camera; 180 = seen from behind). (-180, 180) gives every view; the "
        "default keeps the front half-space, where a single frame tells left from right (turns and drifting "
        "motions still show the back).")
    camera_follow: float = _field(
        1.0, "How much the camera pans with the person's root path (1 = keeps them centred, 0 = static).",
        range=(0.0, 1.0))
    background_drift_px: float = _field(
        0.3, "Largest extra background motion per frame, pixels (moving scenery).", range=(0.0, 10.0))
    texture_contrast: float = _field(0.8, "Contrast of the body texture's noise.", range=(0.0, 1.0))
    num_train_subjects: int = _field(40, "Subjects for the labelled and video splits.", range=(1, None))
    num_heldout_subjects: int = _field(24, "Held-out subjects for the val and test splits.", range=(1, None))
    labelled_clips: int = _field(1200, "Clips in the labelled pool (pretraining at annotation fractions).",
                                 range=(0, None))
    labelled_frames: int = _field(3, "Frames per labelled clip.", range=(1, None))
    labelled_stride: int = _field(
        8, "Frame stride of labelled clips: their frames are this many motion frames apart (more distinct "
        "poses per rendered frame).", range=(1, None))
    video_clips: int = _field(64, "Unannotated clips for refinement (training never reads their labels).",
                              range=(0, None))
    video_frames: int = _field(32, "Frames per video clip (consecutive, at fps).", range=(2, None))
    val_clips: int = _field(96, "Validation clips (held-out subjects).", range=(0, None))
    test_clips: int = _field(192, "Test clips (held-out subjects): with 192 the standard error of a paired "
                              "change between two models is ~1 mm at the embedded default.", range=(0, None))
    eval_frames: int = _field(8, "Frames per val/test clip (consecutive, at fps). Frames of a clip are "
                              "correlated: more clips resolve metrics better than longer ones.", range=(2, None))
    codec: Literal["vp9", "h264"] = _field(
        "vp9", "Video codec: 'vp9' in WebM (DALI's CPU decoder reads VP8/VP9/MJPEG only) or 'h264' in MP4.")
    crf: int = _field(12, "Constant rate factor of the encoder (lower = better quality, bigger files).",
                      range=(0, 63))
    save_flow: bool = _field(
        True, "Store the renderer's exact ground-truth optical flow (float16) for video/val/test clips.")
    num_workers: int = _field(2, "Processes that render clips in parallel.", range=(1, 256))

    def __post_init__(self) -> None:
        _validate_fields(self)
        lo, hi = self.elevation_deg
        if not -80.0 <= lo <= hi <= 80.0:
            raise ConfigError("elevation_deg", self.elevation_deg, "expected [min, max] with -80 <= min <= max <= 80")
        lo, hi = self.view_yaw_deg
        if not -180.0 <= lo <= hi <= 180.0:
            raise ConfigError("view_yaw_deg", self.view_yaw_deg, "expected [min, max] with -180 <= min <= max <= 180")


@dataclass(kw_only=True, slots=True)
class DataConfig:
    """Where the frames come from and how they become model inputs."""

    root: str = _field("data/synth/default", "Dataset folder in raymotion's format (docs/data_format.md): "
                       "manifest.parquet and clips; `raymotion synth` writes one.")
    crop_size: int = _field(128, "Side of the square crop fed to the model, pixels (the paper: 224 with "
                            "ResNet-50 on GPUs; 128 keeps CPU runs short).",
                            range=(32, 1024))
    bbox_scale: float = _field(1.3, "Crop side = bbox_scale x the longer side of the person box (1.3 in "
                               "SPIN and the paper).", range=(1.0, 3.0))
    bad_input: BadInput = _field(
        "fail", "What the data readers do with bad input (docs/bad_input.md): a missing, truncated or wrongly sized "
        "video, a label that is NaN/inf, an empty box, a clip too short for train.video_gap. 'fail' stops naming "
        "the file, frame and column; 'skip' leaves out that frame (in-memory datasets, labelled Ray Data "
        "pipeline), window (video pair pipeline) or clip, counts it and logs a warning. Pair stores "
        "(precompute-flow) always fail: a store must hold every pair.")
    decode_window: int = _field(
        64, "Frames the Ray Data pair pipeline decodes at a time from one clip (the pair store and "
        "benchmarks/bench_data.py too). A window covering the whole clip decodes each frame exactly once (clips "
        "with one keyframe, as the synthetic benchmark's: 32 frames); shorter windows each restart at the "
        "keyframe before them. Does not change the pairs.", range=(2, None))

    def __post_init__(self) -> None:
        _validate_fields(self)


@dataclass(kw_only=True, slots=True)
class FlowConfig:
    """The frozen optical-flow estimator."""

    estimator: Literal["dis", "farneback", "raft_small", "raft_large", "dali_of"] = _field(
        "dis", "Optical flow: 'dis' = OpenCV DIS tuned for fine texture (CPU default), 'farneback' (CPU); "
        "'raft_small', 'raft_large' = torchvision RAFT with the weights in flow.raft_weights (GPU or CPU); "
        "'dali_of' = the GPU's hardware optical-flow engine through DALI (NVIDIA Turing or newer).")
    raft_weights: str = _field(
        "", "State dict (.pth) of the torchvision RAFT variant named by flow.estimator, loaded with "
        "weights_only=True; required by 'raft_small'/'raft_large', nothing is ever downloaded. torchvision's "
        "pretrained files come from Raft_Large_Weights.DEFAULT.url (raft_large_C_T_SKHT_V2-ff5fadd5.pth) and "
        "Raft_Small_Weights.DEFAULT.url (raft_small_C_T_V2-01064c6d.pth) in torchvision.models.optical_flow.")
    raft_iters: int = _field(
        12, "RAFT's recurrent refinement iterations (num_flow_updates; torchvision's default 12). Fewer is "
        "faster and coarser.", range=(1, 64))
    device: Literal["auto", "cpu", "cuda"] = _field(
        "auto", "Where RAFT runs: 'auto' = cuda when available, else cpu. 'dali_of' needs cuda; 'dis' and "
        "'farneback' always run on the CPU.")

    def __post_init__(self) -> None:
        _validate_fields(self)


@dataclass(kw_only=True, slots=True)
class ModelConfig:
    """The single-frame regressor: backbone -> pooled feature -> iterative regressor (HMR/SPIN)."""

    backbone: Literal["resnet50", "hrnet_w32", "resnet18", "small_cnn"] = _field(
        "small_cnn", "Backbone: 'resnet50' and 'hrnet_w32' are the paper's (GPU); 'small_cnn' (the CPU "
        "default) and 'resnet18' train in minutes on a CPU.")
    weights: str = _field("", "Backbone weights file (a state dict, loaded with weights_only=True); "
                          "empty = random initialisation. Nothing is ever downloaded.")
    mean_params: str = _field("", "Mean-parameter file (pose_6d, betas, cam) the regressor starts from; "
                              "empty = the one shipped for the embedded body (raymotion/assets).")
    iterations: int = _field(3, "Iterations of the regressor's error feedback.", range=(1, 10))
    film: bool = _field(
        False, "Temporal-context FiLM variant (METHOD.md 5): a FiLM module conditions each frame's pooled "
        "feature on the detached predictions of the 2 frames before it (train.video_gap apart). Refinement only "
        "(from a base without FiLM, whose FiLM module starts as the identity): every video source then yields "
        "3-frame windows, the flow term on the last pair; evaluation runs each clip frame by frame, a clip's "
        "first frame conditioned on its own context-free prediction.")

    def __post_init__(self) -> None:
        _validate_fields(self)


@dataclass(kw_only=True, slots=True)
class LossConfig:
    """Loss weights (METHOD.md 2-5). Refinement: L = supervised_weight * L_sup + flow_weight * L_flow +
    anchor terms (scheduled) + texture_weight * L_tex + video_kp2d_weight * L_kp2d."""

    pose: float = _field(1.0, "L_sup: weight of the rotation-matrix MSE.", range=(0.0, None))
    betas: float = _field(0.001, "L_sup: weight of the betas MSE.", range=(0.0, None))
    betas_prior: float = _field(1.0, "L_sup: weight of mean(beta^2).", range=(0.0, None))
    kp2d: float = _field(5.0, "L_sup: weight of the 2D keypoint loss (normalised crop coords).", range=(0.0, None))
    kp3d: float = _field(5.0, "L_sup: weight of the pelvis-centred 3D joint loss.", range=(0.0, None))
    cam: float = _field(1.0, "L_sup: weight of mean(exp(-10 s)^2), keeping the camera scale positive.",
                        range=(0.0, None))
    supervised_scale: float = _field(60.0, "L_sup's overall factor (SPIN/EFT: 60).", range=(0.0, None))
    supervised_weight: float = _field(1.0, "W_sup: weight of the labelled batch during refinement.",
                                      range=(0.0, None))
    flow_weight: float = _field(
        0.1, "W_flow, set against the supervised loss: W_flow * L_flow ~ rho * L_sup. At the embedded default's "
        "base model L_sup ~ 3 and the normalised L_flow ~ 13 per pair, so 0.1 is rho ~ 40 %; the paper's 0.01 "
        "is ~4 % and 3e-4 (a CPU prototype's choice, FACTS.md) ~0.1 %, i.e. no flow "
        "(docs/results/method/README.md).", range=(0.0, None))
    flow_visibility: Literal["zbuffer", "eroded"] = _field(
        "eroded", "Visible vertices: 'zbuffer' (the paper: a face holding the vertex wins a pixel) or 'eroded' "
        "(also drop vertices at silhouette edges and depth jumps; measured better).")
    flow_normaliser_floor_px: float = _field(
        0.25, "Floor added to the per-pair normaliser (mean visible |flow| + floor)^2; 0 = the paper's form.",
        range=(0.0, None))
    flow_max_224: float = _field(50.0, "Drop a pair whose largest visible flow reaches this many px at a "
                                 "224 px crop (scaled to data.crop_size).", range=(0.0, None))
    anchor_joints: float = _field(1.0, "Anchor: MSE between the refined and the frozen pretrained network's "
                                  "pelvis-centred 3D joints on the video frames.", range=(0.0, None))
    anchor_betas: float = _field(1.0, "Anchor: MSE between refined and frozen betas.", range=(0.0, None))
    anchor_schedule: Literal["constant", "linear", "cosine", "step"] = _field(
        "constant", "Schedule of the anchor weights over refinement steps.")
    anchor_end_factor: float = _field(0.0, "Anchor weight at the last step as a fraction of its start "
                                      "(linear, cosine).", range=(0.0, None))
    anchor_milestones: tuple[int, ...] = _field((), "Steps at which the 'step' schedule multiplies the anchor "
                                                "weights by anchor_gamma.")
    anchor_gamma: float = _field(0.1, "Factor of the 'step' schedule.", range=(0.0, None))
    texture_weight: float = _field(0.0, "TexturePose: per-vertex colour consistency between the two frames.",
                                   range=(0.0, None))
    video_kp2d_weight: float = _field(0.0, "2D keypoints on the video frames (a stand-in detector: labels "
                                      "with noise and dropout).", range=(0.0, None))
    video_kp2d_noise_px: float = _field(3.0, "Std of the stand-in detector's noise, px at the crop size.",
                                        range=(0.0, None))
    video_kp2d_dropout: float = _field(0.1, "Fraction of the stand-in detector's joints dropped.",
                                       range=(0.0, 1.0))

    def __post_init__(self) -> None:
        _validate_fields(self)


@dataclass(kw_only=True, slots=True)
class TrainConfig:
    """Pretraining (supervised, on an annotation fraction) and refinement (unannotated video pairs)."""

    fraction: float = _field(0.1, "Annotation fraction: share of the labelled pool's clips used.",
                             range=(0.0001, 1.0))
    fraction_seed: int = _field(
        0, "Seed that picks which clips form the annotated fraction. Apart from run.seed, so that runs with "
        "different seeds refine with the very frames their base model was pretrained on.", range=(0, None))
    lr: float = _field(1e-4, "Adam learning rate of refinement.", range=(0.0, 1.0))
    pretrain_lr: float = _field(3e-4, "Adam learning rate of pretraining (from ImageNet-free initialisation, so "
                                "higher than refinement's).", range=(0.0, 1.0))
    weight_decay: float = _field(0.0, "Adam weight decay.", range=(0.0, 1.0))
    batch_size: int = _field(32, "Labelled frames per step.", range=(1, None))
    pair_batch_size: int = _field(16, "Video frame pairs per refinement step.", range=(1, None))
    pretrain_steps: int = _field(2000, "Pretraining steps.", range=(1, None))
    refine_steps: int = _field(400, "Refinement steps.", range=(1, None))
    eval_every: int = _field(200, "Evaluate on the val split every this many steps (and at the end).",
                             range=(1, None))
    checkpoint_every: int = _field(200, "Write a checkpoint every this many steps.", range=(1, None))
    log_every: int = _field(20, "Log losses (log.jsonl and the console) every this many steps.", range=(1, None))
    augment: bool = _field(True, "Scale/rotation/flip/colour augmentation of labelled frames.")
    pretrained: str = _field("", "Checkpoint to refine from (a pretraining run's checkpoint.pt).")
    flow_source: Literal["estimator", "ground_truth"] = _field(
        "estimator", "Optical flow for refinement: flow.estimator on the crops, or the renderer's exact flow "
        "(an oracle upper bound; synthetic data only).")
    video_gap: int = _field(1, "Frame gap of video pairs.", range=(1, None))
    video_clips: int = _field(0, "Refine on the first this many clips of the video split (0 = all): the amount "
                              "of unannotated video, for gain-against-video curves.", range=(0, None))
    freeze_batchnorm: bool = _field(True, "Freeze BatchNorm statistics during refinement (METHOD.md 4).")
    control_run: bool = _field(
        True, "The main job (jobs/refine.py) also runs the anchors-only control beside the refinement, two runs "
        "at once: the same config and seed with no video term (loss.flow_weight, loss.texture_weight and "
        "loss.video_kp2d_weight 0), named <run.name>-control; then prints both and the refinement's change over "
        "the control on test, paired by frame, with its standard error. False runs the refinement alone.")
    max_eval_clips: int = _field(0, "Evaluate on at most this many clips of the split (0 = all).",
                                 range=(0, None))

    def __post_init__(self) -> None:
        _validate_fields(self)


@dataclass(kw_only=True, slots=True)
class ScalingConfig:
    """How a run spreads over a Ray cluster: Ray Train workers, their resources, fault tolerance, storage."""

    num_workers: int = _field(1, "Ray Train workers (data-parallel replicas; one per GPU on GPU clusters).",
                              range=(1, None))
    use_gpu: bool = _field(False, "Give each worker a GPU (NCCL, bf16 autocast); false trains on CPUs with gloo.")
    cpus_per_worker: float = _field(1.0, "CPUs each worker reserves.", range=(0.0, None))
    threads_per_worker: int = _field(1, "torch threads per worker (1 keeps 2 workers from fighting over 2 cores).",
                                     range=(1, None))
    mixed_precision: Literal["auto", "bf16", "off"] = _field(
        "auto", "Autocast of the regressor's forward: 'auto' = bf16 on GPU, off on CPU. The body model, "
        "projection and losses always run in float32.")
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = _field(
        "PACK", "How Ray places the workers: PACK fills a node first (fast all-reduce), SPREAD puts them on "
        "different nodes where it can.")
    max_failures: int = _field(2, "Worker-group restarts Ray Train allows before the run fails; each restart "
                               "resumes from the last checkpoint.", range=(0, None))
    storage_path: str = _field(
        "", "Where run folders and checkpoints live: '' = run.output_dir. On a multi-node cluster use shared "
        "storage every node can reach (NFS path, s3://...).")
    ray_address: str = _field(
        "", "Ray cluster to join: '' = $RAY_ADDRESS or a new local instance; 'auto' = the running cluster.")
    ray_num_cpus: int = _field(
        0, "Logical CPUs of a new local Ray instance: 0 = physical cores + 4, so Ray Data's tasks find CPUs "
        "beside the workers (FACTS.md: a pipeline hangs when actors take every CPU).", range=(0, None))
    video_source: Literal["ray_data", "precomputed", "local"] = _field(
        "ray_data", "Video pairs for refinement: 'ray_data' streams them through the Ray Data pipeline "
        "(decode, crop, flow) split across workers; 'precomputed' reads the same rows from a Parquet pair store "
        "written once by that pipeline (`raymotion precompute-flow`; computed first when missing) and shared "
        "by runs and sweep trials; 'local' reads them in each worker with the flow cache (deterministic "
        "batches, bit-exact resume).")
    pair_store: str = _field(
        "", "Folder holding the pair stores of scaling.video_source=precomputed: '' = <data.root>/pairs. A local "
        "or NFS path, or s3://bucket/prefix; on a multi-node cluster it must be on storage every node reads.")
    flow_actors: int = _field(
        1, "Optical-flow actors of the Ray Data pipeline (1 CPU and scaling.flow_gpus each). On a CPU-only "
        "pipeline (scaling.decode_gpus=0 and scaling.flow_gpus=0) each of them also decodes and crops.",
        range=(1, None))
    decode_actors: int = _field(
        1, "Decode+crop actors of the Ray Data pipeline (1 CPU and scaling.decode_gpus each) when decoding and "
        "flow are separate stages, i.e. when either reserves a GPU share; unused on a CPU-only pipeline.",
        range=(1, None))
    decode_gpus: float = _field(
        0.0, "GPU share each decode actor reserves: 0 = decode on the CPU (DALI CPU for VP8/VP9/MJPEG, PyAV "
        "otherwise); > 0 = NVDEC through DALI 'mixed', e.g. 0.25 = four decode actors per GPU. A share in "
        "[0, 1] or a whole number (Ray's rule). Reserved from the cluster, never taken from a training worker's "
        "GPU (see raymotion/train/plan.py).", range=(0.0, None))
    flow_gpus: float = _field(
        0.0, "GPU share each flow actor reserves: > 0 runs 'raft_small'/'raft_large'/'dali_of' on that GPU; 0 runs "
        "the estimator on the CPU ('dali_of' has no CPU version and is refused with 0). A share in [0, 1] or a "
        "whole number.", range=(0.0, None))
    schedule_timeout_s: float = _field(
        300.0, "Seconds a launch waits for the cluster to place its resource plan (workers and pipeline actors; "
        "on an autoscaling cluster this covers starting nodes) before it fails naming what did not fit.",
        range=(1.0, None))
    fail_at_step: int = _field(
        0, "Fault injection for tests: worker 0 kills its process once when it reaches this step (0 = never).",
        range=(0, None))

    def __post_init__(self) -> None:
        _validate_fields(self)
        for key in ("decode_gpus", "flow_gpus"):
            value = getattr(self, key)
            if value > 1 and not float(value).is_integer():  # Ray refuses fractional GPUs above one
                raise ConfigError(key, value, "expected a GPU share in [0, 1] or a whole number of GPUs")


# Size presets of the benchmark: overrides of SynthConfig's defaults (which are the 'default' preset).
SYNTH_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {
        "synth.out_dir": "data/synth/tiny", "synth.image_size": 96, "synth.num_train_subjects": 3,
        "synth.num_heldout_subjects": 2, "synth.labelled_clips": 6, "synth.video_clips": 3,
        "synth.video_frames": 6, "synth.val_clips": 2, "synth.test_clips": 2, "synth.eval_frames": 4,
    },
    "default": {},
    "large": {
        "synth.out_dir": "data/synth/large", "synth.num_train_subjects": 400,
        "synth.num_heldout_subjects": 60, "synth.labelled_clips": 20000, "synth.video_clips": 4000,
        "synth.video_frames": 64, "synth.val_clips": 400, "synth.test_clips": 800, "synth.num_workers": 32,
    },
}


@dataclass(kw_only=True, slots=True)
class Config:
    """The root of the config tree. Cross-field checks live here."""

    body: BodyConfig = _section(BodyConfig)
    run: RunConfig = _section(RunConfig)
    render: RenderConfig = _section(RenderConfig)
    synth: SynthConfig = _section(SynthConfig)
    data: DataConfig = _section(DataConfig)
    flow: FlowConfig = _section(FlowConfig)
    model: ModelConfig = _section(ModelConfig)
    loss: LossConfig = _section(LossConfig)
    train: TrainConfig = _section(TrainConfig)
    scaling: ScalingConfig = _section(ScalingConfig)

    def __post_init__(self) -> None:
        _validate_fields(self)
        if self.body.model != "smpl" and self.body.gender != "neutral":
            warnings.warn(f"body.gender={self.body.gender!r} is ignored because body.model="
                          f"{self.body.model!r}; it only applies with body.model=smpl", stacklevel=3)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Config":
        """Inverse of ``to_dict``: strict (unknown keys raise), missing keys keep their defaults."""
        return from_dict(cls, d)


def check_refinement(cfg: Config) -> None:
    """The cross-key checks that hold for refinement only (``launch.check_config_only`` applies them to a run,
    ``tune.search_space.load_sweep`` to every corner of a sweep): raise a ConfigError naming the key."""
    source = cfg.scaling.video_source
    if source in ("ray_data", "precomputed"):  # both carry the Ray Data pipeline's rows
        if cfg.train.flow_source != "estimator":
            raise ConfigError("scaling.video_source", source, "the Ray Data pipeline estimates flow; with "
                              "train.flow_source=ground_truth use scaling.video_source=local")
        if cfg.loss.video_kp2d_weight > 0:
            raise ConfigError("scaling.video_source", source, "loss.video_kp2d_weight > 0 needs the stand-in "
                              "detector's keypoints, which the Ray Data pipeline does not carry; use "
                              "scaling.video_source=local")


# ----------------------------------------------------------------------------- types

@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _is_optional(tp: Any) -> bool:
    return typing.get_origin(tp) in (types.UnionType, typing.Union) and type(None) in typing.get_args(tp)


def _non_none(tp: Any) -> Any:
    (inner,) = [a for a in typing.get_args(tp) if a is not type(None)]  # only `X | None` is supported
    return inner


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if _is_optional(tp):
        return f"{_type_name(_non_none(tp))} | None"
    return tp.__name__ if isinstance(tp, type) and not typing.get_args(tp) else str(tp)


def _item_types(tp: Any, n: int) -> list[Any]:
    """Element types of a tuple/list annotation for a value of length n (fixed tuples: as written)."""
    args = typing.get_args(tp)
    return [args[0]] * n if len(args) == 1 or args[-1] is Ellipsis else list(args)


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Turn a YAML value or a --set string into type ``tp``; range and choice checks come later."""
    origin = typing.get_origin(tp)
    if is_dataclass(tp):
        if isinstance(value, Mapping):
            return from_dict(tp, value, prefix=key)  # type: ignore[arg-type]
        raise ValueError(f"'{key}' is a section, not a value; set one of its keys: "
                         f"{', '.join(_join(key, f.name) for f in fields(tp))}")
    if _is_optional(tp):
        if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null", "~")):
            return None
        return _coerce(key, value, _non_none(tp))
    if origin is Literal:  # choices are strings, so a --set value is already the right type
        return value  # membership is checked by __post_init__, which lists the choices
    if origin in (tuple, list):
        if isinstance(value, str):  # "[1,2]", "(1, 2)" or "1,2"
            inner = value.strip().strip("[]()").strip()
            value = [s.strip() for s in inner.split(",")] if inner else []
        if not isinstance(value, (list, tuple)):
            raise ConfigError(key, value, f"expected {_type_name(tp)}, e.g. [1,2]")
        item_types = _item_types(tp, len(value))
        if len(item_types) != len(value):
            raise ConfigError(key, value, f"expected {_type_name(tp)}")
        return origin(_coerce(key, v, t) for v, t in zip(value, item_types))
    if tp is bool:
        if isinstance(value, bool):
            return value
        word = str(value).strip().lower()
        if word in ("true", "1", "yes", "on"):
            return True
        if word in ("false", "0", "no", "off"):
            return False
        raise ConfigError(key, value, "expected a bool: true/false/1/0")
    if tp in (int, float) and not isinstance(value, bool):
        if isinstance(value, int) or (tp is float and isinstance(value, float)):
            return tp(value)
        if isinstance(value, str):
            try:
                return tp(value.strip())
            except ValueError:
                pass
    if tp is str and isinstance(value, str):
        return value
    hint = "; quote it in YAML" if tp is str else ""
    raise ConfigError(key, value, f"expected {_type_name(tp)}{hint}")


def _check_value(key: str, value: Any, tp: Any) -> None:
    """Raise ConfigError unless ``value`` already has type ``tp`` (ints are accepted as floats)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        if value not in args:
            close = difflib.get_close_matches(str(value), [str(a) for a in args], n=1)
            guess = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(key, value, f"expected one of: {', '.join(map(str, args))}{guess}")
    elif _is_optional(tp):
        if value is not None:
            _check_value(key, value, _non_none(tp))
    elif origin in (tuple, list):
        if not isinstance(value, origin) or len(_item_types(tp, len(value))) != len(value):
            raise ConfigError(key, value, f"expected {_type_name(tp)}")
        for v, t in zip(value, _item_types(tp, len(value))):
            _check_value(key, v, t)
    elif tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(key, value, "expected float")
    elif (tp is int and isinstance(value, bool)) or not isinstance(value, tp):
        raise ConfigError(key, value, f"expected {_type_name(tp)}")


def _check_field(key: str, f: dataclasses.Field, value: Any, tp: Any) -> None:
    """Type, choice and range checks of one field's value; errors name ``key``."""
    _check_value(key, value, tp)
    lo, hi = f.metadata["range"] or (None, None)
    if value is not None and ((lo is not None and value < lo) or (hi is not None and value > hi)):
        raise ConfigError(key, value, f"expected a value in range {_range_text(lo, hi)}")


def _validate_fields(obj: Any) -> None:
    """Type, choice and range checks for every field of one section (keys relative to it)."""
    for f in fields(obj):
        _check_field(f.name, f, getattr(obj, f.name), _hints(type(obj))[f.name])


def check_values(values: Mapping[str, Any]) -> None:
    """Check values against the rules of their dotted config keys (type, choices, range), without building
    a config: for functions that take config values as plain arguments, so that they accept exactly what
    the config accepts, e.g. ``check_values({"data.crop_size": crop_size, "data.bbox_scale": 1.3})``.

    Raises:
        ConfigError: a value the key does not accept, naming the key, the value and what it expects.
        UnknownKeyError: a key that is not in the config tree.
    """
    for key, value in values.items():
        *parents, leaf = key.split(".")
        cls, prefix = Config, ""
        for part in parents:
            cls, prefix = _field_type(cls, prefix, part), _join(prefix, part)
        tp = _field_type(cls, prefix, leaf)
        (f,) = [f for f in fields(cls) if f.name == leaf]
        _check_field(key, f, value, tp)


def _range_text(lo: float | None, hi: float | None) -> str:
    return f"[{lo}, {hi}]" if lo is not None and hi is not None else f">= {lo}" if lo is not None else f"<= {hi}"

# ----------------------------------------------------------------------------- dicts and overrides

def _field_type(cls: type, prefix: str, name: str) -> Any:
    """The annotation of field ``name`` of section ``cls``; an unknown name lists the valid ones."""
    hints = _hints(cls)
    if name not in hints:
        where = f"under '{prefix}'" if prefix else "at the top level"
        close = difflib.get_close_matches(str(name), list(hints), n=1)
        guess = f" Did you mean '{_join(prefix, close[0])}'?" if close else ""
        raise UnknownKeyError(_join(prefix, str(name)), f"unknown key '{_join(prefix, str(name))}'; valid keys "
                              f"{where}: {', '.join(sorted(hints))}.{guess}")
    return hints[name]


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dicts of builtins (tuples become lists), as Ray and YAML want them."""
    def plain(v: Any) -> Any:
        return to_dict(v) if is_dataclass(v) else [plain(x) for x in v] if isinstance(v, (list, tuple)) else v
    return {f.name: plain(getattr(cfg, f.name)) for f in fields(cfg)}


RETIRED_KEYS: dict[str, str] = {
    "run.device": "it was read nowhere: training places workers with scaling.use_gpu, RAFT runs on flow.device",
}
"""Keys that are gone from the tree -> why. Configs stored before (a run's config.yaml, every checkpoint,
the shipped base models) still load: ``from_dict`` drops such a key (it never had an effect), and an override
that sets one (YAML, --set) is dropped with a warning, never an error."""


def from_dict(cls: type[T], d: Mapping[str, Any], *, prefix: str = "") -> T:
    """Build ``cls`` from a (partial) nested dict; values are coerced, unknown keys raise (``RETIRED_KEYS`` are
    dropped)."""
    if not isinstance(d, Mapping):
        raise ValueError(f"expected a mapping of keys for '{prefix or 'the config'}', got {d!r}")
    kwargs = {k: _coerce(_join(prefix, k), v, _field_type(cls, prefix, k)) for k, v in d.items()
              if _join(prefix, k) not in RETIRED_KEYS}
    try:
        return cls(**kwargs)
    except ConfigError as e:
        raise e.under(prefix) from None


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"body": {"gender": "male"}, "run.seed": 1} -> {"body.gender": "male", "run.seed": 1}."""
    flat: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Mapping) and v:
            flat.update(_flatten(v, _join(prefix, str(k))))
        else:
            flat[_join(prefix, str(k))] = v
    return flat


flatten = _flatten  # public: nested config dict -> dotted keys (used to compare configs key by key)


def apply_overrides(cfg: T, overrides: Mapping[str, Any]) -> T:
    """A new validated config with dotted-key ``overrides`` applied; ``cfg`` is not modified."""
    d = to_dict(cfg)
    for key, value in _flatten(overrides).items():
        if key in RETIRED_KEYS:
            warnings.warn(f"config key {key!r} is ignored: it was removed ({RETIRED_KEYS[key]})", stacklevel=2)
            continue
        *parents, leaf = key.split(".")
        node, cls, prefix = d, type(cfg), ""
        for part in parents:
            cls = _field_type(cls, prefix, part)
            if not is_dataclass(cls):
                raise ValueError(f"cannot set '{key}': '{_join(prefix, part)}' is a value, not a section")
            node, prefix = node[part], _join(prefix, part)
        if not (is_dataclass(_field_type(cls, prefix, leaf)) and value == {}):  # "body: {}" sets nothing
            node[leaf] = value  # a section set to a non-mapping is rejected by _coerce
    return from_dict(type(cfg), d)


def parse_set_args(items: Iterable[str]) -> dict[str, str]:
    """["body.gender=male", "run.seed=3"] -> {"body.gender": "male", "run.seed": "3"}."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set expects KEY=VALUE (e.g. --set body.gender=male), got {item!r}")
        out[key.strip()] = value.strip()
    return out


# ----------------------------------------------------------------------------- files

def load_config(path: str | Path | None = None,
                overrides: Sequence[str] | Mapping[str, Any] | None = None,
                *, preset: Mapping[str, Any] | None = None) -> Config:
    """Defaults, then a preset's dotted overrides (e.g. ``SYNTH_PRESETS['tiny']``), then the YAML file
    (nested or dotted keys), then overrides (--set items or a dict). An error gets a note naming its source:
    the --set item of the bad key, or else the file."""
    merged: dict[str, Any] = dict(preset or {})
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as e:
            raise ValueError(f"invalid YAML in config file {path}: {e}") from None
        if data is None:  # an empty file means "all defaults"
            data = {}
        if not isinstance(data, dict):
            raise ValueError(f"config file {path} must hold a mapping of keys (e.g. 'body:\\n  gender: male'),"
                             f" got a {type(data).__name__}")
        merged.update(_flatten(data))
    from_set = isinstance(overrides, Sequence) and not isinstance(overrides, str)
    if not isinstance(overrides, Mapping):
        overrides = parse_set_args(overrides or [])
    set_items = _flatten(overrides)
    merged.update(set_items)
    try:
        return apply_overrides(Config(), merged)  # one pass: cross-field checks see the final values
    except ValueError as e:
        # Blame the source of the bad key: a --set item wins over the file (it is applied last).
        key = getattr(e, "key", None)
        if key in set_items:
            e.add_note(f"from --set {key}={set_items[key]}" if from_set else f"from the override {key}={set_items[key]!r}")
        elif path is not None:
            e.add_note(f"while loading config file {path}")
        raise


def config_yaml(cfg: Config) -> str:
    """``cfg`` as the YAML text of a run's ``config.yaml``; ``load_config`` reads it back."""
    return ("# Resolved raymotion config; load with raymotion.config.load_config(path).\n"
            + yaml.safe_dump(to_dict(cfg), sort_keys=False))


def save_config(cfg: Config, path: str | Path) -> None:
    """Write ``cfg`` as YAML to a local ``path``, atomically (temp file + os.replace)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(config_yaml(cfg))
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


# ----------------------------------------------------------------------------- help

def _leaves(cls: type, prefix: str = "") -> Iterable[tuple[str, dataclasses.Field, Any]]:
    for f in fields(cls):
        tp = _hints(cls)[f.name]
        if is_dataclass(tp):
            yield from _leaves(tp, _join(prefix, f.name))  # type: ignore[arg-type]
        else:
            yield _join(prefix, f.name), f, tp


def config_keys(cls: type = Config) -> list[str]:
    """Every dotted leaf key, e.g. ['body.model', ..., 'render.output']."""
    return [key for key, _, _ in _leaves(cls)]


def describe(cls: type = Config) -> str:
    """One entry per leaf key: `key: type = default [range]` then its help text."""
    lines = []
    for key, f, tp in _leaves(cls):
        span = f"  (range {_range_text(*f.metadata['range'])})" if f.metadata["range"] else ""
        lines += [f"{key}: {_type_name(tp)} = {f.default!r}{span}", f"    {f.metadata['help']}"]
    return "\n".join(lines)
