"""A training step's parameter update and its precision, in torch alone.

``finite_step`` (backward and update unless the loss or a gradient is not finite, the decision all-reduced
under DDP) and ``Bf16Autocast`` (the regressor under bf16 autocast with float32 outputs) are what the Ray
Train loop (train/worker.py) does around ``step.py``'s loss. They import nothing but torch and the
regressor's output type, so ``tools/gpu_check.py`` checks these very functions on a GPU machine that has
torch only (no Ray, no smplx).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from raymotion.models.regressor import RegressorOutput


def finite_step(loss: Tensor, model: nn.Module, optimiser: torch.optim.Optimizer) -> bool:
    """Backward and update, unless the loss or a gradient is not finite (then nothing is trained on).

    Under torch.distributed (DDP workers) every rank must take the same decision, or the ranks' weights
    drift apart: each flag is all-reduced (any rank non-finite -> every rank skips). The flag lives on the
    loss's device (NCCL all-reduces CUDA tensors only).
    """
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()

    def everywhere(ok: bool) -> bool:
        if not distributed:
            return ok
        flag = torch.tensor(float(ok), device=loss.device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MIN)
        return flag.item() == 1.0

    optimiser.zero_grad(set_to_none=True)
    if not everywhere(bool(torch.isfinite(loss.detach()))):
        return False
    loss.backward()
    if not everywhere(all(bool(torch.isfinite(p.grad).all()) for p in model.parameters() if p.grad is not None)):
        optimiser.zero_grad(set_to_none=True)
        return False
    optimiser.step()
    return True


class Bf16Autocast(nn.Module):
    """Runs the wrapped regressor under bf16 autocast and hands float32 outputs to the body model (the body
    model, projection and losses stay in float32)."""

    def __init__(self, inner: nn.Module, device_type: str) -> None:
        super().__init__()
        self.inner = inner
        self.device_type = device_type

    def forward(self, images_B3HW: Tensor, context_B2P: Tensor | None = None, *,
                context_free: bool = False) -> RegressorOutput:
        with torch.autocast(self.device_type, dtype=torch.bfloat16):
            out = self.inner(images_B3HW, context_B2P, context_free=context_free)
        return RegressorOutput(rotmats_BJ33=out.rotmats_BJ33.float(), rot6d_BJ6=out.rot6d_BJ6.float(),
                               betas_BK=out.betas_BK.float(), cam_B3=out.cam_B3.float(),
                               feature_BD=out.feature_BD.float())
