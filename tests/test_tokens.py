"""noun_token_columns with a T5-style tokenizer trained on the spot (no hub)."""

import pytest

tokenizers = pytest.importorskip("tokenizers")
transformers = pytest.importorskip("transformers")

from numina_hooks.numina.tokens import find_phrase_spans, noun_token_columns, phrase_token_columns  # noqa: E402

SENTENCES = [
    "Three cats chasing two dogs in a park.",
    "A lone astronaut floating in space.",
    "Two fire-breathing dragons over the city",
    "Three hot air-balloons drifting as two biplanes perform loops",
    "A cat and a dog; the cat sleeps, the dog barks.",
]


@pytest.fixture(scope="module")
def tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace()])
    tok.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(vocab_size=150, special_tokens=["<pad>", "</s>", "<unk>"],
                                      unk_token="<unk>")
    tok.train_from_iterator(SENTENCES * 4, trainer=trainer)
    assert (tok.token_to_id("<pad>"), tok.token_to_id("</s>"), tok.token_to_id("<unk>")) == (0, 1, 2)
    return transformers.T5TokenizerFast(tokenizer_object=tok, eos_token="</s>",
                                        pad_token="<pad>", unk_token="<unk>", extra_ids=0)


def _pieces(tokenizer, prompt, cols):
    """The prompt text under the token pieces at ``cols`` (pieces may carry a leading
    separator such as "-" when the tokenizer merged it into the noun's first piece)."""
    offsets = tokenizer(prompt, return_offsets_mapping=True)["offset_mapping"]
    return "".join(prompt[s:e] for s, e in (offsets[c] for c in cols)).strip("-\u2581 ")


def test_columns_reconstruct_each_noun(tokenizer):
    prompt = "Three cats chasing two dogs in a park."
    cols = noun_token_columns(tokenizer, prompt, ["cats", "dogs"])
    assert _pieces(tokenizer, prompt, cols["cats"]) == "cats"
    assert _pieces(tokenizer, prompt, cols["dogs"]) == "dogs"
    ids = tokenizer(prompt)["input_ids"]
    assert ids[-1] == 1 and all(c < len(ids) - 1 for c in cols["cats"] + cols["dogs"])  # not EOS


def test_multi_piece_noun_gives_several_columns(tokenizer):
    prompt = "Three hot air-balloons drifting"
    cols = noun_token_columns(tokenizer, prompt, ["balloons"])["balloons"]
    assert len(cols) >= 2 and cols == list(range(cols[0], cols[0] + len(cols)))
    assert _pieces(tokenizer, prompt, cols) == "balloons"


def test_noun_twice_gives_both_occurrences_case_insensitive(tokenizer):
    prompt = "A Cat and a dog; the cat sleeps"
    cols = noun_token_columns(tokenizer, prompt, ["cat"])["cat"]
    offsets = tokenizer(prompt, return_offsets_mapping=True)["offset_mapping"]
    covered = set().union(*(range(*offsets[c]) for c in cols))
    first, second = prompt.index("Cat"), prompt.index("cat")
    assert covered == set(range(first, first + 3)) | set(range(second, second + 3))


def test_whole_words_only(tokenizer):
    with pytest.raises(ValueError, match="'cat' is not in the prompt"):
        noun_token_columns(tokenizer, "Three cats", ["cat"])


def test_missing_noun_names_it_and_shows_tokens(tokenizer):
    with pytest.raises(ValueError) as err:
        noun_token_columns(tokenizer, "Two dogs in a park", ["zebra"])
    assert "zebra" in str(err.value) and "</s>" in str(err.value)


def test_truncated_noun_is_an_error(tokenizer):
    with pytest.raises(ValueError, match="truncated"):
        noun_token_columns(tokenizer, "Three cats chasing two dogs", ["dogs"], max_length=4)


def test_max_length_padding_does_not_move_columns(tokenizer):
    prompt = "Three cats chasing two dogs"
    assert noun_token_columns(tokenizer, prompt, ["dogs"], max_length=64) == \
        noun_token_columns(tokenizer, prompt, ["dogs"])


@pytest.mark.parametrize("prompt, noun, phrase", [
    ("Three cats chasing two dogs in a park.", "dogs", "two dogs"),
    ("Three hot air-balloons drifting", "balloons", "Three hot air-balloons"),
    ("A cat and a dog; the cat sleeps", "dog", "a dog"),
    ("cats playing", "cats", "cats"),  # no count word: the noun alone
    ("a cat, two dogs", "dogs", "two dogs"),  # punctuation ends the walk left
])
def test_phrase_spans_open_at_the_count_word(prompt, noun, phrase):
    assert prompt[slice(*find_phrase_spans(prompt, noun)[0])] == phrase


def test_phrase_columns_cover_count_word_modifiers_and_noun(tokenizer):
    prompt = "Three hot air-balloons drifting as two biplanes perform loops"
    nouns = noun_token_columns(tokenizer, prompt, ["balloons", "biplanes"])
    phrases = phrase_token_columns(tokenizer, prompt, ["balloons", "biplanes"])
    for noun in nouns:
        assert set(nouns[noun]) < set(phrases[noun])
    covered = _pieces(tokenizer, prompt, phrases["biplanes"]).replace("\u2581", "").replace(" ", "")
    assert covered == "twobiplanes"
    assert not set(phrases["balloons"]) & set(phrases["biplanes"])


def test_one_noun_may_be_a_plain_string(tokenizer):
    # "cats" is one noun, not the nouns "c", "a", "t", "s"
    prompt = "three cats chasing two dogs"
    assert noun_token_columns(tokenizer, prompt, "cats") == noun_token_columns(tokenizer, prompt, ["cats"])
    assert phrase_token_columns(tokenizer, prompt, "dogs") == phrase_token_columns(tokenizer, prompt, ["dogs"])
