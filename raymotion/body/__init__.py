"""Parametric body models in the SMPL layout (users' SMPL files, or the embedded Anny body)."""

from raymotion.body.body_model import BodyModel, BodyOutput, load_body_model

__all__ = ["BodyModel", "BodyOutput", "load_body_model"]
