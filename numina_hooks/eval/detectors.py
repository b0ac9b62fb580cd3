"""Counters: per-frame object counts of a video, one noun at a time.

Every counter follows the :class:`Counter` protocol::

    counts = counter.count(frames, ["cats", "dogs"])   # frames: uint8 [F, H, W, 3]
    counts == {"cats": [3, 3, 2, ...], "dogs": [2, 2, 2, ...]}   # one int per frame

and describes itself with ``counter.settings`` (a JSON-friendly dict written into every
result, so a figure always says which detector and thresholds produced it).

- :class:`ZeroShotDetector`: a zero-shot detector from ``transformers``, run per frame
  with one text query per noun (GroundingDINO by default, OWLv2 as an option); boxes
  scoring above the thresholds are kept, duplicates of one noun are suppressed by
  non-maximum suppression, and the count is the number of boxes left.
- :class:`ToyCounter`: the toy world's exact counter (connected components per colour)
  behind the same protocol; toy nouns ("discs", "red disc") map to categories.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Protocol, Sequence, runtime_checkable

import numpy as np
import torch

from ..media import check_frames

__all__ = [
    "Counter",
    "ToyCounter",
    "ZeroShotDetector",
    "DETECTOR_MODELS",
    "make_counter",
    "nms",
    "box_iou",
    "toy_category",
]

DETECTOR_MODELS = {
    "grounding-dino": "IDEA-Research/grounding-dino-tiny",
    "owlv2": "google/owlv2-base-patch16-ensemble",
}
"""Default checkpoint per detector kind (``--detector``); any compatible id or folder works."""


@runtime_checkable
class Counter(Protocol):
    """Counts objects named by nouns in each frame of a video."""

    settings: dict
    """JSON-friendly description (kind, model, thresholds) recorded with every result."""

    def count(self, frames: np.ndarray, nouns: Sequence[str]) -> dict[str, list[int]]:
        """``frames`` uint8 [F, H, W, 3] -> ``{noun: [count in frame 0, frame 1, ...]}``."""
        ...


# ---------------------------------------------------------------------------- toy world
def toy_category(noun: str) -> Optional[str]:
    """The toy category a noun names, or None: ``"discs"``, ``"red disc"``, ``"Squares"``
    -> ``"disc"``, ``"disc"``, ``"square"`` (the last word, singular or plural)."""
    from ..toy.world import CATEGORIES

    words = noun.lower().split()
    if not words:
        return None
    last = words[-1]
    for cat in CATEGORIES:
        if last in (cat.name, cat.noun, cat.plural):
            return cat.name
    return None


class ToyCounter:
    """The toy world's exact counter (:func:`numina_hooks.toy.counter.count_objects`)."""

    def __init__(self, min_area: int = 4, max_distance: float = 110.0):
        self.min_area = min_area
        self.max_distance = max_distance
        self.settings = {"kind": "toy", "min_area": min_area, "max_distance": max_distance}

    def count(self, frames: np.ndarray, nouns: Sequence[str]) -> dict[str, list[int]]:
        from ..toy.counter import count_objects

        frames = _native_toy_size(check_frames(frames))
        categories = {}
        for noun in nouns:
            cat = toy_category(noun)
            if cat is None:
                from ..toy.world import CATEGORIES

                raise ValueError(
                    f"the toy counter cannot count {noun!r}: toy nouns are "
                    f"{sorted({w for c in CATEGORIES for w in (c.noun, c.plural)})}"
                )
            categories[noun] = cat
        per_frame = count_objects(frames, self.min_area, self.max_distance)
        return {noun: [int(f[cat]) for f in per_frame] for noun, cat in categories.items()}


def _native_toy_size(frames: np.ndarray) -> np.ndarray:
    """Frames written scaled up by an integer factor k (``media.write_video`` does so for
    small frames, nearest neighbour) -> the toy world's size, sampling each k x k block's centre."""
    from ..toy.world import SIZE

    h, w = frames.shape[1:3]
    if h == w and h > SIZE and h % SIZE == 0:
        k = h // SIZE
        return np.ascontiguousarray(frames[:, k // 2::k, k // 2::k])
    return frames


# ---------------------------------------------------------------------------- boxes
def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of boxes ``a`` [N, 4] and ``b`` [M, 4] in (x0, y0, x1, y1): [N, M]."""
    area_a = (a[:, 2] - a[:, 0]).clamp(min=0) * (a[:, 3] - a[:, 1]).clamp(min=0)
    area_b = (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    union = area_a[:, None] + area_b[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(inter))


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy non-maximum suppression: indices of the kept boxes, best score first.

    A box is dropped when its IoU with a higher-scoring kept box exceeds ``iou_threshold``
    (ties in score keep the earlier box). ``boxes`` [N, 4] (x0, y0, x1, y1), ``scores`` [N].
    """
    if boxes.numel() == 0:
        return torch.zeros(0, dtype=torch.long)
    order = torch.argsort(scores, descending=True, stable=True)
    iou = box_iou(boxes[order].float(), boxes[order].float())
    keep: list[int] = []
    suppressed = torch.zeros(len(order), dtype=torch.bool)
    for i in range(len(order)):
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= iou[i] > iou_threshold
    return order[torch.tensor(keep, dtype=torch.long)]


@dataclass
class Detections:
    """Kept boxes of one noun in one frame (after thresholds and NMS)."""

    boxes: torch.Tensor  # [N, 4] pixels (x0, y0, x1, y1)
    scores: torch.Tensor  # [N]


def select_boxes(boxes: torch.Tensor, scores: torch.Tensor, *, threshold: float, nms_iou: float,
                 image_size: tuple[int, int], max_box_fraction: Optional[float] = None) -> Detections:
    """Thresholds, optional large-box filter and NMS for one noun in one frame.

    ``boxes`` [Q, 4] in pixels, ``scores`` [Q]; ``image_size`` is (height, width). Boxes
    are clipped to the image; a box whose area exceeds ``max_box_fraction`` of the frame
    (a detector's "the whole group" box) is dropped when that is set.
    """
    h, w = image_size
    keep = scores > threshold
    boxes, scores = boxes[keep].float(), scores[keep].float()
    if len(boxes):
        boxes = torch.stack([boxes[:, 0].clamp(0, w), boxes[:, 1].clamp(0, h),
                             boxes[:, 2].clamp(0, w), boxes[:, 3].clamp(0, h)], dim=1)
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        ok = area > 0
        if max_box_fraction is not None:
            ok &= area <= max_box_fraction * h * w
        boxes, scores = boxes[ok], scores[ok]
    idx = nms(boxes, scores, nms_iou)
    return Detections(boxes[idx], scores[idx])


# ---------------------------------------------------------------------------- detectors
class ZeroShotDetector:
    """A zero-shot detector from ``transformers``, one text query per noun, per frame.

    ``kind="grounding-dino"`` (default checkpoint ``IDEA-Research/grounding-dino-tiny``)
    queries ``"<noun>."``; a box's score is its highest probability over the *noun's own*
    tokens (not the ``.`` or special tokens, which the processor's own post-processing
    includes and which light up on arbitrary boxes). A box is kept when that score exceeds
    both ``box_threshold`` and ``text_threshold`` (with one noun per query the text
    threshold is the minimum token probability of the phrase, so it only bites when set
    above the box threshold).

    ``kind="owlv2"`` (``google/owlv2-base-patch16-ensemble``) queries ``"a photo of a
    <noun>"``; a box's score is the sigmoid of its logit for that query, kept above
    ``box_threshold`` (``text_threshold`` is unused and recorded as such).

    Kept boxes of one noun are de-duplicated by NMS at ``nms_iou``; optionally boxes larger
    than ``max_box_fraction`` of the frame are dropped first. Frames are run in batches of
    ``batch_size`` with the same query.

    Load with ``ZeroShotDetector(kind, model_id)`` (``AutoProcessor`` +
    ``AutoModelForZeroShotObjectDetection.from_pretrained``), or hand over a model and a
    processor you built (``ZeroShotDetector(kind, model=..., processor=...)``).
    """

    def __init__(self, kind: str = "grounding-dino", model_id: Optional[str] = None, *,
                 box_threshold: Optional[float] = None, text_threshold: float = 0.25,
                 nms_iou: float = 0.5, max_box_fraction: Optional[float] = None,
                 batch_size: int = 8, device: Optional[str] = None, dtype: torch.dtype = torch.float32,
                 model: Any = None, processor: Any = None):
        if kind not in DETECTOR_MODELS:
            raise ValueError(f"detector kind {kind!r}: expected one of {sorted(DETECTOR_MODELS)} (or use the toy counter)")
        if box_threshold is None:
            box_threshold = 0.35 if kind == "grounding-dino" else 0.2
        for name, value in (("box_threshold", box_threshold), ("text_threshold", text_threshold),
                            ("nms_iou", nms_iou)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name}={value!r}: expected a probability in [0, 1]")
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r}: expected >= 1")
        self.kind = kind
        self.model_id = model_id or (None if model is not None else DETECTOR_MODELS[kind])
        self.box_threshold = float(box_threshold)
        self.text_threshold = float(text_threshold)
        self.nms_iou = float(nms_iou)
        self.max_box_fraction = max_box_fraction
        self.batch_size = batch_size
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if model is None or processor is None:
            if model is not None or processor is not None:
                raise ValueError("pass both model= and processor=, or neither (to load model_id)")
            model, processor = self._load(self.model_id, dtype)
        self.model = model.to(self.device).eval()
        self.processor = processor
        self.settings = {
            "kind": kind,
            "model": self.model_id or type(model).__name__,
            "box_threshold": self.box_threshold,
            "text_threshold": self.text_threshold if kind == "grounding-dino" else None,
            "nms_iou": self.nms_iou,
            "max_box_fraction": max_box_fraction,
            "query": "<noun>." if kind == "grounding-dino" else "a photo of a <noun>",
        }

    @staticmethod
    def _load(model_id: str, dtype: torch.dtype):
        try:
            from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor
        except ImportError as err:  # pragma: no cover - transformers is a dependency of the diffusers extra
            raise ImportError("the zero-shot detectors need transformers: pip install 'numina-hooks[diffusers]'") from err
        processor = AutoProcessor.from_pretrained(model_id)
        model = AutoModelForZeroShotObjectDetection.from_pretrained(model_id, dtype=dtype)
        return model, processor

    # -- public
    def count(self, frames: np.ndarray, nouns: Sequence[str]) -> dict[str, list[int]]:
        return {noun: [len(d.boxes) for d in dets] for noun, dets in self.detect(frames, nouns).items()}

    @torch.no_grad()
    def detect(self, frames: np.ndarray, nouns: Sequence[str]) -> dict[str, list[Detections]]:
        """Kept boxes per noun and frame: ``{noun: [Detections of frame 0, ...]}``."""
        frames = check_frames(frames)
        h, w = frames.shape[1:3]
        out: dict[str, list[Detections]] = {}
        for noun in nouns:
            dets: list[Detections] = []
            for start in range(0, len(frames), self.batch_size):
                batch = [f for f in frames[start:start + self.batch_size]]
                boxes, scores = self._raw(batch, noun, (h, w))
                threshold = max(self.box_threshold, self.text_threshold) if self.kind == "grounding-dino" \
                    else self.box_threshold
                dets.extend(select_boxes(b, s, threshold=threshold, nms_iou=self.nms_iou, image_size=(h, w),
                                         max_box_fraction=self.max_box_fraction)
                            for b, s in zip(boxes, scores))
            out[noun] = dets
        return out

    # -- per model family: boxes [B, Q, 4] in pixels, scores [B, Q]
    def _raw(self, images: list, noun: str, size: tuple[int, int]):
        if self.kind == "grounding-dino":
            return self._raw_grounding_dino(images, noun, size)
        return self._raw_owlv2(images, noun, size)

    def _model_inputs(self, inputs) -> dict:
        dtype = next(self.model.parameters()).dtype
        return {k: (v.to(self.device, dtype) if torch.is_floating_point(v) else v.to(self.device))
                for k, v in inputs.items()}

    def _raw_grounding_dino(self, images, noun, size):
        query = f"{noun.strip().lower()}."
        inputs = self.processor(images=images, text=[query] * len(images), return_tensors="pt")
        outputs = self.model(**self._model_inputs(inputs))
        columns = grounding_noun_columns(inputs["input_ids"][0], self.processor.tokenizer)
        if not columns:
            raise ValueError(f"the detector's tokenizer turned {query!r} into no noun tokens; check the noun")
        probs = outputs.logits.float().sigmoid()[..., columns]  # [B, Q, |noun tokens|]
        scores = probs.max(dim=-1).values
        boxes = _cxcywh_to_xyxy(outputs.pred_boxes.float())
        h, w = size
        return boxes * torch.tensor([w, h, w, h], device=boxes.device), scores

    def _raw_owlv2(self, images, noun, size):
        query = f"a photo of a {noun.strip().lower()}"
        inputs = self.processor(text=[[query]] * len(images), images=images, return_tensors="pt")
        outputs = self.model(**self._model_inputs(inputs))
        scores = outputs.logits.float()[..., 0].sigmoid()  # [B, Q]
        boxes = _cxcywh_to_xyxy(outputs.pred_boxes.float())
        # OWLv2 pads every image to a square at the bottom and right: boxes are relative to it
        side = float(max(size))
        return boxes * side, scores


def grounding_noun_columns(input_ids: torch.Tensor, tokenizer) -> list[int]:
    """Positions of the query's noun tokens: everything but special tokens and ``.``."""
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    dot = tokenizer.convert_tokens_to_ids(".")
    return [i for i, t in enumerate(input_ids.tolist()) if t not in special and t != dot]


def _cxcywh_to_xyxy(b: torch.Tensor) -> torch.Tensor:
    cx, cy, w, h = b.unbind(-1)
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1)


def make_counter(name: str = "grounding-dino", model_id: Optional[str] = None, **kwargs) -> Counter:
    """A counter by name: ``"toy"``, ``"grounding-dino"`` or ``"owlv2"`` (``kwargs`` go to
    :class:`ZeroShotDetector`; ``None`` values are left at their defaults)."""
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    if name == "toy":
        return ToyCounter()
    return ZeroShotDetector(name, model_id, **kwargs)
