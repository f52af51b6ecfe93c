"""Exponential backoff, shared by the lander and the process supervisors (a leaf: imports nothing)."""

from __future__ import annotations


class Backoff:
    """Exponential backoff between tries, capped, reset on success."""

    def __init__(self, first: float = 0.05, cap: float = 5.0) -> None:
        self.first, self.cap, self.current = first, cap, first

    def next(self) -> float:
        wait, self.current = self.current, min(self.current * 2, self.cap)
        return wait

    def reset(self) -> None:
        self.current = self.first
