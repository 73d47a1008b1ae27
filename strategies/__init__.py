"""Recursion strategies: how a method unrolls a segment, what it is trained on, and when it halts."""

from strategies.base import Carry, LossOutput, Progress, RecursionStrategy, SegmentOutput
from strategies.cgar import CGAR
from strategies.hrm import HRM
from strategies.rsm import RSM
from strategies.trm import TRM

__all__ = ["CGAR", "HRM", "Carry", "LossOutput", "Progress", "RecursionStrategy", "RSM", "SegmentOutput", "TRM"]
