"""CLIP score of a video: 100 x cosine(image, text), averaged over frames (paper, Sec. 5).

The paper averages frame-wise CLIP scores without naming the CLIP model; absolute values
depend on it (the default below is recorded in every result), so compare scores taken
with the same model only.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch

from ..media import check_frames

__all__ = ["ClipScorer", "DEFAULT_CLIP_MODEL"]

DEFAULT_CLIP_MODEL = "openai/clip-vit-base-patch32"


class ClipScorer:
    """``scorer.score(frames, prompt) -> float``: mean over frames of 100 x cos(image, text).

    Load with ``ClipScorer(model_id)`` (``CLIPModel`` / ``CLIPProcessor.from_pretrained``) or
    pass ``model=`` and ``processor=`` built yourself. The text is truncated to CLIP's 77
    tokens, as CLIP scores always are.
    """

    def __init__(self, model_id: Optional[str] = None, *, batch_size: int = 16, device: Optional[str] = None,
                 model: Any = None, processor: Any = None):
        if (model is None) != (processor is None):
            raise ValueError("pass both model= and processor=, or neither (to load model_id)")
        self.model_id = model_id or (None if model is not None else DEFAULT_CLIP_MODEL)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if model is None:
            from transformers import CLIPModel, CLIPProcessor

            processor = CLIPProcessor.from_pretrained(self.model_id)
            model = CLIPModel.from_pretrained(self.model_id)
        self.model = model.to(self.device).eval()
        self.processor = processor
        self.batch_size = batch_size
        self.settings = {"model": self.model_id or type(model).__name__, "scale": 100,
                         "reduction": "mean over frames"}

    @torch.no_grad()
    def frame_scores(self, frames: np.ndarray, prompt: str) -> list[float]:
        """100 x cos(image, text) per frame (uint8 [F, H, W, 3])."""
        frames = check_frames(frames)
        text = self.processor(text=[prompt], return_tensors="pt", padding=True, truncation=True,
                              max_length=getattr(self.model.config.text_config, "max_position_embeddings", 77))
        text = {k: v.to(self.device) for k, v in text.items()}
        t = _features(self.model.get_text_features(**text))
        t = t / t.norm(dim=-1, keepdim=True)
        out: list[float] = []
        for start in range(0, len(frames), self.batch_size):
            images = self.processor(images=list(frames[start:start + self.batch_size]), return_tensors="pt")
            pixels = images["pixel_values"].to(self.device, next(self.model.parameters()).dtype)
            v = _features(self.model.get_image_features(pixel_values=pixels)).float()
            v = v / v.norm(dim=-1, keepdim=True)
            out.extend((100.0 * (v @ t.float().T)[:, 0]).tolist())
        return out

    def score(self, frames: np.ndarray, prompt: str) -> float:
        """The video's CLIP score: :meth:`frame_scores` averaged."""
        scores = self.frame_scores(frames, prompt)
        return float(sum(scores) / len(scores))


def _features(x) -> torch.Tensor:
    # transformers 5 may return a model output object rather than a bare tensor
    if isinstance(x, torch.Tensor):
        return x
    for name in ("pooler_output", "text_embeds", "image_embeds"):
        value = getattr(x, name, None)
        if isinstance(value, torch.Tensor):
            return value
    raise TypeError(f"unexpected CLIP feature output {type(x).__name__}")
