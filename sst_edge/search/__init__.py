"""Hardware-aware search over a trained supernet, launched as an NNI experiment under a budget."""

from .experiment import SearchSettings, run_search

__all__ = ["SearchSettings", "run_search"]
