"""The single-frame regressor (HMR/SPIN style) and its parts."""

from raymotion.models.regressor import (
    BACKBONES,
    FeatureFiLM,
    MeanParams,
    Regressor,
    RegressorOutput,
    build_regressor,
    film_context,
    freeze_batchnorm,
    load_backbone_weights,
    num_packed_params,
    push_context,
    start_context,
)

__all__ = [
    "BACKBONES",
    "FeatureFiLM",
    "MeanParams",
    "Regressor",
    "RegressorOutput",
    "build_regressor",
    "film_context",
    "freeze_batchnorm",
    "load_backbone_weights",
    "num_packed_params",
    "push_context",
    "start_context",
]
