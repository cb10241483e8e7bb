"""The temporal-context (FiLM) variant, METHOD.md 5: 3-frame windows with the last pair's flow, a FiLM model
that starts as its base, the refinement step's context rule, and sequential evaluation by the same rule."""

import dataclasses
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from torch import nn
from torch.testing import assert_close

from raymotion.body.body_model import load_body_model
from raymotion.body.joints import NUM_SMPL_JOINTS
from raymotion.config import ConfigError, load_config, to_dict
from raymotion.data.crops import crop_box
from raymotion.data.video_pairs import VideoPairs
from raymotion.data.manifest import pair_windows, read_manifest, window_pairs
from raymotion.eval.evaluate import context_chains, predict_in_context
from raymotion.models.regressor import (
    MeanParams,
    RegressorOutput,
    build_regressor,
    film_context,
    freeze_batchnorm,
    num_packed_params,
    push_context,
    start_context,
)
from raymotion.train.components import check_checkpoint_matches, frozen_copy, load_base_weights
from raymotion.train.step import refine_loss, video_params

CROP = 32
NUM_BETAS = 10
P = num_packed_params(NUM_BETAS)


def _body():
    return load_body_model(load_config(overrides={"body.model": "anny_lowres"}).body)


def _images(batch: int, seed: int) -> torch.Tensor:
    return torch.randn(batch, 3, CROP, CROP, generator=torch.Generator().manual_seed(seed))


def _regressor(*, film: bool, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_regressor(backbone="small_cnn", mean_params=MeanParams.default(), film=film)


def _trained_film(seed: int = 0) -> nn.Module:
    """A FiLM regressor whose FiLM is no longer the identity (as after refinement), in eval mode; its heads
    are scaled up so that its predictions, hence its contexts, differ clearly between images."""
    model = _regressor(film=True, seed=seed).eval()
    nn.init.normal_(model.film.mlp[-1].weight, std=0.5)
    for head in (model.head_pose, model.head_betas, model.head_cam):
        nn.init.xavier_uniform_(head.weight)
    return model


def _output(packed_BP: torch.Tensor) -> RegressorOutput:
    """A RegressorOutput whose packed_BP() is ``packed_BP`` (only the packed fields matter for contexts)."""
    batch = packed_BP.shape[0]
    rot6d_BJ6 = packed_BP[:, : NUM_SMPL_JOINTS * 6].reshape(batch, NUM_SMPL_JOINTS, 6)
    return RegressorOutput(rotmats_BJ33=torch.zeros(batch, NUM_SMPL_JOINTS, 3, 3), rot6d_BJ6=rot6d_BJ6,
                           betas_BK=packed_BP[:, NUM_SMPL_JOINTS * 6:-3], cam_B3=packed_BP[:, -3:],
                           feature_BD=torch.zeros(batch, 1))


# ---- the context rule --------------------------------------------------------------------------


def test_push_context_drops_the_oldest_and_appends_the_newest_detached():
    context_B2P = torch.stack([torch.full((1, P), 1.0), torch.full((1, P), 2.0)], dim=1)
    newest = torch.full((1, P), 3.0, requires_grad=True)
    pushed = push_context(context_B2P, _output(newest))
    assert_close(pushed, torch.stack([torch.full((1, P), 2.0), torch.full((1, P), 3.0)], dim=1))
    assert not pushed.requires_grad


def test_start_context_is_the_context_free_prediction_twice():
    model = _trained_film().eval()
    images = _images(2, seed=1)
    with torch.no_grad():
        free = model(images, context_free=True)
    context_B2P = start_context(model, images)
    assert_close(context_B2P, film_context(free, free))
    assert not context_B2P.requires_grad
    with pytest.raises(ValueError, match="context_free=True"):
        model(images, context_B2P, context_free=True)


# ---- a FiLM model starts as its base -----------------------------------------------------------


def test_a_film_model_loaded_from_a_base_predicts_exactly_as_the_base():
    base = _regressor(film=False, seed=0).eval()
    film = _regressor(film=True, seed=1)  # other random weights everywhere until the base is loaded
    load_base_weights(film, base.state_dict())
    film.eval()
    images = _images(3, seed=2)
    with torch.no_grad():
        expected = base(images)
        for got in (film(images, torch.randn(3, 2, P)), film(images, start_context(film, images)),
                    film(images, context_free=True)):
            for name in ("rot6d_BJ6", "betas_BK", "cam_B3", "feature_BD"):
                assert_close(getattr(got, name), getattr(expected, name), rtol=0, atol=0)


def test_loading_lets_through_only_a_base_without_any_film_weights():
    base, film = _regressor(film=False), _regressor(film=True)
    partial = {k: v for k, v in film.state_dict().items() if k != "film.mlp.2.bias"}
    with pytest.raises(RuntimeError, match="film.mlp.2.bias"):  # some FiLM weights: not a base
        load_base_weights(_regressor(film=True), partial)
    no_head = {k: v for k, v in base.state_dict().items() if not k.startswith("head_cam")}
    with pytest.raises(RuntimeError, match="head_cam"):  # any other missing key stays refused
        load_base_weights(_regressor(film=True), no_head)
    with pytest.raises(RuntimeError, match="film.mlp"):  # a FiLM checkpoint into a plain model
        load_base_weights(_regressor(film=False), film.state_dict())
    load_base_weights(_regressor(film=True), film.state_dict())  # FiLM into FiLM: plain strict load


def test_checkpoint_check_allows_a_film_refinement_of_a_plain_base_and_nothing_else():
    plain = load_config(overrides={"model.film": False})
    film = load_config(overrides={"model.film": True})
    plain_state, film_state = {"config": to_dict(plain)}, {"config": to_dict(film)}
    check_checkpoint_matches(film, plain_state, path="base.pt", base=True)
    check_checkpoint_matches(film, film_state, path="base.pt", base=True)
    with pytest.raises(ConfigError, match=r"model.film=False.*base.pt has model.film=True"):
        check_checkpoint_matches(plain, film_state, path="base.pt", base=True)
    with pytest.raises(ConfigError, match=r"model.film=True.*run.pt has model.film=False"):  # resume, evaluate
        check_checkpoint_matches(film, plain_state, path="run.pt")
    other = load_config(overrides={"model.film": True, "model.iterations": 2})
    with pytest.raises(ConfigError, match="model.iterations"):
        check_checkpoint_matches(other, plain_state, path="base.pt", base=True)


# ---- the refinement step -----------------------------------------------------------------------


def _window_batch(batch: int) -> dict[str, torch.Tensor]:
    flow_B2SS = torch.zeros(batch, 2, CROP, CROP)
    return {"image0": _images(batch, seed=10), "image1": _images(batch, seed=11), "image2": _images(batch, seed=12),
            "flow_fwd": flow_B2SS, "flow_bwd": flow_B2SS.clone()}


def _labelled_batch(batch: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(20)
    return {"image": _images(batch, seed=21), "pose_cam": 0.1 * torch.randn(batch, NUM_SMPL_JOINTS, 3, generator=gen),
            "betas": torch.zeros(batch, NUM_BETAS), "joints2d": 0.5 * torch.rand(batch, NUM_SMPL_JOINTS, 2, generator=gen),
            "joints2d_vis": torch.ones(batch, NUM_SMPL_JOINTS),
            "joints3d": 0.3 * torch.randn(batch, NUM_SMPL_JOINTS, 3, generator=gen), "has_smpl": torch.ones(batch),
            "has_joints3d": torch.ones(batch), "joints3d_conf": torch.ones(batch, NUM_SMPL_JOINTS)}


def test_a_film_refinement_step_has_finite_gradients_that_reach_the_film_module():
    body = _body()
    model = _regressor(film=True)
    load_base_weights(model, _regressor(film=False, seed=3).state_dict())
    frozen = frozen_copy(model)
    freeze_batchnorm(model)
    model.train()
    cfg = load_config(overrides={"loss.texture_weight": 0.1}).loss
    loss, logs = refine_loss(model, frozen, body, _window_batch(2), _labelled_batch(2), cfg, step=0, total_steps=10)
    assert torch.isfinite(loss) and {"flow", "texture", "anchor_joints"} <= logs.keys()
    loss.backward()
    grads = {name: p.grad for name, p in model.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    # FiLM's output layer starts at zero; its gradient is not (its input, the context's hidden layer, is not).
    assert grads["film.mlp.2.weight"].abs().sum() > 0 and grads["film.mlp.2.bias"].abs().sum() > 0


def test_a_plain_model_refuses_windows_and_a_film_model_refuses_pairs():
    body = _body()
    cfg = load_config().loss
    plain, film = _regressor(film=False), _regressor(film=True)
    window = _window_batch(2)
    pair = {k: v for k, v in window.items() if k != "image0"}
    with pytest.raises(ValueError, match="film=False"):
        refine_loss(plain, frozen_copy(plain), body, window, _labelled_batch(2), cfg, step=0, total_steps=1)
    with pytest.raises(ValueError, match="needs context_B2P"):
        refine_loss(film, frozen_copy(film), body, pair, _labelled_batch(2), cfg, step=0, total_steps=1)


# ---- sequential evaluation -----------------------------------------------------------------------


def test_context_chains_by_hand():
    clip_index_N = np.array([5, 5, 5, 7, 7, 5])
    frame_N = np.array([2, 0, 1, 0, 1, 3])
    assert context_chains(clip_index_N, frame_N, gap=1) == [[1, 2, 0, 5], [3, 4]]
    assert context_chains(clip_index_N, frame_N, gap=2) == [[1, 0], [2, 5], [3], [4]]


class _Frames:
    """A split stand-in: items with an image, clip_index and frame; ``clip_and_frame`` as LabelledFrames."""

    def __init__(self, clip_index: list[int], frame: list[int]) -> None:
        self.clip_index, self.frame = np.array(clip_index), np.array(frame)
        self.images = _images(len(frame), seed=30)

    def __len__(self) -> int:
        return len(self.frame)

    def __getitem__(self, n: int) -> dict:
        return {"image": self.images[n], "clip_index": int(self.clip_index[n]), "frame": int(self.frame[n])}

    def clip_and_frame(self) -> tuple[np.ndarray, np.ndarray]:
        return self.clip_index, self.frame


@torch.no_grad()
def _unrolled(model: nn.Module, images: list[torch.Tensor]) -> list[torch.Tensor]:
    """The documented rule written out for one clip: [c0, c0], [c0, y0], [y0, y1], ..."""
    free = model(images[0][None], context_free=True)
    history = [free, free]
    for image in images:
        history.append(model(image[None], film_context(history[-2], history[-1])))
    return [out.packed_BP()[0] for out in history[2:]]


@pytest.mark.parametrize("batch_size", [1, 2, 64])
def test_sequential_evaluation_conditions_each_frame_on_its_own_previous_predictions(batch_size):
    model = _trained_film()
    # Two clips, items out of order: clip 3 has frames 0-3, clip 1 frames 0-1.
    frames = _Frames(clip_index=[3, 1, 3, 3, 1, 3], frame=[2, 1, 0, 3, 0, 1])
    got = {}
    for batch, params in predict_in_context(model, frames, batch_size=batch_size, gap=1, device=torch.device("cpu")):
        for clip, frame, packed in zip(batch["clip_index"].tolist(), batch["frame"].tolist(), params.packed_BP()):
            got[(clip, frame)] = packed
    assert sorted(got) == [(1, 0), (1, 1), (3, 0), (3, 1), (3, 2), (3, 3)]
    for clip, order in ((3, [2, 5, 0, 3]), (1, [4, 1])):
        expected = _unrolled(model, [frames.images[n] for n in order])
        for frame, packed in enumerate(expected):
            assert_close(got[(clip, frame)], packed, rtol=1e-4, atol=1e-4)
    # The context matters: frame 3 predicted from the start rule instead of its history differs.
    alone = _unrolled(model, [frames.images[3]])[0]
    assert (alone - got[(3, 3)]).abs().max() > 0.1


def test_the_step_reads_a_window_as_evaluation_reads_a_clip_of_three_frames():
    model = _trained_film()
    frames = _Frames(clip_index=[0, 0, 0], frame=[0, 1, 2])
    window = {"image0": frames.images[0:1], "image1": frames.images[1:2], "image2": frames.images[2:3]}
    with torch.no_grad():
        last_pair = video_params(model, window).packed_BP()
    evaluated = {int(b["frame"][0]): p.packed_BP()[0] for b, p in
                 predict_in_context(model, frames, batch_size=1, gap=1, device=torch.device("cpu"))}
    assert_close(last_pair[0], evaluated[1], rtol=1e-4, atol=1e-4)
    assert_close(last_pair[1], evaluated[2], rtol=1e-4, atol=1e-4)


# ---- video windows -------------------------------------------------------------------------------


@pytest.mark.render
@pytest.mark.parametrize("gap", [1, 2])
def test_video_windows_are_t_minus_gap_t_t_plus_gap_with_the_last_pairs_flow(tiny_benchmark, gap):
    kwargs = {"crop_size": 48, "bbox_scale": 1.3, "flow": "dis", "gap": gap, "max_clips": 2}
    pairs = VideoPairs(tiny_benchmark, **kwargs)
    windows = VideoPairs(tiny_benchmark, frames_per_item=3, **kwargs)
    manifest = read_manifest(tiny_benchmark).to_pylist()
    clips = [row for row in manifest if row["split"] == "video"][:2]
    assert len(windows) == sum(row["frames"] - 2 * gap for row in clips)
    pair_at = {(pairs[i]["clip_index"], pairs[i]["t"]): i for i in range(len(pairs))}
    seen = set()
    for index in range(len(windows)):
        item = windows[index]
        clip, t = item["clip_index"], item["t"]
        seen.add((manifest[clip]["clip_id"], t))
        same, before = pairs[pair_at[(clip, t)]], pairs[pair_at[(clip, t - gap)]]
        for key in ("image1", "image2", "flow_fwd", "flow_bwd", "crop1", "crop2"):  # the last pair, as a pair
            assert_close(item[key], same[key], rtol=0, atol=0)
        assert_close(item["image0"], before["image1"], rtol=0, atol=0)  # frame t - gap
        box = np.array(pq.read_table(tiny_benchmark / manifest[clip]["labels_path"]).to_pydict()["box_xyxy"])[t - gap]
        center_2, side = crop_box(box, scale=1.3)
        np.testing.assert_allclose(item["crop0"].numpy(), [*center_2, side], rtol=1e-6)
    assert seen == {(row["clip_id"], t) for row in clips for t in range(gap, row["frames"] - gap)}


def test_video_windows_refuse_other_sizes(tmp_path):
    with pytest.raises(ValueError, match=r"frames_per_item=4 .*choose one of: 2, 3"):
        VideoPairs(tmp_path, crop_size=32, bbox_scale=1.3, frames_per_item=4)


# ---- launch checks ---------------------------------------------------------------------------------


def test_film_pretraining_is_refused_by_name(tmp_path):
    from raymotion.train.launch import check_config_only

    cfg = load_config(overrides={"model.film": True, "run.output_dir": str(tmp_path)})
    for source in ("ray_data", "precomputed", "local"):  # every video source yields windows for refinement
        check_config_only(dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, video_source=source)),
                          "refine", resume=False)
    with pytest.raises(ConfigError, match=r"model.film=True.*pretrain with model.film=false"):
        check_config_only(cfg, "pretrain", resume=False)


@pytest.mark.parametrize("gap,window", [(1, 4), (2, 5), (1, 16), (3, 7)])
def test_decode_windows_hold_every_3_frame_item_exactly_once(gap, window):
    rows = [{"clip_id": f"c{i}", "path": "", "labels_path": "", "frames": f, "width": 8, "height": 8, "split": "video"}
            for i, f in enumerate((2, 3, 5, 13, 32))]
    windows = pair_windows(rows, split="video", gap=gap, window=window, frames_per_item=3)
    items = [(w["clip_index"], t) for w in windows for t in window_pairs(w, gap=gap, frames_per_item=3)]
    # Items by the frame t of their pair (t, t + gap), t - gap >= 0: t in [gap, frames - gap).
    assert sorted(items) == [(i, t) for i, row in enumerate(rows) for t in range(gap, row["frames"] - gap)]
    for w in windows:
        assert w["first_frame"] + w["num_frames"] <= w["clip_frames"] and w["num_frames"] <= window
        assert all(w["first_frame"] <= t - gap and t + gap < w["first_frame"] + w["num_frames"]
                   for t in window_pairs(w, gap=gap, frames_per_item=3))  # all 3 frames decoded in it
    with pytest.raises(ValueError, match=r"window=4 must be > 2 \* gap=4"):
        pair_windows(rows, split="video", gap=2, window=4, frames_per_item=3)

def test_a_film_run_refines_the_same_base_model_as_its_plain_twin():
    from raymotion.train.launch import defines_base_model, shipped_base_model

    assert not defines_base_model("model.film")  # sweeps over it share one base model
    plain = load_config()  # the defaults: the recipe the shipped small_cnn64_f05 was pretrained with
    film = load_config(overrides={"model.film": True})
    assert shipped_base_model(plain) is not None and shipped_base_model(film) == shipped_base_model(plain)


def test_the_base_model_pretrained_for_a_film_run_has_no_film(tmp_path, monkeypatch):
    from raymotion.train import launch

    started = []
    monkeypatch.setattr(launch, "run_training", lambda cfg, stage, **kwargs: started.append((cfg, stage)))
    cfg = load_config(overrides={"model.film": True, "train.fraction": 0.5, "run.output_dir": str(tmp_path)})
    refined = launch.ensure_pretrained(cfg, resume=False)
    [(pre, stage)] = started
    assert stage == "pretrain" and pre.model.film is False and refined.model.film is True
    assert refined.train.pretrained.endswith(f"{pre.run.name}/checkpoint.pt")


def test_the_bf16_wrapper_passes_the_context_on():
    """The worker wraps the model in Bf16Autocast on GPUs; FiLM's arguments must reach the regressor (CPU bf16 here)."""
    from raymotion.train.update import Bf16Autocast

    model = _trained_film()
    wrapped = Bf16Autocast(model, "cpu")
    out = video_params(wrapped, _window_batch(2))
    assert out.cam_B3.dtype == torch.float32 and out.cam_B3.shape == (4, 3) and torch.isfinite(out.packed_BP()).all()
    with pytest.raises(ValueError, match="needs context_B2P"):
        wrapped(_images(2, seed=0))


def test_paired_change_lines_up_a_film_models_clip_order_with_a_plain_models_frame_order():
    from raymotion.eval.evaluate import _in_frame_order

    # A plain model visits rows in dataset order, a FiLM model chain by chain: the same rows, another order.
    clip_N, frame_N = np.array([1, 0, 1, 0]), np.array([0, 1, 1, 0])
    pred = {"x_N": torch.tensor([10.0, 1.0, 11.0, 0.0])}
    truth = {"y_N": torch.tensor([20.0, 3.0, 21.0, 2.0])}
    sorted_pred, sorted_truth, sorted_clip_N = _in_frame_order(pred, truth, clip_N, frame_N)
    assert sorted_pred["x_N"].tolist() == [0.0, 1.0, 10.0, 11.0]  # (clip 0, frame 0), (0, 1), (1, 0), (1, 1)
    assert sorted_truth["y_N"].tolist() == [2.0, 3.0, 20.0, 21.0] and sorted_clip_N.tolist() == [0, 0, 1, 1]
