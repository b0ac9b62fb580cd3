"""The NUMINA method: counts, noun tokens, head selection, countable layout, refinement."""

from .config import NuminaConfig
from .counts import parse_counts
from .heads import score_self_attention_heads, select_cross_attention
from .identify import layouts_from_attention
from .layout import Layout, layout_from_attention, layout_from_maps
from .refine import Edit, RefinedFrame, layout_counts, refine_layouts
from .tokens import noun_token_columns

__all__ = ["NuminaConfig", "parse_counts", "noun_token_columns", "score_self_attention_heads",
           "select_cross_attention", "Layout", "layout_from_attention", "layouts_from_attention",
           "layout_from_maps",
           "Edit", "RefinedFrame", "refine_layouts", "layout_counts"]
