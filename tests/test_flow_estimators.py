"""Flow estimators: the registry, RAFT's weights, padding and normalisation, DALI's block-flow upsampling.

RAFT runs with randomly initialised torchvision weights saved to a temporary file (no download), 2 iterations,
small frames. DALI's optical flow needs a GPU with an optical-flow engine: here only its clear error on a
machine without one and the pure upsampling are tested; the known-shift check is marked gpu.
"""

import typing
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn
from torchvision.models.optical_flow import raft_large, raft_small

from raymotion.config import ConfigError, FlowConfig, load_config
from raymotion.flow.estimator import (
    FLOW_ESTIMATORS,
    DISFlow,
    make_flow_estimator,
    upsample_grid_flow,
)
from raymotion.flow.raft import RAFTFlow, crop_flow, pad_for_raft

NUM_ITERS = 2  # RAFT refinement iterations in these tests: enough to run the whole network, cheap on 2 cores


@pytest.fixture(scope="module")
def raft_small_weights(tmp_path_factory) -> str:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("raft") / "raft_small_random.pth"
    torch.save(raft_small(weights=None).state_dict(), path)
    return str(path)


def _frames(height: int, width: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    frame0 = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    return frame0, np.roll(frame0, 2, axis=1)


# ---- registry and config ------------------------------------------------------------------------------

def test_registry_lists_every_source_and_matches_the_config_choices():
    assert set(FLOW_ESTIMATORS) == {"dis", "farneback", "raft_small", "raft_large", "dali_of"}
    choices = typing.get_args(typing.get_type_hints(FlowConfig)["estimator"])
    assert set(choices) == set(FLOW_ESTIMATORS)


def test_an_unknown_estimator_is_refused_by_the_config_listing_the_choices():
    choices = "dis, farneback, raft_small, raft_large, dali_of"
    with pytest.raises(ConfigError, match=f"estimator='pwc' is invalid: expected one of: {choices}"):
        make_flow_estimator(FlowConfig(estimator="pwc"))


def test_the_default_flow_config_builds_the_cpu_estimator():
    estimator = make_flow_estimator(FlowConfig())
    assert isinstance(estimator, DISFlow) and estimator.tag == "dis"
    frame0, frame1 = _frames(32, 40)
    flows = estimator.batch(np.stack([frame0, frame0]), np.stack([frame1, frame1]))
    assert flows.shape == (2, 32, 40, 2) and flows.dtype == np.float32
    np.testing.assert_array_equal(flows[0], estimator(frame0, frame1))


def test_flow_config_keys_load_and_check_their_range():
    cfg = load_config(overrides={"flow.estimator": "raft_small", "flow.raft_weights": "w.pth", "flow.raft_iters": "4"})
    assert (cfg.flow.estimator, cfg.flow.raft_weights, cfg.flow.raft_iters, cfg.flow.device) == \
        ("raft_small", "w.pth", 4, "auto")
    with pytest.raises(ConfigError, match="flow.raft_iters=0"):
        load_config(overrides={"flow.raft_iters": "0"})


# ---- RAFT: weights --------------------------------------------------------------------------------------

def test_raft_without_weights_path_names_the_key_and_where_to_get_them():
    with pytest.raises(ValueError, match=r"flow\.raft_weights=''.*raft_small_C_T_V2-01064c6d\.pth"):
        make_flow_estimator(FlowConfig(estimator="raft_small"))


def test_raft_missing_file_names_the_key_and_the_path(tmp_path):
    missing = tmp_path / "nope.pth"
    cfg = FlowConfig(estimator="raft_large", raft_weights=str(missing))
    with pytest.raises(FileNotFoundError, match=r"flow\.raft_weights=.*nope\.pth.*Raft_Large_Weights\.DEFAULT\.url"):
        make_flow_estimator(cfg)


def test_raft_large_state_dict_given_to_raft_small_is_refused(tmp_path):
    path = tmp_path / "large.pth"
    torch.save(raft_large(weights=None).state_dict(), path)
    cfg = FlowConfig(estimator="raft_small", raft_weights=str(path))
    with pytest.raises(ValueError, match=r"flow\.raft_weights=.*does not fit torchvision's raft_small.*"
                                         r"flow\.estimator=raft_large"):
        make_flow_estimator(cfg)


def test_raft_weights_that_are_not_a_state_dict_are_refused(tmp_path):
    path = tmp_path / "junk.pth"
    path.write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match=r"flow\.raft_weights=.*junk\.pth.*cannot be read"):
        make_flow_estimator(FlowConfig(estimator="raft_small", raft_weights=str(path)))


# ---- RAFT: padding, normalisation, output -----------------------------------------------------------------

def test_pad_for_raft_centres_the_frame_and_replicates_edges():
    # 3 x 5 -> multiples of 8 with min_side 8: 8 x 8;
    # top = (8 - 3) // 2 = 2, bottom 3, left = (8 - 5) // 2 = 1, right 2.
    image_1133 = torch.arange(15, dtype=torch.float32).reshape(1, 1, 3, 5)
    padded, pads = pad_for_raft(image_1133, min_side=8)
    assert pads == (2, 3, 1, 2) and padded.shape == (1, 1, 8, 8)
    assert padded[0, 0, 2, 1:6].tolist() == [0, 1, 2, 3, 4]  # first image row sits at padded row 2, col 1
    assert padded[0, 0, 0].tolist() == [0, 0, 1, 2, 3, 4, 4, 4]  # replicated above and at both sides
    assert padded[0, 0, 7].tolist() == [10, 10, 11, 12, 13, 14, 14, 14]  # replicated below
    torch.testing.assert_close(crop_flow(padded, pads), image_1133)


def test_pad_for_raft_respects_the_minimum_side_and_leaves_fitting_frames_alone():
    padded, pads = pad_for_raft(torch.zeros(2, 3, 61, 77), min_side=128)
    assert pads == (33, 34, 25, 26) and padded.shape == (2, 3, 128, 128)
    image = torch.zeros(1, 3, 128, 136)
    padded, pads = pad_for_raft(image, min_side=128)
    assert pads == (0, 0, 0, 0) and padded is image


class _CoordinateFlow(nn.Module):
    """Stands in for RAFT: the flow at each padded pixel is its own (x, y); records its inputs."""

    corr_block = SimpleNamespace(num_levels=1)  # min side 8 * 2 * 2 ** 0 = 16

    def forward(self, image1, image2, num_flow_updates):
        self.seen = (image1, image2, num_flow_updates)
        n, _, h, w = image1.shape
        ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32),
                                indexing="ij")
        return [torch.zeros(n, 2, h, w), torch.stack([xs, ys]).expand(n, 2, h, w)]


def test_raft_flow_crops_back_the_right_window_and_normalises_to_minus_one_one():
    # 3 x 5 frame, min side 16 -> padded 16 x 16: top = (16 - 3) // 2 = 6, left = (16 - 5) // 2 = 5.
    model = _CoordinateFlow()
    estimator = RAFTFlow(model, name="fake", num_iters=3, device=torch.device("cpu"), tag="fake")
    frame0 = np.zeros((3, 5, 3), np.uint8)
    frame0[0, 0] = 255
    flow_HW2 = estimator(frame0, frame0.copy())
    assert flow_HW2.shape == (3, 5, 2) and flow_HW2.dtype == np.float32
    assert flow_HW2[0, 0].tolist() == [5.0, 6.0]  # (left, top): the last prediction, not shifted
    assert flow_HW2[2, 4].tolist() == [9.0, 8.0]
    image1, _, num_updates = model.seen
    assert image1.shape == (1, 3, 16, 16) and num_updates == 3
    assert image1[0, :, 6, 5].tolist() == [1.0, 1.0, 1.0]  # 255 -> 1 at the frame's place in the canvas
    assert image1[0, :, 8, 9].tolist() == [-1.0, -1.0, -1.0]  # 0 -> -1


def test_raft_small_runs_on_a_frame_not_divisible_by_8(raft_small_weights):
    cfg = FlowConfig(estimator="raft_small", raft_weights=raft_small_weights, raft_iters=NUM_ITERS, device="cpu")
    estimator = make_flow_estimator(cfg)
    assert estimator.tag == f"raft_small-it{NUM_ITERS}-raft_small_random"
    frame0, frame1 = _frames(61, 77)
    flow_HW2 = estimator(frame0, frame1)
    assert flow_HW2.shape == (61, 77, 2) and flow_HW2.dtype == np.float32
    assert np.isfinite(flow_HW2).all()


def test_raft_small_matches_the_bare_network_when_no_padding_is_needed(raft_small_weights):
    cfg = FlowConfig(estimator="raft_small", raft_weights=raft_small_weights, raft_iters=NUM_ITERS, device="cpu")
    estimator = make_flow_estimator(cfg)
    frame0, frame1 = _frames(128, 128, seed=1)
    model = raft_small(weights=None).eval()
    model.load_state_dict(torch.load(raft_small_weights, weights_only=True))
    to_input = lambda f: torch.from_numpy(f).permute(2, 0, 1)[None].float() / 255 * 2 - 1  # torchvision's transform
    with torch.inference_mode():
        expected = model(to_input(frame0), to_input(frame1), num_flow_updates=NUM_ITERS)[-1][0].permute(1, 2, 0)
    torch.testing.assert_close(torch.from_numpy(estimator(frame0, frame1)), expected, atol=1e-4, rtol=1e-4)


# ---- DALI's hardware optical flow ------------------------------------------------------------------------

def test_upsample_grid_flow_interpolates_between_block_centres_without_rescaling():
    # One row of two 4x4 blocks: (0, 0) and (4, 8). Pixel x reads u = (x + 0.5) / 4 - 0.5 clamped to [0, 1]:
    # x = 0..7 -> 0, 0, 0.125, 0.375, 0.625, 0.875, 1, 1.
    flow_hw2 = np.array([[[0.0, 0.0], [4.0, 8.0]]])
    flow_HW2 = upsample_grid_flow(flow_hw2, grid=4, height=4, width=8)
    expected_dx = [0.0, 0.0, 0.5, 1.5, 2.5, 3.5, 4.0, 4.0]
    assert flow_HW2.shape == (4, 8, 2) and flow_HW2.dtype == np.float32
    for row in range(4):
        np.testing.assert_allclose(flow_HW2[row, :, 0], expected_dx)
        np.testing.assert_allclose(flow_HW2[row, :, 1], [2 * v for v in expected_dx])


def test_upsample_grid_flow_keeps_a_uniform_motion_and_handles_partial_blocks():
    # 6 x 7 image: ceil(6 / 4) x ceil(7 / 4) = 2 x 2 blocks; a uniform 3 px shift stays 3 px everywhere.
    flow_HW2 = upsample_grid_flow(np.full((2, 2, 2), 3.0), grid=4, height=6, width=7)
    assert flow_HW2.shape == (6, 7, 2)
    np.testing.assert_allclose(flow_HW2, 3.0)
    # Vertical ramp: block rows 0 and 1 hold dy = 0 and 4; rows y = 0..5 read v = 0, 0, 0.125, 0.375, 0.625, 0.875.
    ramp = np.zeros((2, 2, 2))
    ramp[1, :, 1] = 4.0
    np.testing.assert_allclose(upsample_grid_flow(ramp, grid=4, height=6, width=7)[:, 0, 1], [0, 0, 0.5, 1.5, 2.5, 3.5])


def test_upsample_grid_flow_rejects_a_grid_of_the_wrong_size():
    with pytest.raises(ValueError, match=r"4x4-block flow of a 8x8 image has shape \(2, 2, 2\)"):
        upsample_grid_flow(np.zeros((3, 2, 2)), grid=4, height=8, width=8)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_dali_of_without_a_gpu_says_so_and_names_the_alternatives():
    with pytest.raises(ValueError, match=r"flow\.estimator='dali_of'.*no CUDA device.*'dis'.*'raft_small'"):
        make_flow_estimator(FlowConfig(estimator="dali_of"))


def test_dali_of_refuses_the_cpu_device():
    with pytest.raises(ValueError, match=r"flow\.device='cpu'.*GPU.*'dis'"):
        make_flow_estimator(FlowConfig(estimator="dali_of", device="cpu"))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA and an optical-flow engine")
def test_dali_of_recovers_a_known_shift_with_the_right_sign():
    rng = np.random.default_rng(0)
    texture = rng.integers(0, 256, (64, 80, 3), dtype=np.uint8).repeat(4, axis=0).repeat(4, axis=1)  # 256 x 320
    frame0 = np.ascontiguousarray(texture[16:240, 16:304])
    frame1 = np.ascontiguousarray(texture[13:237, 11:299])  # content moves +5 px in x, +3 px in y
    flow_HW2 = make_flow_estimator(FlowConfig(estimator="dali_of"))(frame0, frame1)
    assert flow_HW2.shape == (224, 288, 2)
    np.testing.assert_allclose(np.median(flow_HW2[16:-16, 16:-16].reshape(-1, 2), axis=0), [5.0, 3.0], atol=0.5)
