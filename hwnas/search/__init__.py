"""The search: bilevel loop, derivation, retraining. No Ray here (see ``hwnas.distributed``)."""

from .loop import SearchResult, run_search

__all__ = ["SearchResult", "run_search"]
