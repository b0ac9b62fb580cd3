"""``out.numina``: what NUMINA saw and did in one generation."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np


@dataclass
class NuminaReport:
    """The report attached to the pipeline output as ``out.numina``.

    Grids are in latent patches (``[F, H, W]``). ``layouts_before`` are phase 1's
    instance labels (0 background, 1..n instances); ``layouts_after`` the refined
    layouts phase 2 was guided by (equal to before when no edit was needed).
    """

    prompt: str
    counts_asked: dict
    counts_found: dict = field(default_factory=dict)  # noun -> per-frame counts in phase 1
    phase2_ran: bool = False
    reason: str = ""
    reference_step: Optional[int] = None
    reference_layer: Optional[int] = None
    reading_layers: list = field(default_factory=list)  # every block phase 1 read (l* among them)
    reference_transformer: Optional[str] = None
    num_steps: Optional[int] = None
    token_columns: dict = field(default_factory=dict)
    self_heads: dict = field(default_factory=dict)  # noun -> per frame: its chosen self head
    # within its block (-1: none had a region on its focus)
    self_layers: dict = field(default_factory=dict)  # noun -> per frame: that head's block
    from_cross: dict = field(default_factory=dict)  # noun -> per frame: its layout is read
    # from its cross-attention (``fallback_layout``: the chosen head's instances did not stand
    # out of their background, or were fewer than its cross map's strong components:
    # ``cross_fallback_excess``)
    cross_heads: dict = field(default_factory=dict)  # noun -> per frame
    layouts_before: dict = field(default_factory=dict)  # noun -> int32 [F, H, W]
    layouts_after: dict = field(default_factory=dict)  # noun -> int32 [F, H, W]
    edits: dict = field(default_factory=dict)  # noun -> {"removed": n, "added_circle": n, "added_copy": n, "borrowed": frames}
    timings: dict = field(default_factory=dict)  # seconds: phase1, identify, refine, phase2, total
    model_calls: dict = field(default_factory=dict)  # phase1, phase2
    guided_steps: list = field(default_factory=list)
    seed: Optional[int] = None  # the seed numina-hooks drew when the caller gave no noise, or LayoutSeeds chose
    seed_search: list = field(default_factory=list)  # (seed, edits_needed) of each seed LayoutSeeds tried
    cache: dict = field(default_factory=dict)  # cache statistics, when a cache plugin ran
    pca_images: dict = field(default_factory=dict)  # noun -> float32 [F, H, W, 3]: its chosen
    # head's regions in colour (paper preset: the frame's head's PCA image)
    cross_maps: dict = field(default_factory=dict)  # noun -> float32 [F, H, W]

    def __repr__(self) -> str:
        """A few lines: what was asked, found and done (``summary()`` has every field)."""
        total = self.timings.get("total")
        lines = [
            f"NuminaReport(prompt={self.prompt!r}",
            f"  counts_asked={self.counts_asked}",
            f"  counts_found (phase 1, per latent frame)={self.counts_found}",
            f"  phase2_ran={self.phase2_ran}: {self.reason}",
            f"  reference step {self.reference_step} of {self.num_steps}, layer {self.reference_layer}"
            + (f", total {total:.2f} s" if total is not None else ""),
            "  details: .summary(); pictures: .save(folder))",
        ]
        return "\n".join(lines)

    def summary(self) -> dict:
        """The JSON-friendly part of the report."""
        return {
            "prompt": self.prompt,
            "counts_asked": self.counts_asked,
            "counts_found": self.counts_found,
            "counts_after": {n: [int(f.max()) for f in lay] for n, lay in self.layouts_after.items()},
            "phase2_ran": self.phase2_ran,
            "reason": self.reason,
            "reference_step": self.reference_step,
            "reference_layer": self.reference_layer,
            "reading_layers": self.reading_layers,
            "reference_transformer": self.reference_transformer,
            "num_steps": self.num_steps,
            "token_columns": self.token_columns,
            "self_heads": self.self_heads,
            "self_layers": self.self_layers,
            "from_cross": self.from_cross,
            "cross_heads": self.cross_heads,
            "edits": self.edits,
            "timings": {k: round(v, 4) for k, v in self.timings.items()},
            "model_calls": self.model_calls,
            "guided_steps": self.guided_steps,
            "seed": self.seed,
            "seed_search": [list(pair) for pair in self.seed_search],
            "cache": self.cache,
        }

    def save(self, folder) -> Path:
        """Write ``summary.json`` and one picture per frame: for each noun its chosen
        self-attention head (its regions in colour; the paper preset: the head's PCA colour
        image), its cross-attention map, its layout before and after refinement. Returns the
        folder."""
        from PIL import Image, ImageDraw

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "summary.json").write_text(json.dumps(self.summary(), indent=2))
        nouns = [noun for noun in self.layouts_before if noun in self.pca_images]
        if not nouns:
            return folder
        from PIL import ImageFont

        font = ImageFont.load_default(size=12)
        frames, h, w, _ = self.pca_images[nouns[0]].shape
        cell = max(4, 96 // max(h, w))
        tiles_w, tiles_h = w * cell, h * cell
        gap, title_h, pad = 12, 18, 8
        columns = 4 * len(nouns)
        legend = [
            "NOUN head k: the noun's chosen self-attention head (block b), its regions in colour "
            "(paper preset: PCA colours, similar colour = same object)",
            "NOUN cross: the noun's cross-attention, blue (low) to yellow (high)",
            "NOUN before / after: instances in phase 1's layout / after refinement (one colour each; white = none)",
        ]
        width = max(pad + columns * (tiles_w + gap), 2 * pad + max(int(font.getlength(t)) for t in legend))
        height = pad + title_h + tiles_h + pad + 16 * (len(legend) + 1) + pad
        for f in range(frames):
            canvas = Image.new("RGB", (width, height), "white")
            draw = ImageDraw.Draw(canvas)
            tiles = []
            for noun in nouns:
                heads, layers = self.self_heads.get(noun, []), self.self_layers.get(noun, [])
                head = f"{heads[f]} (block {layers[f]})" if f < min(len(heads), len(layers)) else "?"
                if f < len(self.from_cross.get(noun, [])) and self.from_cross[noun][f]:
                    head = f"{head}, layout from cross"
                tiles.append((f"{noun} head {head}", _to_rgb(self.pca_images[noun][f])))
                tiles.append((f"{noun} cross", _heat(self.cross_maps[noun][f])))
                tiles.append((f"{noun} before", _labels_rgb(self.layouts_before[noun][f])))
                tiles.append((f"{noun} after", _labels_rgb(self.layouts_after[noun][f])))
            for i, (title, img) in enumerate(tiles):
                pic = Image.fromarray(img).resize((tiles_w, tiles_h), Image.NEAREST)
                x = pad + i * (tiles_w + gap)
                canvas.paste(pic, (x, pad + title_h))
                draw.rectangle([x - 1, pad + title_h - 1, x + tiles_w, pad + title_h + tiles_h], outline="gray")
                draw.text((x, pad), _fit_text(title, font, tiles_w + gap - 2), fill="black", font=font)
            y = pad + title_h + tiles_h + pad
            draw.text((pad, y), f"latent frame {f + 1} of {frames}", fill="black", font=font)
            for k, text in enumerate(legend):
                draw.text((pad, y + 16 * (k + 1)), text, fill="dimgray", font=font)
            canvas.save(folder / f"frame_{f:02d}.png")
        return folder


def _fit_text(text: str, font, width: int) -> str:
    """``text`` cut (with "..") to fit ``width`` pixels."""
    if font.getlength(text) <= width:
        return text
    while text and font.getlength(text + "..") > width:
        text = text[:-1]
    return text + ".."


def _to_rgb(img: np.ndarray) -> np.ndarray:
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def _heat(m: np.ndarray) -> np.ndarray:
    lo, hi = float(m.min()), float(m.max())
    x = (m - lo) / (hi - lo) if hi > lo else np.zeros_like(m)
    return _to_rgb(np.stack([x, x ** 2, 1 - x], axis=-1))


_PALETTE = np.array(
    [[255, 255, 255], [230, 25, 75], [60, 180, 75], [0, 130, 200], [245, 130, 48], [145, 30, 180],
     [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212], [0, 128, 128], [170, 110, 40]],
    dtype=np.uint8,
)


def _labels_rgb(labels: np.ndarray) -> np.ndarray:
    idx = np.where(labels > 0, (labels - 1) % (len(_PALETTE) - 1) + 1, 0)
    return _PALETTE[idx]
