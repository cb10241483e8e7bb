import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.testing import assert_close

from raymotion.body.joints import NUM_SMPL_JOINTS
from raymotion.geometry import rot6d_to_rotmat
from raymotion.models import (
    BACKBONES,
    MeanParams,
    build_regressor,
    film_context,
    freeze_batchnorm,
    num_packed_params,
)
from raymotion.models.regressor import SMALL_CNN_CHANNELS

NUM_BETAS = 10
CROP = 64


def _images(batch: int, size: int = CROP, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _random_mean_params(seed: int = 0) -> MeanParams:
    gen = torch.Generator().manual_seed(seed)
    return MeanParams(
        rot6d_J6=torch.randn(NUM_SMPL_JOINTS, 6, generator=gen),
        betas_K=torch.randn(NUM_BETAS, generator=gen),
        cam_3=torch.tensor([0.8, 0.1, -0.2]),
    )


def _zero_heads(model: nn.Module) -> None:
    for head in (model.head_pose, model.head_betas, model.head_cam):
        nn.init.zeros_(head.weight)
        nn.init.zeros_(head.bias)


@pytest.mark.parametrize(
    ("backbone", "batch", "feature_dim"),
    [("small_cnn", 2, 256), ("resnet18", 2, 512), ("resnet50", 1, 2048), ("hrnet_w32", 1, 2048)],
)
def test_output_shapes_for_each_backbone(backbone: str, batch: int, feature_dim: int) -> None:
    torch.manual_seed(0)
    model = build_regressor(backbone=backbone, mean_params=MeanParams.default()).eval()
    with torch.no_grad():
        out = model(_images(batch))
    assert out.rotmats_BJ33.shape == (batch, NUM_SMPL_JOINTS, 3, 3)
    assert out.rot6d_BJ6.shape == (batch, NUM_SMPL_JOINTS, 6)
    assert out.betas_BK.shape == (batch, NUM_BETAS)
    assert out.cam_B3.shape == (batch, 3)
    assert out.feature_BD.shape == (batch, feature_dim)
    assert out.packed_BP().shape == (batch, num_packed_params(NUM_BETAS))


def test_predicted_rotations_are_orthonormal_with_det_one() -> None:
    torch.manual_seed(0)
    model = build_regressor(backbone="small_cnn", mean_params=MeanParams.default())
    nn.init.normal_(model.head_pose.weight, std=0.3)  # far from the mean pose
    out = model.eval()(_images(2))
    rotmats = out.rotmats_BJ33
    eye = torch.eye(3).expand_as(rotmats)
    assert_close(rotmats.transpose(-1, -2) @ rotmats, eye, atol=1e-5, rtol=0)
    assert_close(torch.linalg.det(rotmats), torch.ones(2, NUM_SMPL_JOINTS), atol=1e-5, rtol=0)
    assert_close(out.rotmats_BJ33, rot6d_to_rotmat(out.rot6d_BJ6))


def test_zeroed_decoder_returns_the_mean_params() -> None:
    mean = _random_mean_params()
    model = build_regressor(backbone="small_cnn", mean_params=mean)
    _zero_heads(model)
    out = model(_images(2))  # train mode: dropout is active and must not matter
    assert_close(out.rot6d_BJ6, mean.rot6d_J6.expand(2, -1, -1))
    assert_close(out.betas_BK, mean.betas_K.expand(2, -1))
    assert_close(out.cam_B3, mean.cam_3.expand(2, -1))


def test_default_mean_params_are_upright_in_camera_frame() -> None:
    mean = MeanParams.default()
    rotmats = rot6d_to_rotmat(mean.rot6d_J6)
    rx_pi = torch.tensor([[1.0, 0, 0], [0, math.cos(math.pi), -math.sin(math.pi)], [0, math.sin(math.pi), math.cos(math.pi)]])
    assert_close(rotmats[0], rx_pi)
    assert_close(rotmats[1:], torch.eye(3).expand(NUM_SMPL_JOINTS - 1, 3, 3))
    assert_close(mean.betas_K, torch.zeros(NUM_BETAS))
    assert_close(mean.cam_3, torch.tensor([0.9, 0.0, 0.0]))


def test_mean_params_npz_round_trip(tmp_path) -> None:
    mean = _random_mean_params()
    path = tmp_path / "mean.npz"
    mean.to_npz(path)
    loaded = MeanParams.from_npz(path)
    assert_close(loaded.rot6d_J6, mean.rot6d_J6)
    assert_close(loaded.betas_K, mean.betas_K)
    assert_close(loaded.cam_3, mean.cam_3)


def test_mean_params_npz_with_wrong_keys_names_them(tmp_path) -> None:
    path = tmp_path / "spin.npz"
    np.savez(path, pose=np.zeros(144), shape=np.zeros(10), cam=np.zeros(3))
    with pytest.raises(ValueError, match=r"pose_6d.*betas.*it has \['cam', 'pose', 'shape'\]"):
        MeanParams.from_npz(path)


def test_unknown_backbone_lists_choices() -> None:
    with pytest.raises(ValueError, match="vit_h") as info:
        build_regressor(backbone="vit_h", mean_params=MeanParams.default())
    for name in BACKBONES:
        assert name in str(info.value)


def test_num_betas_must_match_mean_params() -> None:
    with pytest.raises(ValueError, match="num_betas=16"):
        build_regressor(backbone="small_cnn", num_betas=16, mean_params=MeanParams.default())


def test_missing_weights_file_is_named(tmp_path) -> None:
    path = tmp_path / "nowhere" / "backbone.pt"
    with pytest.raises(FileNotFoundError, match="nowhere/backbone.pt"):
        build_regressor(backbone="small_cnn", mean_params=MeanParams.default(), weights_path=path)


def test_weights_file_round_trip_reproduces_outputs(tmp_path) -> None:
    torch.manual_seed(0)
    source = build_regressor(backbone="small_cnn", mean_params=MeanParams.default()).eval()
    path = tmp_path / "backbone.pt"
    torch.save(source.backbone.state_dict(), path)
    torch.manual_seed(1)
    fresh = build_regressor(backbone="small_cnn", mean_params=MeanParams.default(), weights_path=path).eval()
    images = _images(2)
    with torch.no_grad():
        assert_close(fresh(images).feature_BD, source(images).feature_BD)
        fresh.load_state_dict(source.state_dict())
        assert_close(fresh(images).rotmats_BJ33, source(images).rotmats_BJ33)


def test_imagenet_classifier_keys_are_dropped_when_loading(tmp_path) -> None:
    import torchvision

    classifier_net = torchvision.models.resnet18(weights=None)  # has fc.weight / fc.bias
    path = tmp_path / "resnet18_imagenet.pt"
    torch.save(classifier_net.state_dict(), path)
    model = build_regressor(backbone="resnet18", mean_params=MeanParams.default(), weights_path=path)
    assert_close(model.backbone.conv1.weight, classifier_net.conv1.weight)


def test_mismatched_weights_file_names_keys(tmp_path) -> None:
    path = tmp_path / "small.pt"
    state = build_regressor(backbone="small_cnn", mean_params=MeanParams.default()).backbone.state_dict()
    state["extra.weight"] = torch.zeros(1)
    del state["0.weight"]
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"missing keys \(first: \['0.weight'\]\).*unexpected keys \(first: \['extra.weight'\]\)"):
        build_regressor(backbone="small_cnn", mean_params=MeanParams.default(), weights_path=path)


def _bn_stats(model: nn.Module) -> list[torch.Tensor]:
    return [
        t.clone()
        for m in model.modules()
        if isinstance(m, nn.BatchNorm2d)
        for t in (m.running_mean, m.running_var, m.num_batches_tracked)
    ]


def test_freeze_batchnorm_survives_train_mode() -> None:
    torch.manual_seed(0)
    model = build_regressor(backbone="small_cnn", mean_params=MeanParams.default())
    control = build_regressor(backbone="small_cnn", mean_params=MeanParams.default())
    assert freeze_batchnorm(model) == len(SMALL_CNN_CHANNELS)
    before = _bn_stats(model)
    model.train()  # must not undo the freeze
    for seed in range(3):
        model(_images(2, seed=seed) * 3.0 + 1.0)
        control(_images(2, seed=seed) * 3.0 + 1.0)
    for stat_before, stat_after in zip(before, _bn_stats(model), strict=True):
        assert torch.equal(stat_before, stat_after)
    assert any(not torch.equal(a, b) for a, b in zip(before, _bn_stats(control), strict=True))
    assert all(not m.training for m in model.modules() if isinstance(m, nn.BatchNorm2d))

    # BN normalises with its running statistics (eval behaviour) ...
    images = _images(2, seed=7)
    with torch.no_grad():
        train_feature = model(images).feature_BD
        model.eval()
        assert_close(train_feature, model(images).feature_BD)
    # ... while its affine parameters still train and dropout still follows model.train().
    model.train()
    out = model(images)
    out.cam_B3.sum().backward()
    assert model.backbone[1].weight.grad is not None
    assert model.mlp.training and model.mlp[2].training


def test_freeze_batchnorm_warns_without_batchnorm() -> None:
    with pytest.warns(UserWarning, match="no BatchNorm"):
        assert freeze_batchnorm(nn.Linear(2, 2)) == 0


def test_film_at_init_is_the_identity() -> None:
    torch.manual_seed(0)
    plain = build_regressor(backbone="small_cnn", mean_params=MeanParams.default()).eval()
    with_film = build_regressor(backbone="small_cnn", mean_params=MeanParams.default(), film=True).eval()
    result = with_film.load_state_dict(plain.state_dict(), strict=False)
    assert result.unexpected_keys == [] and all(k.startswith("film.") for k in result.missing_keys)
    images = _images(2)
    context = torch.randn(2, 2, num_packed_params(NUM_BETAS))
    with torch.no_grad():
        expected = plain(images)
        got = with_film(images, context)
    assert_close(got.feature_BD, expected.feature_BD)
    assert_close(got.rotmats_BJ33, expected.rotmats_BJ33)
    assert_close(got.cam_B3, expected.cam_B3)


def test_film_context_is_detached_and_conditions_the_feature() -> None:
    torch.manual_seed(0)
    model = build_regressor(backbone="small_cnn", mean_params=MeanParams.default(), film=True).eval()
    nn.init.normal_(model.film.mlp[-1].weight, std=0.1)
    previous = model(_images(2, seed=1), torch.zeros(2, 2, num_packed_params(NUM_BETAS)))
    context = film_context(previous, previous)
    assert context.shape == (2, 2, num_packed_params(NUM_BETAS)) and not context.requires_grad
    images = _images(2, seed=2)
    out_a = model(images, context)
    out_b = model(images, torch.zeros_like(context))
    assert not torch.allclose(out_a.feature_BD, out_b.feature_BD)


def test_film_context_is_required_exactly_when_film_is_on() -> None:
    film = build_regressor(backbone="small_cnn", mean_params=MeanParams.default(), film=True)
    plain = build_regressor(backbone="small_cnn", mean_params=MeanParams.default())
    with pytest.raises(ValueError, match=r"needs context_B2P of shape \(2, 2, 157\), got None"):
        film(_images(2))
    with pytest.raises(ValueError, match="film=False"):
        plain(_images(2), torch.zeros(2, 2, num_packed_params(NUM_BETAS)))
