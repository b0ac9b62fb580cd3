"""The NUMINA method: counts, noun tokens, head selection, countable layout, refinement."""

from .config import NuminaConfig
from .counts import parse_counts
from .tokens import noun_token_columns

__all__ = ["NuminaConfig", "parse_counts", "noun_token_columns"]
