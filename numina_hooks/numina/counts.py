"""Counts from the prompt: ``parse_counts("Three cats chasing two dogs") -> {"cats": 3, "dogs": 2}``.

A small rule-based reader, pure Python, no NLP model. It looks for quantifiers (numerals,
digits, "a"/"an", "a pair of", "a dozen", "single", "lone"; compound numbers such as
"twenty-one", "one hundred" or "two dozen"), reads the noun phrase that
follows and keeps its head noun as written (the last noun of the phrase: "camera bag" ->
"bag", "air-balloons" -> "balloons").

Which phrases count:

- numerals and digits always count, except body parts ("on one leg") and scene nouns
  introduced by "one" ("one stage");
- "a"/"an" counts only on a subject: at the start of the prompt or of a clause (after a
  comma, "as", "while", "when", "with", ...), or coordinated by "and" with a phrase that
  counted ("two balloons and a stick"), or when a verb follows it ("... and a whale
  breaches"). It does not count after a preposition ("in a park", "on a table") nor as the
  object of a verb ("reading a book");
- "the" never counts (it refers to something already introduced);
- scene and place nouns ("sky", "park", "volcano") with an article never count;
- collective nouns ("a flock of six sparrows") give way to the numeral inside.

The same noun introduced twice adds up ("a cat ... and a cat" -> 2). Keys compare
case-insensitively; the first spelling is kept.

Counts given explicitly (a command-line option such as ``--counts cats=3,dogs=2``) are read
by :func:`parse_counts_arg`.
"""

from __future__ import annotations

import re

__all__ = ["parse_counts", "parse_counts_arg", "count_over_grid", "NUMBER_WORDS"]

NUMBER_WORDS: dict[str, int] = {
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13,
    "fourteen": 14, "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18,
    "nineteen": 19, "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60,
    "seventy": 70, "eighty": 80, "ninety": 90, "dozen": 12,
}
#: The tens that a unit may follow ("twenty-one", "thirty two").
_TENS = {w: n for w, n in NUMBER_WORDS.items() if n >= 20 and n % 10 == 0}
_UNITS = {w: n for w, n in NUMBER_WORDS.items() if 1 <= n <= 9}
#: Words that multiply the number before them ("one hundred", "a thousand", "a million", "two dozen").
_MULTIPLIERS = {"hundred": 100, "thousand": 1000, "million": 1_000_000, "dozen": 12}
_SINGLE_WORDS = {"single", "lone", "solitary"}

_IRREGULAR_PLURALS = {
    "men", "women", "children", "people", "mice", "geese", "teeth", "feet", "oxen",
    "sheep", "deer", "fish", "moose", "aircraft", "spacecraft", "samurai", "salmon",
    "trout", "bison", "cattle", "dice", "lice", "cacti", "fungi", "alumni",
    "swine", "elk", "shrimp", "squid", "offspring", "folk",
}
# Singular nouns that end in "s" (so they are not taken for plurals or verbs).
_SINGULAR_S = {
    "bus", "gas", "canvas", "lens", "atlas", "iris", "cactus", "octopus", "platypus",
    "walrus", "hippopotamus", "species", "series", "chaos", "cosmos", "news", "physics",
    "circus", "bonus", "virus", "campus", "citrus", "asparagus", "hibiscus", "lotus",
    "pegasus", "rhinoceros", "tennis", "chess", "mattress", "compass", "glass", "dress",
    "goddess", "princess", "actress", "waitress", "hostess", "albatross", "bass", "moss",
    "grass", "cross", "fortress", "harness", "abacus", "crocus", "fungus", "nautilus",
    "stylus", "torus", "bis", "trellis", "ibis", "axis", "oasis", "kiwis",
}
_BODY_PARTS = {
    "leg", "legs", "arm", "arms", "hand", "hands", "foot", "feet", "eye", "eyes", "ear",
    "ears", "wing", "wings", "paw", "paws", "head", "heads", "finger", "fingers", "toe",
    "toes", "tail", "tails", "knee", "knees", "nose", "mouth", "lip", "lips", "tooth",
    "teeth", "horn", "horns", "claw", "claws", "hoof", "hooves", "fin", "fins", "shoulder",
    "shoulders", "face", "faces", "thumb", "thumbs", "elbow", "elbows", "neck", "back",
    "belly", "bellies", "antenna", "antennae", "whisker", "whiskers", "beak", "beaks",
}
# Scene and place nouns: with an article ("a park", "the sky", "one stage") they are the
# setting, not an object to count. With a numeral of two or more they do count.
_SCENE_NOUNS = {
    "sky", "city", "town", "village", "street", "road", "highway", "park", "field",
    "forest", "jungle", "beach", "ocean", "sea", "lake", "river", "pond", "stream",
    "mountain", "hill", "desert", "valley", "meadow", "garden", "yard", "backyard",
    "room", "kitchen", "studio", "library", "stage", "trail", "path", "track", "stop",
    "volcano", "landscape", "prairie", "savannah", "savanna", "grassland", "plain",
    "space", "universe", "galaxy", "world", "scene", "background", "sunset", "sunrise",
    "night", "day", "morning", "evening", "dusk", "dawn", "twilight", "air", "water",
    "ground", "floor", "snow", "rain", "ice", "sand", "grass", "wind", "breeze", "storm",
    "alley", "market", "mall", "court", "arena", "stadium", "theater", "theatre",
    "classroom", "office", "hall", "corridor", "hallway", "laboratory", "lab", "airport",
    "plaza", "playground", "campus", "harbor", "harbour", "port",
    "dock", "shore", "coast", "island", "cave", "canyon", "cliff", "glacier", "tundra",
    "swamp", "marsh", "countryside", "farm", "ranch", "zoo", "aquarium", "museum",
    "restaurant", "cafe", "bar", "shop", "store", "house", "home", "building", "set",
    "site", "summit", "peak", "canopy", "clearing", "horizon", "surface", "interior",
    "background", "backdrop", "setting", "environment", "atmosphere", "underwater",
    "tunnel", "bridge", "riverbank", "bank", "runway", "sidewalk", "pavement", "lawn",
    "orchard", "vineyard", "ballroom", "bedroom", "bathroom", "attic", "basement",
}
_COLLECTIVES = {
    "flock", "pack", "herd", "group", "swarm", "school", "crowd", "team", "bunch",
    "family", "colony", "pod", "troop", "gang", "band", "pile", "stack", "set", "row",
    "line", "collection", "cluster", "couple", "pair", "number", "lot", "lots", "few",
    "handful", "series", "fleet", "army", "bouquet", "litter", "pride", "murder", "squad",
}
_PREPOSITIONS = {
    "in", "on", "at", "into", "onto", "over", "under", "above", "below", "beneath",
    "beside", "behind", "near", "through", "across", "along", "around", "among",
    "amidst", "amid", "between", "toward", "towards", "from", "to", "of", "off", "by",
    "past", "inside", "outside", "within", "upon", "down", "up", "against", "beyond",
    "underneath", "throughout", "via", "for", "about", "after", "before", "during",
    "without", "like", "atop", "opposite", "out", "onto", "alongside",
}
# After these an "a"/"an" phrase is the subject of a clause (or a companion: "with a dog").
_CLAUSE_STARTERS = {
    ",", ";", ":", ".", "!", "?", "as", "while", "when", "whilst", "where", "whereas",
    "with", "but", "then", "meanwhile", "beside", "plus", "alongside",
}
_FUNCTION_WORDS = {
    "a", "an", "the", "and", "or", "nor", "but", "as", "while", "when", "where", "that",
    "which", "who", "whom", "whose", "this", "these", "those", "it", "its", "their",
    "his", "her", "hers", "our", "my", "your", "they", "them", "he", "she", "we", "you",
    "i", "me", "us", "him", "is", "are", "was", "were", "be", "been", "being", "am",
    "has", "have", "had", "do", "does", "did", "can", "could", "will", "would", "shall",
    "should", "may", "might", "must", "there", "here", "each", "other", "another",
    "together", "nearby", "alone", "both", "all", "some", "any", "every", "no", "not",
    "very", "too", "so", "then", "than", "also", "just", "only", "still", "now", "again",
    "away", "back", "ahead", "side", "one's", "whilst", "meanwhile", "plus", "if",
    "because", "though", "although", "until", "unless", "since", "whereas", "else",
    "more", "most", "less", "least", "many", "much", "several", "few", "such", "with",
    "next", "without", "whose",
}
# Base-form verbs that may follow a coordinated singular subject ("one boy, one cat, and
# one dog play on a beach"). Third-person "-s" forms are recognised by shape.
_VERBS = {
    "play", "walk", "run", "race", "pose", "sit", "stand", "fly", "swim", "jump",
    "dance", "sing", "eat", "drink", "sleep", "rest", "wait", "watch", "look", "stare",
    "chase", "fight", "hunt", "climb", "ride", "drive", "float", "hover", "drift",
    "glide", "roll", "spin", "move", "travel", "wander", "roam", "explore", "work",
    "cook", "read", "write", "paint", "draw", "talk", "laugh", "smile", "cry", "sail",
    "surf", "skate", "ski", "hike", "cycle", "march", "gather", "meet", "stroll",
    "crawl", "hop", "leap", "dive", "soar", "graze", "perch", "hang", "lie", "kneel",
    "bow", "wave", "hold", "carry", "push", "pull", "throw", "catch", "kick", "share",
    "scurry", "swoop", "swirl", "swing", "glow", "shine", "blink", "fall", "rise",
    "fly", "appear", "emerge", "stand", "remain", "stay", "sway", "bounce", "tumble",
    "chat", "argue", "compete", "celebrate", "perform", "practice", "train", "study",
    "flutter", "breach", "circle", "guard", "follow", "lead", "cross", "enter", "leave",
}
_ADJECTIVES = {
    "small", "big", "large", "tiny", "huge", "giant", "little", "tall", "short", "long",
    "old", "young", "new", "wild", "golden", "wooden", "red", "blue", "green", "yellow",
    "orange", "purple", "pink", "black", "white", "gray", "grey", "brown", "silver",
    "cute", "happy", "sad", "fluffy", "fat", "thin", "hot", "cold", "warm", "cool",
    "dark", "bright", "low", "high", "brave", "fierce", "angry", "sleepy", "lone",
    "single", "distant", "tiny", "baby", "little", "adult", "elderly", "pretty",
    "beautiful", "ugly", "shiny", "sparkling", "glowing", "metal", "plastic", "glass",
    "stone", "paper", "steel", "furry", "spotted", "striped", "majestic", "graceful",
    "colorful", "colourful", "mechanical", "robotic", "ancient", "modern", "futuristic",
    "massive", "enormous", "miniature", "mini", "gigantic", "heavy", "light", "soft",
    "hard", "round", "square", "fresh", "ripe", "rotten", "clean", "dirty", "busy",
    "quiet", "loud", "calm", "gentle", "friendly", "playful", "curious", "lazy", "fast",
    "slow", "quick", "smart", "strong", "weak", "rich", "poor", "proud", "shy", "tired",
    "hungry", "anthropomorphic", "cartoon", "realistic", "magical", "mysterious",
    "identical", "different", "same", "other", "female", "male", "wet", "dry", "empty",
    "full", "open", "closed", "broken", "crystal", "neon", "vintage", "retro", "tiny",
}
_ADJ_SUFFIXES = ("ful", "ous", "ive", "ic", "less", "able", "ible", "ish")
_LY_NOUNS = {"butterfly", "dragonfly", "firefly", "fly", "lily", "family", "jelly", "belly",
             "bully", "ally", "puppy", "holly", "trolley", "gully", "fly"}

#: a numeral with thousands separators ("2,000") or a decimal point ("2.5") is one token
_TOKEN_RE = re.compile(r"\d{1,3}(?:,\d{3})+(?![\d,])|\d+\.\d+|[A-Za-z0-9]+(?:['’\-][A-Za-z0-9]+)*|[.,;:!?]")
_MAX_PHRASE = 6


# Words listed as adjectives that are also nouns: at the end of a phrase, or before a verb
# shape, they are the head ("a blue square floating", "a single red light").
_NOUN_ADJECTIVES = {"square", "light", "glass", "stone", "paper", "metal", "plastic", "steel", "crystal",
                    "cartoon", "baby", "adult", "female", "male"}


# Nouns ending in "-ing" that are not verb shapes ("a misty morning", "a wedding").
# (Words that are as often verbs, "painting", "building", "swing", stay verb shapes.)
_ING_NOUNS = {"morning", "evening", "buildings", "ceiling", "paintings", "wedding", "king", "kings", "rings",
              "wings", "thing", "things", "swings", "sibling", "siblings", "duckling", "ducklings",
              "seedling", "earring", "earrings", "pudding", "dumpling", "dumplings", "lightning", "railing"}


def _is_plural_form(word: str) -> bool:
    w = word.lower().split("-")[-1]
    if w in _IRREGULAR_PLURALS or (w.endswith("men") and len(w) > 4):
        return True
    if w.endswith(("fish", "deer", "sheep", "people", "children")):
        return True  # "jellyfish", "reindeer", "townspeople"
    return w.endswith("s") and not w.endswith("ss") and w not in _SINGULAR_S and len(w) > 2


def _is_adjective(word: str) -> bool:
    w = word.lower()
    last = w.split("-")[-1]
    if w in _ADJECTIVES or last in _ADJECTIVES:
        return True
    if "-" in w and (last.endswith("ing") or last.endswith("ed") or last.endswith("lit")):
        return True  # "fire-breathing", "snow-covered", "neon-lit"
    return len(w) > 4 and w.endswith(_ADJ_SUFFIXES)


def _is_verb_shape(word: str, count: int, have_noun: bool) -> bool:
    """Whether ``word`` (after at least one noun) reads as a verb that ends the phrase."""
    w = word.lower()
    if w in _VERBS:
        return True
    if (w.endswith("ing") and w not in _ING_NOUNS) or (w.endswith("ed") and len(w) > 3):
        return True
    if w.endswith("ly") and len(w) > 4 and w not in _LY_NOUNS:
        return True  # adverb
    # "one eagle circles": a singular subject followed by an "-s" word.
    return count == 1 and have_noun and _is_plural_form(w) and w not in _IRREGULAR_PLURALS


def _read_phrase(tokens: list[str], start: int, count: int) -> tuple[int | None, int, bool]:
    """Read the noun phrase at ``tokens[start:]``.

    Returns (index of the head noun or None, index just past the phrase, whether a verb
    follows the phrase).
    """
    words: list[int] = []
    have_noun = False
    j = start
    while j < len(tokens) and len(words) < _MAX_PHRASE:
        tok = tokens[j]
        low = tok.lower()
        if not re.match(r"[A-Za-z]", tok):
            break
        if low in _FUNCTION_WORDS or low in _PREPOSITIONS or low in NUMBER_WORDS or low in _MULTIPLIERS:
            break
        if have_noun and _is_verb_shape(low, count, have_noun):
            return (words[-1] if words else None), j, True
        if (not have_noun and words and tokens[words[-1]].lower() in _NOUN_ADJECTIVES
                and (low.endswith("ing") or low in _VERBS or (low.endswith("ly") and len(low) > 4))):
            return words[-1], j, True  # "a blue square floating": the noun-adjective was the head
        words.append(j)
        j += 1
        if _is_adjective(low) or (not have_noun and (low.endswith("ing") or low.endswith("ed"))):
            continue  # a modifier: "racing cars", "falling maple leaves"
        have_noun = True
        if count > 1 and _is_plural_form(low):
            break  # the plural head closes the phrase: "two dogs playing"
    follows_verb = j < len(tokens) and tokens[j].lower() in {
        "is", "are", "was", "were", "has", "have", "had", "can", "will"}
    last = tokens[words[-1]].lower() if words else None
    if not words or (not have_noun and last in _ADJECTIVES and last not in _NOUN_ADJECTIVES):
        return None, j, follows_verb
    return words[-1], j, follows_verb  # with no clear noun, the last word ("jellyfish")


def _hyphenated_value(word: str) -> int | None:
    """The value of a hyphenated tens-unit compound ("twenty-one" -> 21; ``word`` lower
    case), None for any other word ("three-legged")."""
    parts = word.split("-")
    if len(parts) == 2 and parts[0] in _TENS and parts[1] in _UNITS:
        return _TENS[parts[0]] + _UNITS[parts[1]]
    return None


def is_number_word(word: str) -> bool:
    """Whether ``word`` (lower case) is a numeral, a number word or a hyphenated tens-unit
    compound ("twenty-one"); "three-legged" is not."""
    return _numeral_value(word) is not None or word in NUMBER_WORDS or _hyphenated_value(word) is not None


def _numeral_value(word: str) -> int | None:
    """The whole number a numeral token writes: "12", "2,000" (thousands separators),
    "2.0" (a whole decimal); None for anything else, "2.5" included (no count of
    objects is fractional)."""
    if word.isdigit():
        return int(word)
    if re.fullmatch(r"\d{1,3}(?:,\d{3})+", word):
        return int(word.replace(",", ""))
    if re.fullmatch(r"\d+\.\d+", word):
        whole, frac = word.split(".")
        return int(whole) if set(frac) == {"0"} else None
    return None


def _number_at(tokens: list[str], i: int) -> tuple[int, int] | None:
    """(value, index just past it) of the number written from ``tokens[i]``: digits, a
    number word, a tens word with its unit ("twenty-one", "twenty one"), each optionally
    multiplied by the words after it ("one hundred", "two dozen"); None when ``tokens[i]``
    is no number."""
    low = tokens[i].lower()
    hyphenated = _hyphenated_value(low)
    numeral = _numeral_value(low)
    if numeral is not None:
        value = numeral
    elif hyphenated is not None:
        value = hyphenated
    elif low in NUMBER_WORDS:
        value = NUMBER_WORDS[low]
        if low in _TENS and i + 1 < len(tokens) and tokens[i + 1].lower() in _UNITS:
            value += _UNITS[tokens[i + 1].lower()]
            i += 1
    else:
        return None
    return _times_multipliers(tokens, i + 1, value)


def _times_multipliers(tokens: list[str], j: int, value: int) -> tuple[int, int]:
    """``value`` times the multiplier words from ``tokens[j]`` on ("hundred", "dozen"), and
    the index just past them."""
    while j < len(tokens) and tokens[j].lower() in _MULTIPLIERS:
        value *= _MULTIPLIERS[tokens[j].lower()]
        j += 1
    return value, j


def _head_as_written(token: str) -> str:
    parts = token.split("-")
    last = parts[-1]
    return last if len(parts) > 1 and last.isalpha() and len(last) > 1 else token


def parse_counts(prompt: str) -> dict[str, int]:
    """The countable objects a prompt asks for, keyed by the head noun as written.

    >>> parse_counts("Three hot air balloons drifting over two fire-breathing dragons.")
    {'balloons': 3, 'dragons': 2}
    >>> parse_counts("A man walking a dog in a park")
    {'man': 1}
    >>> parse_counts("A sunny beach at dusk")
    {}

    Rules are in the module docstring. Returns {} when nothing countable is found; callers
    can always pass explicit counts instead.
    """
    if not isinstance(prompt, str):
        raise TypeError(f"parse_counts expects a str prompt, got {type(prompt).__name__}")
    tokens = _TOKEN_RE.findall(prompt)
    found: list[tuple[str, int]] = []
    last_counted_end = -10  # index just past the last phrase that counted
    i = 0
    while i < len(tokens):
        low = tokens[i].lower()
        prev = tokens[i - 1].lower() if i > 0 else None
        count: int | None = None
        article = False  # introduced by "a"/"an": needs a subject position to count
        weak_one = False  # "a"/"one"/"single": scene nouns do not count
        start = i + 1
        number = _number_at(tokens, i)
        if low in ("a", "an"):
            nxt = [t.lower() for t in tokens[i + 1:i + 3]]
            if nxt[:2] in (["pair", "of"], ["couple", "of"]):
                count, start = 2, i + 3
            elif nxt[:1] and nxt[0] in _MULTIPLIERS:  # "a dozen eggs", "a hundred lanterns"
                count, start = _times_multipliers(tokens, i + 1, 1)
                start += start < len(tokens) and tokens[start].lower() == "of"
            else:
                count, article, weak_one = 1, True, True
        elif number is not None:
            count, start = number
            if start < len(tokens) and tokens[start].lower() == "of" and tokens[start - 1].lower() in _MULTIPLIERS:
                start += 1  # "a dozen of", "two dozen of"
            weak_one = count == 1
        elif low in _SINGLE_WORDS and (prev is None or prev in _CLAUSE_STARTERS):
            count, weak_one = 1, True
        if count is None or count <= 0:
            i += 1
            continue
        head, end, verb_follows = _read_phrase(tokens, start, count)
        if head is None:
            i += 1
            continue
        head_low = _head_as_written(tokens[head]).lower()
        if head_low in _COLLECTIVES and end < len(tokens) and tokens[end].lower() == "of":
            i = end + 1  # "a flock of six sparrows": the numeral inside decides
            continue
        keep = head_low not in _BODY_PARTS and not (weak_one and head_low in _SCENE_NOUNS)
        if keep and article:
            if prev is None or prev in _CLAUSE_STARTERS:
                keep = True
            elif prev == "and":
                before_and = tokens[i - 2].lower() if i >= 2 else None
                keep = (last_counted_end == i - 1 or verb_follows or before_and == ","
                        or before_and is None)
            else:
                keep = verb_follows and prev not in _PREPOSITIONS
        if keep:
            found.append((_head_as_written(tokens[head]), count))
            last_counted_end = end
        i = end
    counts: dict[str, int] = {}
    spelling: dict[str, str] = {}
    for noun, n in found:
        key = spelling.setdefault(noun.lower(), noun)
        counts[key] = counts.get(key, 0) + n
    return counts


def parse_counts_arg(text: str | None, prompt: str | None = None) -> dict[str, int] | None:
    """Counts given as text: ``"cats=3,dogs=2"`` -> ``{"cats": 3, "dogs": 2}``.

    ``None`` -> ``None`` (no counts given: read them from the prompt). Spaces around nouns
    and numbers are ignored. Each count must be a whole number >= 1, each noun given once
    and, when ``prompt`` is given, a word of it as written (``cats``, not ``cat``: NUMINA
    finds the noun's tokens in the prompt). Anything else, the empty string included,
    raises ValueError whose message starts with the offending text, so a command can put
    its option's name in front (``--counts discs=0: expected a count >= 1 ...``). A caller
    whose option defaults to ``""`` passes ``text or None``.
    """
    if text is None:
        return None
    if not isinstance(text, str):
        raise TypeError(f"parse_counts_arg expects a str such as 'cats=3,dogs=2' (or None), got {text!r}")
    counts: dict[str, int] = {}
    for part in text.split(","):
        noun, sep, n = (s.strip() for s in part.partition("="))
        if not sep or not noun or not n:
            raise ValueError(f"{text!r}: expected noun=count pairs separated by commas, e.g. cats=3,dogs=2")
        try:
            value = int(n)
        except ValueError:
            raise ValueError(f"{noun}={n}: {n!r} is not a whole number; expected a count >= 1") from None
        if value < 1:
            raise ValueError(f"{noun}={n}: expected a count >= 1 (to leave {noun!r} out, do not list it)")
        if noun in counts:
            raise ValueError(f"{text!r}: {noun!r} is given twice")
        if prompt is not None:
            from .tokens import find_noun_spans  # tokens imports this module

            if not find_noun_spans(prompt, noun):
                raise ValueError(f"{noun}={n}: {noun!r} is not a word of the prompt {prompt!r}; "
                                 "write the noun exactly as the prompt does (e.g. cats, not cat)")
        counts[noun] = value
    return counts


def count_over_grid(counts: dict[str, int], grid) -> tuple[str, int, int] | None:
    """The first ``(noun, count, patches)`` of ``counts`` (noun -> asked count) whose count
    exceeds the patches of one frame on ``grid`` (H, W): a layout holds at most one instance
    per patch. None when every count fits, or ``grid`` is None (not known)."""
    if grid is None:
        return None
    patches = int(grid[0]) * int(grid[1])
    for noun, n in counts.items():
        if n > patches:
            return noun, n, patches
    return None
