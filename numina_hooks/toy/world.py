"""The toy world: short procedural clips where counting is exact.

A clip is ``NUM_FRAMES`` frames of ``SIZE x SIZE`` RGB on a plain dark background, with
1 to 3 object categories and 1 to ``MAX_PER_CATEGORY`` objects of each (at most
``MAX_OBJECTS`` in all). Each object is a fixed 6x6 sprite (red disc, blue square, yellow
triangle) whose top-left corner sits on the model's 2x2 patch grid and which moves at a
constant velocity of -1, 0 or +1 patch (``PATCH`` pixels) a frame along each axis, so
every object covers exactly 3x3 = 9 patches in every frame. Objects never overlap;
objects of *different* categories may touch, and objects of the *same* category keep at
least one whole background patch between them (8-connectivity), so that connected
components per colour count them exactly, in pixels and at the patch grid alike
(:func:`patch_masks`). Placement is biased to put objects next to one another, so
touching and nearly touching objects are common and instance separation is not
trivially positional.

Everything is a pure function of a seed::

    clip = make_clip(seed=3)
    clip.frames        # uint8 [F, H, W, 3]
    clip.instances     # int16 [F, H, W], 0 = background, k = object k (1-based)
    clip.categories    # category name of object k at index k - 1
    clip.counts        # {"disc": 3, "square": 2}, what the caption asks for
    clip.caption       # "three red discs and two blue squares drifting"

Count combinations are split between training and evaluation by a stable hash
(:func:`is_held_out`): training clips never show a held-out combination, and
:func:`held_out_prompts` draws evaluation prompts from them only.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

NUM_FRAMES = 4
SIZE = 24
PATCH = 2  # the toy transformer's spatial patch size: counting is defined on this grid
SPRITE = 6
GAP = PATCH  # background pixels kept between objects of one category (one whole patch)
MAX_PER_CATEGORY = 6  # the default count range's ("v2"); see CountRange
MAX_OBJECTS = 8
BACKGROUND = (24, 24, 32)


@dataclass(frozen=True)
class CountRange:
    """How many objects a clip may hold: 1 to ``max_per_category`` of each category, at most
    ``max_objects`` in all. ``"v2"`` (6 and 8) is the world of the shipped weights; ``"small"``
    (4 and 6) is a less crowded world for training experiments. A model is evaluated on the
    held-out combinations of the range it was trained on."""

    name: str
    max_per_category: int
    max_objects: int


COUNT_RANGES = {r.name: r for r in (CountRange("v2", MAX_PER_CATEGORY, MAX_OBJECTS),
                                    CountRange("small", 4, 6))}


def count_range(spec: "str | CountRange" = "v2") -> CountRange:
    """The :class:`CountRange` named ``spec`` (a CountRange is returned as it is)."""
    if isinstance(spec, CountRange):
        return spec
    if spec not in COUNT_RANGES:
        raise ValueError(f"count range {spec!r} is unknown: expected one of {sorted(COUNT_RANGES)} "
                         "(toy.world.COUNT_RANGES)")
    return COUNT_RANGES[spec]


@dataclass(frozen=True)
class Category:
    """One object category: its name (the key in count dicts), words and colour."""

    name: str
    noun: str
    plural: str
    colour_word: str
    rgb: tuple[int, int, int]
    sprite: np.ndarray = field(repr=False, compare=False)


def _disc() -> np.ndarray:
    y, x = np.mgrid[0:SPRITE, 0:SPRITE]
    return (x - 2.5) ** 2 + (y - 2.5) ** 2 <= 7.5  # 28 px, touches all 9 patches


def _square() -> np.ndarray:
    return np.ones((SPRITE, SPRITE), dtype=bool)  # 36 px


def _triangle() -> np.ndarray:
    m = np.zeros((SPRITE, SPRITE), dtype=bool)  # 26 px, a pyramid touching all 9 patches
    for row, (a, b) in enumerate(((2, 4), (1, 5), (1, 5), (0, 6), (0, 6), (0, 6))):
        m[row, a:b] = True
    return m


CATEGORIES: tuple[Category, ...] = (
    Category("disc", "disc", "discs", "red", (220, 50, 50), _disc()),
    Category("square", "square", "squares", "blue", (50, 90, 235), _square()),
    Category("triangle", "triangle", "triangles", "yellow", (235, 215, 45), _triangle()),
)
CATEGORY_BY_NAME = {c.name: c for c in CATEGORIES}


def category_of_noun(noun: str) -> str | None:
    """Category name of a noun as a prompt writes it (``"discs"`` -> ``"disc"``), or None."""
    for name in (noun, noun[:-1] if noun.endswith("s") else noun, noun[:-2] if noun.endswith("es") else noun):
        if name in CATEGORY_BY_NAME:
            return name
    return None


NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight")
_JOINERS = ("and", "beside", "next to", "with", "near", "alongside")
_SUFFIXES = ("", "drifting", "moving", "floating", "slowly drifting", "moving around",
             "on a dark background", "gliding")
_SINGULAR_DETERMINERS = ("a", "one", "a single")


@dataclass
class Clip:
    """One generated clip with its ground truth (see the module docstring for shapes)."""

    seed: int
    frames: np.ndarray
    instances: np.ndarray
    categories: list[str]
    counts: dict[str, int]
    caption: str


@dataclass(frozen=True)
class Prompt:
    """An evaluation prompt: the caption and the count per category name it asks for."""

    text: str
    counts: dict[str, int]


def combo_key(counts: dict[str, int]) -> str:
    """Canonical string of a count combination, e.g. ``"disc=3,square=2"``."""
    return ",".join(f"{k}={counts[k]}" for k in sorted(counts) if counts[k] > 0)


def is_held_out(counts: dict[str, int]) -> bool:
    """True for the ~1 in 8 count combinations reserved for evaluation.

    Keyed by a SHA-1 of :func:`combo_key`, so the split is stable across Python
    versions and processes. Every single (category, count) pair still occurs in training
    inside other combinations; only the exact combination is unseen.
    """
    digest = hashlib.sha1(combo_key(counts).encode()).digest()
    return digest[0] % 8 == 0


_CATEGORY_NUMBER_WEIGHTS = (0.4, 0.4, 0.2)  # clips with 1, 2, 3 categories


def sample_counts(rng: np.random.Generator, counts_in: "str | CountRange" = "v2") -> dict[str, int]:
    """Draw 1-3 categories (40/40/20%) and 1 to the range's ``max_per_category`` objects
    each (uniform), rejecting draws over its ``max_objects`` in all."""
    limits = count_range(counts_in)
    while True:
        k = int(rng.choice(len(CATEGORIES), p=_CATEGORY_NUMBER_WEIGHTS)) + 1
        names = [CATEGORIES[i].name for i in sorted(rng.choice(len(CATEGORIES), k, replace=False))]
        counts = {n: int(rng.integers(1, limits.max_per_category + 1)) for n in names}
        if sum(counts.values()) <= limits.max_objects:
            return counts


def _phrase(name: str, n: int, rng: np.random.Generator) -> str:
    c = CATEGORY_BY_NAME[name]
    if n == 1:
        det = _SINGULAR_DETERMINERS[int(rng.integers(len(_SINGULAR_DETERMINERS)))]
        return f"{det} {c.colour_word} {c.noun}"
    return f"{NUMBER_WORDS[n]} {c.colour_word} {c.plural}"


def make_caption(counts: dict[str, int], rng: np.random.Generator) -> str:
    """A varied English caption stating each count as a word, in random order."""
    names = list(counts)
    rng.shuffle(names)
    phrases = [_phrase(n, counts[n], rng) for n in names]
    if len(phrases) == 1:
        text = phrases[0]
    elif len(phrases) == 2:
        text = f"{phrases[0]} {_JOINERS[int(rng.integers(len(_JOINERS)))]} {phrases[1]}"
    else:
        text = f"{phrases[0]}, {phrases[1]} and {phrases[2]}"
    suffix = _SUFFIXES[int(rng.integers(len(_SUFFIXES)))]
    return f"{text} {suffix}".strip()


def _place(counts: dict[str, int], rng: np.random.Generator, tries: int = 200):
    """Top-left corners [F, 2] (row, col) per object, or None when the scene does not fit.

    Corners lie on the ``PATCH`` grid and objects move at a constant velocity of -1, 0 or
    +1 patch a frame per axis (half of the objects stand still along each axis); a
    proposal is rejected when it leaves the frame, overlaps any object, or comes within
    ``GAP`` pixels (8-connectivity) of an object of its own category, in any frame.
    """
    occupied = np.zeros((NUM_FRAMES, SIZE, SIZE), dtype=bool)
    # Same-category exclusion zones, in a canvas padded by GAP pixels on each side.
    zones = {n: np.zeros((NUM_FRAMES, SIZE + 2 * GAP, SIZE + 2 * GAP), dtype=bool) for n in counts}
    objects: list[tuple[str, np.ndarray]] = []
    order = [n for n in counts for _ in range(counts[n])]
    rng.shuffle(order)
    cells = (SIZE - SPRITE) // PATCH  # top-left corner, in patches: 0..cells
    steps = np.arange(NUM_FRAMES)
    for name in order:
        sprite = CATEGORY_BY_NAME[name].sprite
        zone = zones[name]
        for _ in range(tries):
            vy, vx = (int(v) if rng.random() < 0.5 else 0 for v in rng.choice((-1, 1), size=2))
            if objects and rng.random() < 0.5:
                # Propose right next to an existing object: touching / nearly touching.
                other = objects[int(rng.integers(len(objects)))][1]
                reach = SPRITE // PATCH + 1
                dy, dx = (int(v) for v in rng.integers(-reach, reach + 1, size=2))
                r0, c0 = int(other[0, 0]) // PATCH + dy, int(other[0, 1]) // PATCH + dx
            else:
                r0, c0 = (int(v) for v in rng.integers(0, cells + 1, size=2))
            r1, c1 = r0 + (NUM_FRAMES - 1) * vy, c0 + (NUM_FRAMES - 1) * vx
            if min(r0, r1, c0, c1) < 0 or max(r0, r1, c0, c1) > cells:
                continue
            traj = np.stack([r0 + steps * vy, c0 + steps * vx], axis=1) * PATCH
            if any((occupied[f, r : r + SPRITE, c : c + SPRITE] & sprite).any()
                   or zone[f, r + GAP : r + GAP + SPRITE, c + GAP : c + GAP + SPRITE].any()
                   for f, (r, c) in enumerate(traj)):
                continue
            for f, (r, c) in enumerate(traj):
                occupied[f, r : r + SPRITE, c : c + SPRITE] |= sprite
                # the whole box grown by GAP: no two objects of a category share or touch a patch
                zone[f, r : r + SPRITE + 2 * GAP, c : c + SPRITE + 2 * GAP] = True
            objects.append((name, traj))
            break
        else:
            return None
    return objects


def render(objects: list[tuple[str, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Frames uint8 [F, H, W, 3] and instance ids int16 [F, H, W] from placed objects."""
    frames = np.empty((NUM_FRAMES, SIZE, SIZE, 3), dtype=np.uint8)
    frames[:] = BACKGROUND
    instances = np.zeros((NUM_FRAMES, SIZE, SIZE), dtype=np.int16)
    for k, (name, traj) in enumerate(objects, start=1):
        cat = CATEGORY_BY_NAME[name]
        for f, (r, c) in enumerate(traj):
            window = (f, slice(r, r + SPRITE), slice(c, c + SPRITE))
            frames[window][cat.sprite] = cat.rgb
            instances[window][cat.sprite] = k
    return frames, instances


def make_clip(seed: int, counts: dict[str, int] | None = None, split: str = "train",
              counts_in: "str | CountRange" = "v2") -> Clip:
    """Generate one clip, deterministically from ``seed``.

    ``counts`` fixes the combination (the caption still varies with the seed);
    otherwise it is drawn from the count range ``counts_in`` (:class:`CountRange`), from
    the training combinations when ``split="train"``, from the held-out ones when
    ``split="held_out"``, or from all when ``split="any"``.
    """
    if split not in ("train", "held_out", "any"):
        raise ValueError(f"split must be 'train', 'held_out' or 'any', got {split!r}")
    rng = np.random.default_rng([seed, 0x70F])
    for _ in range(1000):
        if counts is None:
            want = sample_counts(rng, counts_in)
            if split == "train" and is_held_out(want):
                continue
            if split == "held_out" and not is_held_out(want):
                continue
        else:
            want = dict(counts)
        _check_counts(want, counts_in)
        objects = _place(want, rng)
        if objects is None:
            continue
        frames, instances = render(objects)
        caption = make_caption(want, rng)
        return Clip(seed, frames, instances, [n for n, _ in objects], want, caption)
    raise RuntimeError(f"could not place {counts} in a {SIZE}x{SIZE} frame after 1000 tries")


def patch_masks(clip: "Clip") -> dict[str, np.ndarray]:
    """Per category, bool [F, SIZE // PATCH, SIZE // PATCH]: patches holding any of its pixels.

    This is the ground truth at the resolution the transformer (and every attention map)
    sees; the 8-connected components of each mask are the category's objects.
    """
    g = SIZE // PATCH
    out = {}
    for name in clip.counts:
        ids = [k for k, n in enumerate(clip.categories, start=1) if n == name]
        px = np.isin(clip.instances, ids)
        out[name] = px.reshape(NUM_FRAMES, g, PATCH, g, PATCH).any(axis=(2, 4))
    return out


def _check_counts(counts: dict[str, int], counts_in: "str | CountRange" = "v2") -> None:
    limits = count_range(counts_in)
    for name, n in counts.items():
        if name not in CATEGORY_BY_NAME:
            raise ValueError(f"unknown category {name!r}; expected one of {list(CATEGORY_BY_NAME)}")
        if not 1 <= n <= limits.max_per_category:
            raise ValueError(f"count for {name!r} must be in 1..{limits.max_per_category} "
                             f"(count range {limits.name!r}), got {n}")
    if not counts or sum(counts.values()) > limits.max_objects:
        raise ValueError(f"need 1..{limits.max_objects} objects in all (count range "
                         f"{limits.name!r}), got {counts}")


def all_combinations(counts_in: "str | CountRange" = "v2") -> list[dict[str, int]]:
    """Every count combination the world can draw in the count range, in a fixed order."""
    import itertools

    limits = count_range(counts_in)
    combos = []
    for k in range(1, len(CATEGORIES) + 1):
        for names in itertools.combinations([c.name for c in CATEGORIES], k):
            for ns in itertools.product(range(1, limits.max_per_category + 1), repeat=k):
                if sum(ns) <= limits.max_objects:
                    combos.append(dict(zip(names, ns)))
    return combos


def held_out_prompts(n: int, seed: int = 0, counts_in: "str | CountRange" = "v2") -> list[Prompt]:
    """``n`` evaluation prompts drawn (with a fixed seed) from the count range's held-out
    combinations only.

    Combinations are drawn without replacement while they last, so small ``n`` covers
    many different combinations; captions vary with the seed like training captions.
    """
    rng = np.random.default_rng([seed, 0xE7A1])
    pool = [c for c in all_combinations(counts_in) if is_held_out(c)]
    out: list[Prompt] = []
    while len(out) < n:
        for i in rng.permutation(len(pool)):
            if len(out) == n:
                break
            counts = pool[int(i)]
            out.append(Prompt(make_caption(counts, rng), dict(counts)))
    return out


def training_prompts(n: int, seed: int = 0, counts_in: "str | CountRange" = "v2") -> list[Prompt]:
    """``n`` prompts drawn like training clips' (:func:`sample_counts`, captions varying
    with the seed), held-out combinations rejected: the combinations the model was trained
    on, to tell a failure on unseen combinations from a failure on every combination."""
    if n < 0:
        raise ValueError(f"n={n}: expected a number of prompts >= 0")
    rng = np.random.default_rng([seed, 0x5EE])
    out: list[Prompt] = []
    while len(out) < n:
        counts = sample_counts(rng, counts_in)
        if not is_held_out(counts):
            out.append(Prompt(make_caption(counts, rng), dict(counts)))
    return out


def vocabulary() -> list[str]:
    """Every word a caption can contain, sorted (the tokenizer's vocabulary)."""
    words = set(NUMBER_WORDS[1:])
    for c in CATEGORIES:
        words |= {c.noun, c.plural, c.colour_word}
    for group in (_JOINERS, _SUFFIXES, _SINGULAR_DETERMINERS):
        for phrase in group:
            words |= set(phrase.split())
    words.add(",")
    return sorted(words)
