"""Recursion strategies: how a method unrolls a segment, what it is trained on, and when it halts."""

from strategies.base import Carry, LossOutput, Progress, ReasoningStep, RecursionStrategy, SegmentOutput
from strategies.cgar import CGAR
from strategies.hrm import HRM, ContinueHalting
from strategies.rsm import RSM
from strategies.trm import TRM
from strategies.trm_ablations import TRMOneStepGradient, TRMWithContinueACT

__all__ = [
    "CGAR",
    "HRM",
    "Carry",
    "ContinueHalting",
    "LossOutput",
    "Progress",
    "ReasoningStep",
    "RecursionStrategy",
    "RSM",
    "SegmentOutput",
    "TRM",
    "TRMOneStepGradient",
    "TRMWithContinueACT",
]
