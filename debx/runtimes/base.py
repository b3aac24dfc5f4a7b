"""One interface for every backend, in the spirit of Polygraphy's runners.

A runner is activated once (heavy imports and session/engine creation happen there, never at import time),
fed NumPy arrays by name, and deactivated. Every runner takes the same feeds:

    input_ids       int64 (B, N)
    attention_mask  int64 (B, N)   1 = token, 0 = padding
    token_type_ids  int64 (B, N)   only for models with type_vocab_size > 0

and returns a dict of float32 NumPy arrays keyed by output name (``logits``, ``last_hidden_state``, ...).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Mapping

import numpy as np


class Runner(ABC):
    """activate -> infer* -> deactivate. Also usable as a context manager."""

    name: str = "runner"

    def __init__(self) -> None:
        self.is_active = False

    # -- lifecycle -------------------------------------------------------------------------------------
    def activate(self) -> "Runner":
        if not self.is_active:
            self.activate_impl()
            self.is_active = True
        return self

    def deactivate(self) -> None:
        if self.is_active:
            self.deactivate_impl()
            self.is_active = False

    def __enter__(self) -> "Runner":
        return self.activate()

    def __exit__(self, *exc) -> None:
        self.deactivate()

    # -- inference -------------------------------------------------------------------------------------
    def infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if not self.is_active:
            raise RuntimeError(f"{self.name}: infer() called before activate()")
        return self.infer_impl(feeds)

    @property
    @abstractmethod
    def input_names(self) -> list[str]:
        """Names of the inputs this runner needs (subset of the standard feeds)."""

    @abstractmethod
    def activate_impl(self) -> None: ...

    @abstractmethod
    def infer_impl(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def deactivate_impl(self) -> None:
        """Release sessions/engines. Default: nothing to release."""

    def describe(self) -> dict:
        """Facts for reports (backend, precision, provider, versions)."""
        return {"runner": self.name}

    def select_feeds(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {k: feeds[k] for k in self.input_names}
