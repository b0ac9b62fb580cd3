"""parse_counts: the CountBench file and handwritten prompts outside it; parse_counts_arg:
counts given as text (``--counts cats=3,dogs=2``)."""

import json

import pytest

from numina_hooks.numina.counts import parse_counts, parse_counts_arg

from numina_hooks.eval.benchmark import COUNTBENCH_DIR as COUNTBENCH  # the copy that ships


def test_countbench_exact_match_at_least_95_percent():
    prompts = (COUNTBENCH / "prompts.txt").read_text().splitlines()
    truth = [json.loads(line) for line in (COUNTBENCH / "noun_counts.jsonl").read_text().splitlines()]
    assert len(prompts) == len(truth) == 210
    hits = sum(parse_counts(p) == t for p, t in zip(prompts, truth))
    assert hits / len(prompts) >= 0.95, hits


@pytest.mark.parametrize("prompt, expected", [
    ("Three hot air balloons drifting over the hills", {"balloons": 3}),
    ("Two fire-breathing dragons circling a tower", {"dragons": 2}),
    ("A pair of swans gliding on a lake", {"swans": 2}),
    ("A dozen eggs in a basket", {"eggs": 12}),
    ("5 apples and 2 pears on a table", {"apples": 5, "pears": 2}),
    ("Two geese and three oxen crossing a road", {"geese": 2, "oxen": 3}),
    ("Four women and a child laughing", {"women": 4, "child": 1}),
    ("Seven mice and a cat in a barn", {"mice": 7, "cat": 1}),
    ("Ten sheep grazing near an old barn", {"sheep": 10}),
    ("Eleven deer and twelve fish", {"deer": 11, "fish": 12}),
    ("A flamingo standing on one leg in a pond", {"flamingo": 1}),
    ("A man reading a book in a quiet library", {"man": 1}),
    ("A lone wolf howling", {"wolf": 1}),
    ("One single candle", {"candle": 1}),
    ("Two police officers chasing a thief", {"officers": 2}),
    ("A knight with a sword riding a horse", {"knight": 1, "sword": 1}),
    ("Six small yellow rubber ducks floating in a bathtub", {"ducks": 6}),
    ("A flock of nine pigeons above the square", {"pigeons": 9}),
    ("Three goldfish and two jellyfish in a tank", {"goldfish": 3, "jellyfish": 2}),
    ("Two children and their mothers at the zoo", {"children": 2}),
    ("Three cats; two of them asleep", {"cats": 3}),
])
def test_handwritten_prompts(prompt, expected):
    assert parse_counts(prompt) == expected


@pytest.mark.parametrize("prompt", [
    "A sunny beach at dusk", "Cats playing in the garden", "", "The sky over the sea",
    "A group of people at a party", "Rain falling on the city at night",
])
def test_nothing_countable_gives_empty_dict(prompt):
    assert parse_counts(prompt) == {}


def test_same_noun_twice_adds_up_and_keeps_first_spelling():
    assert parse_counts("A cat, a dog and a Cat") == {"cat": 2, "dog": 1}


def test_rejects_non_string():
    with pytest.raises(TypeError, match="str"):
        parse_counts(3)  # type: ignore[arg-type]


def test_toy_captions_parse_to_their_counts():
    # "square" is both a shape adjective and the toy world's noun; before the fix
    # "a single blue square floating" parsed as {'floating': 1} and 20 of 120 captions lost a noun
    from numina_hooks.toy.world import category_of_noun as category_of
    from numina_hooks.toy.world import held_out_prompts

    from numina_hooks.toy.world import CATEGORY_BY_NAME

    missed = 0
    for prompt in held_out_prompts(120, seed=0):
        got = {category_of(n): c for n, c in parse_counts(prompt.text).items()}
        if got == prompt.counts:
            continue
        # The one documented miss: a singular article phrase after a preposition ("five
        # yellow triangles near a (single) blue square") reads as scenery, as "in a park" does
        # (CountBench: 206/210 with this rule, 183/210 without it). Nothing else may differ.
        assert set(got.items()) < set(prompt.counts.items()), prompt.text
        for cat in set(prompt.counts) - set(got):
            c = CATEGORY_BY_NAME[cat]
            assert prompt.counts[cat] == 1, prompt.text
            assert any(f"{prep} {det} {c.colour_word} {c.noun}" in prompt.text
                       for prep in ("near", "beside", "next to", "with", "alongside")
                       for det in ("a", "a single")), prompt.text
        missed += 1
    assert missed <= 12  # about 3% of toy captions; eval passes the asked counts explicitly


@pytest.mark.parametrize("prompt, expected", [
    ("a single red disc beside a single blue square floating", {"disc": 1, "square": 1}),
    ("a blue square, five red discs and five yellow triangles moving", {"square": 1, "discs": 5, "triangles": 5}),
    ("two glass bottles and a stone", {"bottles": 2, "stone": 1}),
    ("three people in a town square", {"people": 3}),
])
def test_noun_adjectives_head_their_phrase(prompt, expected):
    assert parse_counts(prompt) == expected


@pytest.mark.parametrize("prompt, expected", [
    ("A misty morning over a lake", {}),  # was {'misty': 1}
    ("a dog chasing two ducklings", {"dog": 1, "ducklings": 2}),
    ("A person painting on a large canvas in a studio.", {"person": 1}),
])
def test_ing_nouns_are_not_verbs(prompt, expected):
    assert parse_counts(prompt) == expected


# ---------------------------------------------------------------------------- counts given as text
def test_counts_arg_reads_pairs_and_checks_them_against_the_prompt():
    assert parse_counts_arg(None) is None
    assert parse_counts_arg("cats=3, dogs = 2") == {"cats": 3, "dogs": 2}
    assert parse_counts_arg("cats=3,dogs=2", "three cats chasing two dogs") == {"cats": 3, "dogs": 2}
    # any noun of the prompt may be asked for, not only the counted ones
    assert parse_counts_arg("dogs=4", "three cats chasing the dogs") == {"dogs": 4}


@pytest.mark.parametrize("text, prompt, message", [
    ("", None, "'': expected noun=count pairs separated by commas"),
    ("three cats", None, "'three cats': expected noun=count pairs"),
    ("cats=", None, "'cats=': expected noun=count pairs"),
    ("cats=x", None, "cats=x: 'x' is not a whole number; expected a count >= 1"),
    ("cats=2.5", None, "cats=2.5: '2.5' is not a whole number"),
    ("cats=0", None, "cats=0: expected a count >= 1 (to leave 'cats' out, do not list it)"),
    ("cats=2,cats=3", None, "'cats=2,cats=3': 'cats' is given twice"),
    ("cat=2", "three cats", "cat=2: 'cat' is not a word of the prompt 'three cats'"),
])
def test_counts_arg_errors_start_with_the_offending_text(text, prompt, message):
    with pytest.raises(ValueError) as err:
        parse_counts_arg(text, prompt)
    assert str(err.value).startswith(message)


@pytest.mark.parametrize("prompt, expected", [
    ("one hundred ants marching", {"ants": 100}),  # was {'ants': 1}: "hundred" read as an adjective
    ("a hundred lanterns over a river", {"lanterns": 100}),
    ("twenty-one balloons", {"balloons": 21}),  # was {}
    ("twenty one balloons", {"balloons": 21}),
    ("two dozen eggs in a basket", {"eggs": 24}),  # was {'eggs': 12}
    ("a dozen of eggs", {"eggs": 12}),
    ("thirty birds and a three-legged dog", {"birds": 30, "dog": 1}),
])
def test_compound_numbers_are_read_whole(prompt, expected):
    assert parse_counts(prompt) == expected


def test_a_compound_numbers_phrase_opens_at_its_first_word():
    from numina_hooks.numina.tokens import find_phrase_spans

    for prompt, noun, phrase in [("one hundred ants on a log", "ants", "one hundred ants"),
                                 ("two dozen eggs", "eggs", "two dozen eggs"),
                                 ("twenty one birds", "birds", "twenty one birds"),
                                 ("a three-legged dog", "dog", "a three-legged dog")]:
        assert [prompt[a:b] for a, b in find_phrase_spans(prompt, noun)] == [phrase]


def test_numerals_with_separators_and_decimals():
    # "2,000" is one number; a whole decimal counts as its integer; a fractional one is no
    # count of objects (nothing to count rather than the digits after the point)
    assert parse_counts("2,000 cats") == {"cats": 2000}
    assert parse_counts("three cats and 2.0 dogs") == {"cats": 3, "dogs": 2}
    assert parse_counts("3.5 cats") == {}
    assert parse_counts("1,2 cats") == {"cats": 2}  # a list of digits, not a separator
    assert parse_counts("3 cats. 2 dogs.") == {"cats": 3, "dogs": 2}
