"""The worker's batch path with batches on a device other than the CPU (torch's 'meta' device stands in for
CUDA): Ray's iter_torch_batches delivers batches on the worker's device, so nothing may assume the CPU.
Before: the worker multiplied them by ImageNet constants built once on the CPU, which fails on a GPU at step 1."""

import numpy as np
import pytest
import torch

from raymotion.data.crops import IMAGENET_MEAN, IMAGENET_STD, normalise_batch_images, normalise_image

pytest.importorskip("ray")
from raymotion.train.worker import pair_rows_to_batch  # noqa: E402


def rows(device: str, *, size: int = 4, batch: int = 2) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    image = torch.randint(0, 256, (batch, size, size, 3), dtype=torch.uint8, generator=generator)
    flow = torch.randn(batch, 2, size, size, generator=generator)
    return {"image1": image.to(device), "image2": image.flip(0).to(device), "flow_fwd": flow.to(device),
            "flow_bwd": (-flow).to(device), "crop1": torch.zeros(batch, 3, device=device)}


def test_pair_batches_stay_on_the_device_they_arrive_on():
    batch = pair_rows_to_batch(rows("meta"))
    assert {name: value.device.type for name, value in batch.items()} == dict.fromkeys(batch, "meta")
    assert batch["image1"].shape == (2, 3, 4, 4) and batch["image1"].dtype == torch.float32
    assert batch["flow_fwd"].dtype == torch.float32


def test_batch_normalisation_matches_the_per_image_one_and_hand_values():
    cpu = rows("cpu")
    batch = pair_rows_to_batch(cpu)
    for b in range(2):
        torch.testing.assert_close(batch["image1"][b], normalise_image(cpu["image1"][b].numpy()))
    white = normalise_batch_images(torch.full((1, 1, 1, 3), 255, dtype=torch.uint8))
    expected = [(1.0 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)]  # (1 - 0.485) / 0.229 = 2.2489...
    torch.testing.assert_close(white.flatten(), torch.tensor(expected))
    assert np.isclose(expected[0], 2.2489082969)


def test_window_rows_keep_their_first_frame_and_pair_rows_stay_pairs():
    """model.film's rows carry image0 (frame t - gap); it is normalised like the others, and pairs get none."""
    cpu = rows("cpu")
    window = pair_rows_to_batch({**cpu, "image0": cpu["image2"]})
    torch.testing.assert_close(window["image0"], window["image2"])
    assert sorted(window) == ["flow_bwd", "flow_fwd", "image0", "image1", "image2"]
    assert "image0" not in pair_rows_to_batch(cpu)
