"""The toy world and the tiny text-to-video model that ships with numina-hooks.

Importing this package needs only numpy and scipy; the model (``numina_hooks.toy.model``)
needs the ``diffusers`` extra. See docs/toy.md.

The evaluation package (``numina_hooks.eval``) builds on this one (toy benchmark, counter,
model); this package never imports it: videos are scored with ``numina_hooks.metrics``.
"""

from .counter import count_objects, label_objects
from .world import CATEGORIES, Clip, Prompt, held_out_prompts, is_held_out, make_clip

__all__ = ["CATEGORIES", "Clip", "Prompt", "make_clip", "held_out_prompts", "is_held_out",
           "count_objects", "label_objects"]
