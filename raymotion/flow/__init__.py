"""Optical flow estimators (frozen, inference only)."""

from raymotion.flow.estimator import FLOW_ESTIMATORS, FlowEstimator, make_flow_estimator

__all__ = ["FLOW_ESTIMATORS", "FlowEstimator", "make_flow_estimator"]
