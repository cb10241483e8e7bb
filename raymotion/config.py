"""The one typed config tree: every default lives here, and no other module parses config.

Flow: ``Config()`` holds the defaults; a YAML file and ``--set a.b=v`` items are *overrides*
(``load_config``), applied by ``apply_overrides`` and validated as a whole. Ray moves plain dicts,
so workers receive ``to_dict(cfg)`` and turn it back with ``Config.from_dict(d)`` on their first line.

This module is the schema (the sections, their defaults, help texts, ranges and cross-field checks) and
how a config is loaded and saved; the machinery that coerces and checks values is ``raymotion.typed_config``
(each field carries its help text and optional inclusive ``range``, so ``describe()`` and error messages
read them back; choices are ``Literal`` types; validation runs in every ``__post_init__``, and a nested
section raises ``ConfigError`` with its leaf key, which ``from_dict`` prefixes). Import everything config
from here.

The defaults are one recipe, the embedded default's on a CPU (the synthetic benchmark, the low-resolution body,
64 px crops, a small CNN, 5 % of the labels, 600 refinement steps on pairs 3 frames apart with W_flow 0.3:
docs/results/effect/): what `raymotion pretrain|refine` and jobs/*.py run when no --config is given, and what the
shipped base model small_cnn64_f05 was pretrained with. A GPU or paper-size run overrides what it changes.

Adding a section: write its ``@dataclass(kw_only=True, slots=True)`` class (docstring, fields made with
``leaf``, ``__post_init__`` calling ``validate_fields``), then add one ``name: XConfig = section(XConfig)``
line to ``Config``.
"""

import os
import re
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from raymotion import typed_config
from raymotion.typed_config import (
    ConfigError,
    MovedKeyError,
    UnknownKeyError,
    apply_overrides,
    flatten,
    from_dict,
    leaf,
    parse_set_args,
    section,
    to_dict,
    validate_fields,
)

__all__ = [
    "SYNTH_PRESETS", "BadInput", "BodyConfig", "Config", "ConfigError", "DataConfig", "Decoder", "FlowConfig",
    "LossConfig", "MOVED_KEYS", "ModelConfig", "MovedKeyError", "PredictConfig", "RenderConfig", "RunConfig",
    "ScalingConfig", "SynthConfig", "TrainConfig",
    "UnknownKeyError", "apply_overrides", "check_refinement", "check_values", "config_keys", "config_yaml",
    "describe", "flatten", "from_dict", "load_config", "parse_set_args", "save_config", "to_dict",
]

MOVED_KEYS: dict[str, str] = {
    "scaling.video_source": "data.video_source", "scaling.pair_store": "data.pair_store",
    "scaling.flow_actors": "data.flow_actors",
}
"""Keys that moved to another section, old -> new (where refinement's pairs come from is a data setting, not
scaling). A stored config (a checkpoint's, a shipped base model's) is read with them moved (``Config.from_dict``);
a config file or --set that names an old key is refused naming the new one (``load_config``)."""

BadInput = Literal["fail", "skip"]
"""``data.bad_input``'s choices (raymotion.data.manifest.BAD_INPUT_POLICIES)."""
Decoder = Literal["auto", "cpu", "dali_cpu", "dali_mixed"]
"""``data.decoder``'s choices (raymotion.data.decode.DECODERS)."""


# ----------------------------------------------------------------------------- sections

@dataclass(kw_only=True, slots=True)
class BodyConfig:
    """Which parametric body model produces the mesh, and where its files are."""

    model: Literal["anny", "anny_lowres", "smpl"] = leaf(
        "anny_lowres", "Body model: 'anny' = embedded full-resolution body (no download); 'anny_lowres' = embedded "
        "1,229-vertex body (the CPU default: the flow loss's visibility and sampling stay cheap); 'smpl' = your own "
        "SMPL files in body.smpl_dir.")
    smpl_dir: str = leaf(
        "body_models/smpl", "Folder holding SMPL_NEUTRAL/MALE/FEMALE .pkl or .npz "
        "(the SPIN/MMHuman3D layout). Only used with body.model=smpl.")
    gender: Literal["neutral", "male", "female"] = leaf(
        "neutral", "SMPL body gender. Only used with body.model=smpl.")
    h36m_regressor: str = leaf(
        "../J_regressor_h36m.npy", "SPIN's 17-joint Human3.6M joint regressor (.npy); needed for evaluation "
        "joints with body.model=smpl. A relative path is relative to body.smpl_dir (the default is "
        "body_models/J_regressor_h36m.npy beside body_models/smpl/), never to the working directory; an "
        "absolute path is used as given.")
    num_betas: int = leaf(10, "Number of shape coefficients (betas).", range=(1, 300))

    def __post_init__(self) -> None:
        validate_fields(self)


@dataclass(kw_only=True, slots=True)
class RunConfig:
    """Where a run writes its outputs, and how it is seeded and placed."""

    output_dir: str = leaf("runs", "Parent folder of run directories.")
    name: str = leaf("embedded-default", "Run name, used as a folder name: letters, digits, '-', '_', '.'.")
    seed: int = leaf(0, "Random seed for torch, numpy and Python.", range=(0, None))
    device: Literal["auto", "cpu", "cuda"] = leaf(
        "auto", "Device: 'auto' = cuda when available, else cpu.")

    def __post_init__(self) -> None:
        validate_fields(self)
        # Must start with a letter, digit or '_': rules out '.', '..' and names that look like flags.
        if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9._-]*", self.name):
            raise ConfigError("name", self.name, "expected a filesystem-safe name: letters, digits, "
                              "'-', '_', '.', not starting with '.' or '-'")


@dataclass(kw_only=True, slots=True)
class RenderConfig:
    """The picture of the body that `raymotion doctor` renders."""

    image_size: int = leaf(512, "Width and height of the square image, in pixels.", range=(64, 4096))
    motion: Literal["walk", "tpose"] = leaf("walk", "Pose to render: 'walk' (gait cycle) or 'tpose'.")
    phase: float = leaf(0.25, "Position in the gait cycle (0 = start, 1 = one full cycle).",
                          range=(0.0, 1.0))
    output: str = leaf("raymotion_body.png", "Path of the PNG to write.")

    def __post_init__(self) -> None:
        validate_fields(self)


@dataclass(kw_only=True, slots=True)
class SynthConfig:
    """The synthetic motion-video benchmark (`raymotion synth`). Defaults are the 'default' preset;
    SYNTH_PRESETS holds the others ('tiny' for tests, 'large' for clusters)."""

    out_dir: str = leaf("data/synth/default", "Folder the benchmark is written to (manifest.parquet, clips).")
    seed: int = leaf(0, "Seed of the benchmark: subjects, motions, cameras, textures, splits.", range=(0, None))
    image_size: int = leaf(224, "Width and height of the rendered video frames, pixels.", range=(32, 2048))
    supersample: int = leaf(
        2, "Render at this many times the resolution and average down: anti-aliases the texture so that "
        "optical flow can track it.", range=(1, 4))
    fps: int = leaf(30, "Frame rate of the motion and of the videos, frames per second.", range=(1, 240))
    focal_length_224: float = leaf(
        5000.0, "Focal length in pixels for a 224 px frame (scaled with image_size). 5000 is SPIN's "
        "near-orthographic convention, which the weak-perspective model matches; ~500 is a normal lens "
        "(strong perspective).", range=(50.0, 100000.0))
    body_fill: float = leaf(0.72, "Height of the standing body as a fraction of the frame height.",
                              range=(0.2, 1.0))
    elevation_deg: tuple[float, float] = leaf((-5.0, 20.0), "Range of the camera elevation, degrees.")
    body_model: Literal["anny", "anny_lowres", "smpl"] = leaf(
        "anny", "Body the benchmark is rendered with (its labels come from it), independent of body.model, the "
        "body the regressor predicts: the embedded default renders the full-resolution Anny mesh; "
        "'anny_lowres' renders faster (tests); 'smpl' uses your SMPL files (body.smpl_dir, body.gender).")
    view_yaw_deg: tuple[float, float] = leaf(
        (-90.0, 90.0), "Range of the camera's azimuth about the body at frame 0, degrees from straight in "
        "front (0 = the person faces the camera; 180 = seen from behind). (-180, 180) gives every view; the "
        "default keeps the front half-space, where a single frame tells left from right (turns and drifting "
        "motions still show the back).")
    camera_follow: float = leaf(
        1.0, "How much the camera pans with the person's root path (1 = keeps them centred, 0 = static).",
        range=(0.0, 1.0))
    background_drift_px: float = leaf(
        0.3, "Largest extra background motion per frame, pixels (moving scenery).", range=(0.0, 10.0))
    texture_contrast: float = leaf(0.8, "Contrast of the body texture's noise.", range=(0.0, 1.0))
    num_train_subjects: int = leaf(40, "Subjects for the labelled and video splits.", range=(1, None))
    num_heldout_subjects: int = leaf(24, "Held-out subjects for the val and test splits.", range=(1, None))
    labelled_clips: int = leaf(1200, "Clips in the labelled pool (pretraining at annotation fractions).",
                                 range=(0, None))
    labelled_frames: int = leaf(3, "Frames per labelled clip.", range=(1, None))
    labelled_stride: int = leaf(
        8, "Frame stride of labelled clips: their frames are this many motion frames apart (more distinct "
        "poses per rendered frame).", range=(1, None))
    video_clips: int = leaf(64, "Unannotated clips for refinement (training never reads their labels).",
                              range=(0, None))
    video_frames: int = leaf(32, "Frames per video clip (consecutive, at fps).", range=(2, None))
    val_clips: int = leaf(96, "Validation clips (held-out subjects).", range=(0, None))
    test_clips: int = leaf(192, "Test clips (held-out subjects): with 192 the standard error of a paired "
                              "change between two models is ~1 mm at the embedded default.", range=(0, None))
    eval_frames: int = leaf(8, "Frames per val/test clip (consecutive, at fps). Frames of a clip are "
                              "correlated: more clips resolve metrics better than longer ones.", range=(2, None))
    codec: Literal["vp9", "h264"] = leaf(
        "vp9", "Video codec: 'vp9' in WebM (DALI's CPU decoder reads VP8/VP9/MJPEG only) or 'h264' in MP4.")
    crf: int = leaf(12, "Constant rate factor of the encoder (lower = better quality, bigger files).",
                      range=(0, 63))
    save_flow: bool = leaf(
        True, "Store the renderer's exact ground-truth optical flow (float16) for video/val/test clips.")
    num_workers: int = leaf(2, "Processes that render clips in parallel.", range=(1, 256))

    def __post_init__(self) -> None:
        validate_fields(self)
        lo, hi = self.elevation_deg
        if not -80.0 <= lo <= hi <= 80.0:
            raise ConfigError("elevation_deg", self.elevation_deg, "expected [min, max] with -80 <= min <= max <= 80")
        lo, hi = self.view_yaw_deg
        if not -180.0 <= lo <= hi <= 180.0:
            raise ConfigError("view_yaw_deg", self.view_yaw_deg, "expected [min, max] with -180 <= min <= max <= 180")


@dataclass(kw_only=True, slots=True)
class DataConfig:
    """Where the frames come from and how they become model inputs."""

    root: str = leaf("data/synth/default", "Dataset folder in raymotion's format (docs/data_format.md): "
                       "manifest.parquet and clips; `raymotion synth` writes one.")
    crop_size: int = leaf(64, "Side of the square crop fed to the model, pixels (the paper: 224 with "
                            "ResNet-50 on GPUs; 64 keeps CPU runs short).",
                            range=(32, 1024))
    bbox_scale: float = leaf(1.3, "Crop side = bbox_scale x the longer side of the person box (1.3 in "
                               "SPIN and the paper).", range=(1.0, 3.0))
    bad_input: BadInput = leaf(
        "fail", "What the data readers do with bad input (docs/bad_input.md): a missing, truncated or wrongly sized "
        "video or frame file, a label that is NaN/inf, an empty box, a clip too short for train.video_gap. 'fail' stops naming "
        "the file, frame and column; 'skip' leaves out that frame (in-memory datasets, labelled Ray Data "
        "pipeline), window (video pair pipeline) or clip, counts it and logs a warning. Pair stores "
        "(precompute-flow) always fail: a store must hold every pair.")
    decoder: Decoder = leaf(
        "auto", "What decodes clips (videos and image sequences, docs/data_format.md), in every reader: "
        "'auto' = in the Ray Data pipelines DALI where it can (NVDEC / nvJPEG in an actor holding a GPU share, "
        "else DALI's CPU decoders for VP8/VP9/MJPEG and images, PyAV for other codecs), in the in-process "
        "datasets and evaluation the CPU decoders; 'cpu' = PyAV for videos, OpenCV for images; 'dali_cpu' = DALI's "
        "CPU decoders (videos: VP8/VP9/MJPEG only); 'dali_mixed' = NVDEC / nvJPEG (needs a GPU: "
        "scaling.decode_gpus > 0 in the pipelines). The backends used are reported (raymotion.data.decode.backend_for).")
    decode_window: int = leaf(
        64, "Frames the Ray Data pair pipeline decodes at a time from one clip (the pair store and "
        "benchmarks/bench_data.py too). A window covering the whole clip decodes each frame exactly once (clips "
        "with one keyframe, as the synthetic benchmark's: 32 frames); shorter windows each restart at the "
        "keyframe before them. Does not change the pairs.", range=(2, None))
    video_source: Literal["ray_data", "precomputed", "local"] = leaf(
        "ray_data", "Video pairs for refinement: 'ray_data' streams them through the Ray Data pipeline "
        "(decode, crop, flow) split across workers; 'precomputed' reads the same rows from a Parquet pair store "
        "written once by that pipeline (`raymotion precompute-flow`; computed first when missing) and shared "
        "by runs and sweep trials; 'local' reads them in each worker with the flow cache (deterministic "
        "batches, bit-exact resume).")
    pair_store: str = leaf(
        "", "Folder holding the pair stores of data.video_source=precomputed: '' = <data.root>/pairs. A local "
        "or NFS path, or s3://bucket/prefix; on a multi-node cluster it must be on storage every node reads.")
    flow_actors: int = leaf(
        1, "Optical-flow actors of the Ray Data pair pipeline (1 CPU and scaling.flow_gpus each). On a CPU-only "
        "pipeline (scaling.decode_gpus=0 and scaling.flow_gpus=0) each of them also decodes and crops.",
        range=(1, None))

    def __post_init__(self) -> None:
        validate_fields(self)


@dataclass(kw_only=True, slots=True)
class FlowConfig:
    """The frozen optical-flow estimator."""

    estimator: Literal["dis", "farneback", "raft_small", "raft_large", "dali_of"] = leaf(
        "dis", "Optical flow: 'dis' = OpenCV DIS tuned for fine texture (CPU default), 'farneback' (CPU); "
        "'raft_small', 'raft_large' = torchvision RAFT with the weights in flow.raft_weights (GPU or CPU); "
        "'dali_of' = the GPU's hardware optical-flow engine through DALI (NVIDIA Turing or newer).")
    raft_weights: str = leaf(
        "", "State dict (.pth) of the torchvision RAFT variant named by flow.estimator, loaded with "
        "weights_only=True; required by 'raft_small'/'raft_large', nothing is ever downloaded. torchvision's "
        "pretrained files come from Raft_Large_Weights.DEFAULT.url (raft_large_C_T_SKHT_V2-ff5fadd5.pth) and "
        "Raft_Small_Weights.DEFAULT.url (raft_small_C_T_V2-01064c6d.pth) in torchvision.models.optical_flow.")
    raft_iters: int = leaf(
        12, "RAFT's recurrent refinement iterations (num_flow_updates; torchvision's default 12). Fewer is "
        "faster and coarser.", range=(1, 64))
    device: Literal["auto", "cpu", "cuda"] = leaf(
        "auto", "Where RAFT runs: 'auto' = cuda when available, else cpu. 'dali_of' needs cuda; 'dis' and "
        "'farneback' always run on the CPU.")

    def __post_init__(self) -> None:
        validate_fields(self)


@dataclass(kw_only=True, slots=True)
class ModelConfig:
    """The single-frame regressor: backbone -> pooled feature -> iterative regressor (HMR/SPIN)."""

    backbone: Literal["resnet50", "hrnet_w32", "resnet18", "small_cnn"] = leaf(
        "small_cnn", "Backbone: 'resnet50' and 'hrnet_w32' are the paper's (GPU); 'small_cnn' (the CPU "
        "default) and 'resnet18' train in minutes on a CPU.")
    weights: str = leaf("", "Backbone weights file (a state dict, loaded with weights_only=True); "
                          "empty = random initialisation. Nothing is ever downloaded.")
    mean_params: str = leaf("", "Mean-parameter file (pose_6d, betas, cam) the regressor starts from; "
                              "empty = the one shipped for the embedded body (raymotion/assets).")
    iterations: int = leaf(3, "Iterations of the regressor's error feedback.", range=(1, 10))
    film: bool = leaf(
        False, "Temporal-context FiLM variant (METHOD.md 5): a FiLM module conditions each frame's pooled "
        "feature on the detached predictions of the 2 frames before it (train.video_gap apart). Refinement only "
        "(from a base without FiLM, whose FiLM module starts as the identity): every video source then yields "
        "3-frame windows, the flow term on the last pair; evaluation runs each clip frame by frame, a clip's "
        "first frame conditioned on its own context-free prediction.")

    def __post_init__(self) -> None:
        validate_fields(self)


@dataclass(kw_only=True, slots=True)
class LossConfig:
    """Loss weights (METHOD.md 2-5). Refinement: L = supervised_weight * L_sup + flow_weight * L_flow +
    anchor terms (scheduled) + texture_weight * L_tex + video_kp2d_weight * L_kp2d."""

    pose: float = leaf(1.0, "L_sup: weight of the rotation-matrix MSE.", range=(0.0, None))
    betas: float = leaf(0.001, "L_sup: weight of the betas MSE.", range=(0.0, None))
    betas_prior: float = leaf(1.0, "L_sup: weight of mean(beta^2).", range=(0.0, None))
    kp2d: float = leaf(5.0, "L_sup: weight of the 2D keypoint loss (normalised crop coords).", range=(0.0, None))
    kp3d: float = leaf(5.0, "L_sup: weight of the pelvis-centred 3D joint loss.", range=(0.0, None))
    cam: float = leaf(1.0, "L_sup: weight of mean(exp(-10 s)^2), keeping the camera scale positive.",
                        range=(0.0, None))
    supervised_scale: float = leaf(60.0, "L_sup's overall factor (SPIN/EFT: 60).", range=(0.0, None))
    supervised_weight: float = leaf(1.0, "W_sup: weight of the labelled batch during refinement.",
                                      range=(0.0, None))
    flow_weight: float = leaf(
        0.3, "W_flow, set against the supervised loss: W_flow * L_flow ~ rho * L_sup. At the embedded default's "
        "base model L_sup ~ 3 and the normalised L_flow ~ 13 per pair at gap 1, so 0.1 is rho ~ 40 %; the paper's "
        "0.01 is ~4 % and 3e-4 (a CPU prototype's choice, FACTS.md) ~0.1 %, i.e. no flow "
        "(docs/results/method/README.md). 0.3 with train.video_gap=3 is the recipe that shows the flow's gain "
        "(docs/results/effect/).", range=(0.0, None))
    flow_visibility: Literal["zbuffer", "eroded"] = leaf(
        "eroded", "Visible vertices: 'zbuffer' (the paper: a face holding the vertex wins a pixel) or 'eroded' "
        "(also drop vertices at silhouette edges and depth jumps; measured better).")
    flow_normaliser_floor_px: float = leaf(
        0.25, "Floor added to the per-pair normaliser (mean visible |flow| + floor)^2; 0 = the paper's form.",
        range=(0.0, None))
    flow_max_224: float = leaf(50.0, "Drop a pair whose largest visible flow reaches this many px at a "
                                 "224 px crop (scaled to data.crop_size).", range=(0.0, None))
    anchor_joints: float = leaf(1.0, "Anchor: MSE between the refined and the frozen pretrained network's "
                                  "pelvis-centred 3D joints on the video frames.", range=(0.0, None))
    anchor_betas: float = leaf(1.0, "Anchor: MSE between refined and frozen betas.", range=(0.0, None))
    anchor_schedule: Literal["constant", "linear", "cosine", "step"] = leaf(
        "constant", "Schedule of the anchor weights over refinement steps.")
    anchor_end_factor: float = leaf(0.0, "Anchor weight at the last step as a fraction of its start "
                                      "(linear, cosine).", range=(0.0, None))
    anchor_milestones: tuple[int, ...] = leaf((), "Steps at which the 'step' schedule multiplies the anchor "
                                                "weights by anchor_gamma.")
    anchor_gamma: float = leaf(0.1, "Factor of the 'step' schedule.", range=(0.0, None))
    texture_weight: float = leaf(0.0, "TexturePose: per-vertex colour consistency between the two frames.",
                                   range=(0.0, None))
    video_kp2d_weight: float = leaf(0.0, "2D keypoints on the video frames (a stand-in detector: labels "
                                      "with noise and dropout).", range=(0.0, None))
    video_kp2d_noise_px: float = leaf(3.0, "Std of the stand-in detector's noise, px at the crop size.",
                                        range=(0.0, None))
    video_kp2d_dropout: float = leaf(0.1, "Fraction of the stand-in detector's joints dropped.",
                                       range=(0.0, 1.0))

    def __post_init__(self) -> None:
        validate_fields(self)


@dataclass(kw_only=True, slots=True)
class TrainConfig:
    """Pretraining (supervised, on an annotation fraction) and refinement (unannotated video pairs)."""

    fraction: float = leaf(0.05, "Annotation fraction: share of the labelled pool's clips used (5 %: the regime "
                             "where motion cues pay).",
                             range=(0.0001, 1.0))
    fraction_seed: int = leaf(
        0, "Seed that picks which clips form the annotated fraction. Apart from run.seed, so that runs with "
        "different seeds refine with the very frames their base model was pretrained on.", range=(0, None))
    lr: float = leaf(1e-4, "Adam learning rate of refinement.", range=(0.0, 1.0))
    pretrain_lr: float = leaf(3e-4, "Adam learning rate of pretraining (from ImageNet-free initialisation, so "
                                "higher than refinement's).", range=(0.0, 1.0))
    weight_decay: float = leaf(0.0, "Adam weight decay.", range=(0.0, 1.0))
    batch_size: int = leaf(32, "Labelled frames per step.", range=(1, None))
    pair_batch_size: int = leaf(16, "Video frame pairs per refinement step.", range=(1, None))
    pretrain_steps: int = leaf(3000, "Pretraining steps.", range=(1, None))
    refine_steps: int = leaf(600, "Refinement steps.", range=(1, None))
    eval_every: int = leaf(200, "Evaluate on the val split every this many steps (and at the end).",
                             range=(1, None))
    checkpoint_every: int = leaf(100, "Write a checkpoint every this many steps.", range=(1, None))
    log_every: int = leaf(20, "Log losses (log.jsonl and the console) every this many steps.", range=(1, None))
    augment: bool = leaf(True, "Scale/rotation/flip/colour augmentation of labelled frames.")
    pretrained: str = leaf("", "Checkpoint to refine from (a pretraining run's checkpoint.pt).")
    flow_source: Literal["estimator", "ground_truth"] = leaf(
        "estimator", "Optical flow for refinement: flow.estimator on the crops, or the renderer's exact flow "
        "(an oracle upper bound; synthetic data only).")
    video_gap: int = leaf(3, "Frame gap of video pairs: 3 = 100 ms at 30 fps, ~3x the body motion of consecutive "
                            "frames (docs/results/effect/).", range=(1, None))
    video_clips: int = leaf(0, "Refine on the first this many clips of the video split (0 = all): the amount "
                              "of unannotated video, for gain-against-video curves.", range=(0, None))
    freeze_batchnorm: bool = leaf(True, "Freeze BatchNorm statistics during refinement (METHOD.md 4).")
    control_run: bool = leaf(
        True, "The main job (jobs/refine.py) also runs the anchors-only control beside the refinement, two runs "
        "at once: the same config and seed with no video term (loss.flow_weight, loss.texture_weight and "
        "loss.video_kp2d_weight 0), named <run.name>-control; then prints both and the refinement's change over "
        "the control on test, paired by frame, with its standard error. False runs the refinement alone.")
    max_eval_clips: int = leaf(0, "Evaluate on at most this many clips of the split (0 = all).",
                                 range=(0, None))

    def __post_init__(self) -> None:
        validate_fields(self)


@dataclass(kw_only=True, slots=True)
class ScalingConfig:
    """How a run spreads over a Ray cluster: Ray Train workers, their resources, fault tolerance, storage."""

    num_workers: int = leaf(1, "Ray Train workers (data-parallel replicas; one per GPU on GPU clusters).",
                              range=(1, None))
    use_gpu: bool = leaf(False, "Give each worker a GPU (NCCL, bf16 autocast); false trains on CPUs with gloo.")
    cpus_per_worker: float = leaf(1.0, "CPUs each worker reserves.", range=(0.0, None))
    threads_per_worker: int = leaf(1, "torch threads per worker (1 keeps 2 workers from fighting over 2 cores).",
                                     range=(1, None))
    mixed_precision: Literal["auto", "bf16", "off"] = leaf(
        "auto", "Autocast of the regressor's forward: 'auto' = bf16 on GPU, off on CPU. The body model, "
        "projection and losses always run in float32.")
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = leaf(
        "PACK", "How Ray places the workers: PACK fills a node first (fast all-reduce), SPREAD puts them on "
        "different nodes where it can.")
    max_failures: int = leaf(2, "Worker-group restarts Ray Train allows before the run fails; each restart "
                               "resumes from the last checkpoint.", range=(0, None))
    storage_path: str = leaf(
        "", "Where run folders and checkpoints live: '' = run.output_dir. On a multi-node cluster use shared "
        "storage every node can reach (NFS path, s3://...).")
    ray_address: str = leaf(
        "", "Ray cluster to join: '' = $RAY_ADDRESS or a new local instance; 'auto' = the running cluster.")
    ray_num_cpus: int = leaf(
        0, "Logical CPUs of a new local Ray instance: 0 = physical cores + 4, so Ray Data's tasks find CPUs "
        "beside the workers (FACTS.md: a pipeline hangs when actors take every CPU).", range=(0, None))
    decode_actors: int = leaf(
        1, "Decode+crop actors of the Ray Data pipeline (1 CPU and scaling.decode_gpus each) when decoding and "
        "flow are separate stages, i.e. when either reserves a GPU share; unused on a CPU-only pipeline.",
        range=(1, None))
    decode_gpus: float = leaf(
        0.0, "GPU share each decode actor reserves: 0 = decode on the CPU (DALI CPU for VP8/VP9/MJPEG, PyAV "
        "otherwise); > 0 = NVDEC through DALI 'mixed', e.g. 0.25 = four decode actors per GPU. A share in "
        "[0, 1] or a whole number (Ray's rule). Reserved from the cluster, never taken from a training worker's "
        "GPU (see raymotion/train/plan.py).", range=(0.0, None))
    flow_gpus: float = leaf(
        0.0, "GPU share each flow actor reserves: > 0 runs 'raft_small'/'raft_large'/'dali_of' on that GPU; 0 runs "
        "the estimator on the CPU ('dali_of' has no CPU version and is refused with 0). A share in [0, 1] or a "
        "whole number.", range=(0.0, None))
    schedule_timeout_s: float = leaf(
        300.0, "Seconds a launch waits for the cluster to place its resource plan (workers and pipeline actors; "
        "on an autoscaling cluster this covers starting nodes) before it fails naming what did not fit.",
        range=(1.0, None))
    fail_at_step: int = leaf(
        0, "Fault injection for tests: worker 0 kills its process once when it reaches this step (0 = never).",
        range=(0, None))

    def __post_init__(self) -> None:
        validate_fields(self)
        for key in ("decode_gpus", "flow_gpus"):
            value = getattr(self, key)
            if value > 1 and not float(value).is_integer():  # Ray refuses fractional GPUs above one
                raise ConfigError(key, value, "expected a GPU share in [0, 1] or a whole number of GPUs")


@dataclass(kw_only=True, slots=True)
class PredictConfig:
    """Running a checkpoint on images and videos (`raymotion predict`, jobs/predict.py). The model itself (backbone,
    body model, crop size, box margin) always comes from the checkpoint's own config."""

    focal_length: float = leaf(
        0.0, "Focal length of the full-image camera, pixels, for transl_cam, the 2D joints and the overlay (principal "
        "point at the image centre): 0 = SPIN's 5000 px at 224 px scaled to the image's longer side (the synthetic "
        "benchmark's camera; near-orthographic, so the overlay matches the crop's weak-perspective camera).",
        range=(0.0, None))
    batch_size: int = leaf(32, "Person crops per forward pass of the model.", range=(1, None))
    min_score: float = leaf(
        0.0, "Boxes whose score (from the boxes file) is below this are left out, and counted in the summary.",
        range=(0.0, None))
    overlay: bool = leaf(True, "Write the meshes over the frames: overlay.mp4 for a video, overlay/<image>.png "
                           "for images (headless: OSMesa on CPUs, EGL on GPU machines).")
    side_view: bool = leaf(False, "Add a side view (the meshes turned 90 degrees about the vertical) beside each "
                             "overlay frame.")
    save_vertices: bool = leaf(False, "Also store every mesh's vertices (verts_cam, N x V x 3 float32) and the "
                                 "faces in predictions.npz (large: ~165 kB per person and frame with body.model=anny).")
    save_obj: bool = leaf(False, "Also write one .obj per frame and track (obj/frame_<f>_track_<t>.obj), camera frame.")
    smoothing: Literal["none", "gaussian"] = leaf(
        "none", "Temporal smoothing of the exported parameters of each track over consecutive frames (videos): "
        "'gaussian' smooths rotations (then projected back onto rotations), betas and transl_cam with a Gaussian of "
        "predict.smoothing_sigma frames; 'none' exports the model's per-frame predictions.")
    smoothing_sigma: float = leaf(2.0, "Standard deviation of predict.smoothing='gaussian', frames.",
                                    range=(0.1, 100.0))
    actors: int = leaf(2, "jobs/predict.py: Ray Data actors, each holding the model and predicting one video at a "
                         "time (1 CPU and predict.actor_gpus each).", range=(1, None))
    actor_gpus: float = leaf(0.0, "jobs/predict.py: GPU share each actor reserves (0 = CPU; 0.25 = four actors per "
                               "GPU). A share in [0, 1] or a whole number.", range=(0.0, None))
    actor_threads: int = leaf(1, "jobs/predict.py: torch threads per actor (1 keeps actors from fighting over "
                                "cores).", range=(1, None))

    def __post_init__(self) -> None:
        validate_fields(self)
        if self.actor_gpus > 1 and not float(self.actor_gpus).is_integer():  # Ray refuses fractional GPUs above one
            raise ConfigError("actor_gpus", self.actor_gpus, "expected a GPU share in [0, 1] or a whole number of GPUs")


@dataclass(kw_only=True, slots=True)
class ImportConfig:
    """Bringing the field's datasets and a user's own videos into raymotion's format (`raymotion import`,
    raymotion/importers/, docs/importing.md)."""

    min_track_frames: int = leaf(
        25, "boxes: a track (or a gap-free run of it) shorter than this many frames is dropped and counted (VIBE "
        "drops tracks under 25 frames).", range=(2, None))
    clip_frames: int = leaf(
        100, "spin-npz, humandata: images per imported clip (their images are unrelated frames, grouped in file "
        "order).", range=(1, None))
    spin_scale_factor: float = leaf(
        1.2, "spin-npz: the factor the file's scale holds over the person box's longer side (scale = factor x "
        "max(w, h) / 200): 1.2 for 3DPW, COCO, MPI-INF-3DHP and EFT fits, 0.9 for Human3.6M.", range=(0.1, 10.0))
    fps: float = leaf(30.0, "boxes: frame rate of a folder of frames (a video file's own rate is used).",
                      range=(0.1, None))

    def __post_init__(self) -> None:
        validate_fields(self)


EvalProtocol = Literal["synthetic", "spin", "vibe"]


@dataclass(kw_only=True, slots=True)
class EvalConfig:
    """How a labelled split is scored (raymotion/eval/protocols.py; docs/importing.md)."""

    protocol: EvalProtocol = leaf(
        "synthetic", "Evaluation protocol: 'synthetic' = every frame, the labels' evaluation joints, PVE against the "
        "labelled body, acceleration over whole clips (the embedded benchmark's); 'spin' = SPIN eval.py on 3DPW: "
        "campose_valid frames, the labels' (gendered) joints, no PVE or acceleration; 'vibe' = VIBE/TCMR: frames "
        "with > 6 of the 12 limb keypoints above 0.3 confidence, neutral ground truth (the label pose and shape "
        "on the neutral body), mid-hip root, non-overlapping 16-frame chunks, acceleration error in mm/frame^2.")

    def __post_init__(self) -> None:
        validate_fields(self)


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

    body: BodyConfig = section(BodyConfig)
    run: RunConfig = section(RunConfig)
    render: RenderConfig = section(RenderConfig)
    synth: SynthConfig = section(SynthConfig)
    data: DataConfig = section(DataConfig)
    flow: FlowConfig = section(FlowConfig)
    model: ModelConfig = section(ModelConfig)
    loss: LossConfig = section(LossConfig)
    train: TrainConfig = section(TrainConfig)
    scaling: ScalingConfig = section(ScalingConfig)
    predict: PredictConfig = section(PredictConfig)
    importer: ImportConfig = section(ImportConfig)
    eval: EvalConfig = section(EvalConfig)

    def __post_init__(self) -> None:
        validate_fields(self)
        if self.body.model != "smpl" and self.body.gender != "neutral":
            warnings.warn(f"body.gender={self.body.gender!r} is ignored because body.model="
                          f"{self.body.model!r}; it only applies with body.model=smpl", stacklevel=3)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Config":
        """Inverse of ``to_dict``: strict (unknown keys raise), missing keys keep their defaults. A stored
        config of an older raymotion is read with its ``MOVED_KEYS`` at their new place."""
        return from_dict(cls, _with_moved_keys(d))


def _with_moved_keys(d: Mapping[str, Any]) -> dict[str, Any]:
    """A nested config dict with each ``MOVED_KEYS`` old key moved to its new key (where that is not set)."""
    moved = {k: dict(v) if isinstance(v, Mapping) else v for k, v in d.items()}
    for old, new in MOVED_KEYS.items():
        (old_section, old_leaf), (new_section, new_leaf) = old.split("."), new.split(".")
        source = moved.get(old_section)
        if isinstance(source, dict) and old_leaf in source:
            value = source.pop(old_leaf)
            target = moved.setdefault(new_section, {})
            if isinstance(target, dict):
                target.setdefault(new_leaf, value)
    return moved


def check_refinement(cfg: Config) -> None:
    """The cross-key checks that hold for refinement only (``launch.check_config_only`` applies them to a run,
    ``tune.search_space.load_sweep`` to every corner of a sweep): raise a ConfigError naming the key."""
    source = cfg.data.video_source
    if source in ("ray_data", "precomputed"):  # both carry the Ray Data pipeline's rows
        if cfg.train.flow_source != "estimator":
            raise ConfigError("data.video_source", source, "the Ray Data pipeline estimates flow; with "
                              "train.flow_source=ground_truth use data.video_source=local")
        if cfg.loss.video_kp2d_weight > 0:
            raise ConfigError("data.video_source", source, "loss.video_kp2d_weight > 0 needs the stand-in "
                              "detector's keypoints, which the Ray Data pipeline does not carry; use "
                              "data.video_source=local")


def check_values(values: Mapping[str, Any]) -> None:
    """Check values against the rules of their dotted config keys (type, choices, range), without building
    a config: for functions that take config values as plain arguments, so that they accept exactly what
    the config accepts, e.g. ``check_values({"data.crop_size": crop_size, "data.bbox_scale": 1.3})``.

    Raises:
        ConfigError: a value the key does not accept, naming the key, the value and what it expects.
        UnknownKeyError: a key that is not in the config tree.
    """
    typed_config.check_values(Config, values)


def config_keys(cls: type | None = None) -> list[str]:
    """Every dotted leaf key of ``cls`` (default: the whole tree), e.g. ['body.model', ..., 'render.output']."""
    return typed_config.config_keys(Config if cls is None else cls)


def describe(cls: type | None = None) -> str:
    """One entry per leaf key of ``cls`` (default: the whole tree): `key: type = default [range]`, then its
    help text."""
    return typed_config.describe(Config if cls is None else cls)


# ----------------------------------------------------------------------------- files

def load_config(path: str | Path | None = None,
                overrides: Sequence[str] | Mapping[str, Any] | None = None,
                *, preset: Mapping[str, Any] | None = None, base: Config | None = None) -> Config:
    """Defaults (or ``base``, e.g. a checkpoint's config), then a preset's dotted overrides (e.g.
    ``SYNTH_PRESETS['tiny']``), then the YAML file (nested or dotted keys), then overrides (--set items or a
    dict). An error gets a note naming its source: the --set item of the bad key, or else the file."""
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
        merged.update(flatten(data))
    from_set = isinstance(overrides, Sequence) and not isinstance(overrides, str)
    if not isinstance(overrides, Mapping):
        overrides = parse_set_args(overrides or [])
    set_items = flatten(overrides)
    merged.update(set_items)
    try:
        moved = [key for key in merged if key in MOVED_KEYS]
        if moved:  # an older raymotion's key in a file or --set: say where it is now
            raise MovedKeyError(moved[0], merged[moved[0]], MOVED_KEYS[moved[0]])
        return apply_overrides(base or Config(), merged)  # one pass: cross-field checks see the final values
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
