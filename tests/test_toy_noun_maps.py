"""The toy's noun-map training loss (numina_hooks.toy.noun_maps)."""

import json
import math

import pytest
import torch

from numina_hooks.toy import model as toy_model
from numina_hooks.toy import noun_maps as nm
from numina_hooks.toy import train as toy_train
from numina_hooks.toy import world

NAMES = [c.name for c in world.CATEGORIES]


def test_token_categories_map_object_ids_to_their_category():
    labels = torch.tensor([[0, 1, 2, 2], [1, 0, 0, 1]])
    cats = [["square", "disc"], ["triangle"]]
    want = [[0, NAMES.index("square") + 1, NAMES.index("disc") + 1, NAMES.index("disc") + 1],
            [NAMES.index("triangle") + 1, 0, 0, NAMES.index("triangle") + 1]]
    assert nm.token_categories(labels, cats, NAMES).tolist() == want


def test_column_masks_mark_each_named_nouns_tokens_only():
    tok = toy_model.build_tokenizer()
    masks = nm.column_masks(tok, ["two red discs and a blue square drifting", ""], NAMES, 24)
    ids = tok("two red discs and a blue square drifting").input_ids
    words = tok.convert_ids_to_tokens(ids)
    disc, square, tri = (NAMES.index(n) for n in ("disc", "square", "triangle"))
    assert [words[i] for i in masks[0, disc].nonzero().flatten()] == ["discs"]
    assert [words[i] for i in masks[0, square].nonzero().flatten()] == ["square"]
    assert not masks[0, tri].any() and not masks[1].any()


def test_loss_is_zero_on_perfect_maps_and_a_log_share_on_uniform_ones():
    # 4 text tokens: column 1 is the disc's noun, column 3 the square's; 5 video tokens
    columns = torch.zeros(1, len(NAMES), 4, dtype=torch.bool)
    disc, square = NAMES.index("disc"), NAMES.index("square")
    columns[0, disc, 1] = True
    columns[0, square, 3] = True
    targets = torch.tensor([[0, disc + 1, disc + 1, square + 1, 0]])
    perfect = torch.zeros(1, 5, 4)
    perfect[0, [0, 4], 0] = 1.0  # background on a non-noun token
    perfect[0, [1, 2], 1] = 1.0
    perfect[0, 3, 3] = 1.0
    assert nm.noun_map_cross_entropy(perfect, targets, columns).item() == pytest.approx(0.0, abs=1e-6)
    uniform = torch.full((1, 5, 4), 0.25)
    # the rest holds 2 of 4 columns (log 2), each noun 1 of 4 (log 4); mean over the 3 targets
    want = (math.log(2) + math.log(4) + math.log(4)) / 3
    assert nm.noun_map_cross_entropy(uniform, targets, columns).item() == pytest.approx(want, abs=1e-5)
    # a triangle the caption does not name counts as the rest
    tri = NAMES.index("triangle")
    unnamed = torch.tensor([[tri + 1] * 5])
    assert nm.noun_map_cross_entropy(uniform, unnamed, columns).item() == pytest.approx(math.log(2), abs=1e-5)


def test_probabilities_reproduce_the_layer_and_the_loss_trains_the_block():
    """The loss reads the cross-attention the layer computes, and a few steps on it raise the
    noun's share on its objects."""
    torch.manual_seed(0)
    pipe = toy_model.build_pipeline(seed=0)
    x0, captions, labels, categories = toy_train.batch_clips(5, 0, 2, 0.0)
    targets = nm.token_categories(labels, categories, NAMES)
    columns = nm.column_masks(pipe.tokenizer, captions, NAMES, toy_model.MAX_TEXT_TOKENS)
    sigma = torch.tensor([0.5, 0.5])
    x = 0.5 * x0 + 0.5 * torch.randn(x0.shape, generator=torch.Generator().manual_seed(1))
    aux = nm.NounMapLoss(pipe.transformer, [3])
    outputs = {}
    handle = pipe.transformer.blocks[3].attn2.register_forward_hook(
        lambda m, a, out: outputs.__setitem__("out", out))

    def run():
        text = toy_model.encode_text(pipe, captions)
        with aux:
            pipe.transformer(hidden_states=x, timestep=sigma * 1000, encoder_hidden_states=text, return_dict=False)
            attn, hidden, enc = aux._captured[3]
            probs = nm.cross_probabilities(attn, hidden, enc)
            loss = aux.loss(targets, columns, sigma)
        return loss, probs, attn, enc

    with torch.no_grad():
        _, probs, attn, enc = run()
        v = attn.to_v(enc).unflatten(2, (attn.heads, -1)).transpose(1, 2)
        remade = attn.to_out[0]((probs @ v).transpose(1, 2).flatten(2))
    handle.remove()
    torch.testing.assert_close(remade, outputs["out"], atol=1e-5, rtol=1e-4)

    opt = torch.optim.Adam(pipe.transformer.blocks[3].attn2.parameters(), lr=3e-3)
    first = None
    for _ in range(15):
        loss, *_ = run()
        first = first if first is not None else float(loss.detach())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < 0.8 * first


def test_bad_blocks_are_refused_clearly():
    assert nm.parse_blocks("2, 3") == [2, 3]
    with pytest.raises(ValueError, match="expected a block index"):
        nm.parse_blocks("3:1")
    pipe = toy_model.build_pipeline(seed=0)
    with pytest.raises(ValueError, match=r"noun-map block 6 is outside the model \(6 blocks\)"):
        nm.NounMapLoss(pipe.transformer, [6])


def test_a_run_with_noun_maps_records_them_and_their_loss(tmp_path):
    toy_train.train(tmp_path / "run", steps=2, batch=2, progress=False, noun_blocks="3", noun_weight=0.1)
    info = json.loads((tmp_path / "run" / "weights" / "info.json").read_text())
    assert info["train_args"]["noun_blocks"] == "3" and info["train_args"]["noun_weight"] == 0.1
    assert math.isfinite(info["noun_map_loss_last_100"]) and info["noun_map_loss_last_100"] > 0
    assert "--noun-blocks 3 --noun-weight 0.1" in toy_train._command_extras(info["train_args"])
