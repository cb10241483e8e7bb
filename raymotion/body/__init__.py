"""Parametric body models in the SMPL layout (users' SMPL files, or the embedded Anny body).

``BodyModel``, ``BodyOutput`` and ``load_body_model`` load ``body_model`` (and smplx) on first use, so
``raymotion.body.joints`` imports where smplx is not installed (tools/gpu_check.py on a torch-only machine).
"""

from __future__ import annotations

from typing import Any

__all__ = ["BodyModel", "BodyOutput", "load_body_model"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from raymotion.body import body_model

        return getattr(body_model, name)
    raise AttributeError(f"module 'raymotion.body' has no attribute {name!r}")
