"""Counters: NMS and box selection on synthetic outputs with known answers, the
GroundingDINO path end to end with a tiny random-weight model and an offline processor
(plumbing, not accuracy), the toy exact counter behind the same protocol, CLIP score."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from numina_hooks.eval.detectors import (Counter, ToyCounter, ZeroShotDetector, box_iou, make_counter, nms,
                                         select_boxes, toy_category)


# ---------------------------------------------------------------------------- boxes
def test_box_iou_known_values():
    a = torch.tensor([[0.0, 0, 10, 10]])
    b = torch.tensor([[0.0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 0, 5]])
    assert box_iou(a, b)[0].tolist() == pytest.approx([1.0, 50 / 150, 0.0, 0.0])


def test_nms_keeps_one_box_per_object_best_score_first():
    boxes = torch.tensor([
        [0.0, 0, 10, 10],    # object A
        [1, 1, 11, 11],      # A again, better score: IoU 81/119 = 0.68
        [30, 30, 40, 40],    # object B
        [0, 0, 10, 5],       # half of A: IoU with A 0.5 -> not above 0.5, kept
    ])
    scores = torch.tensor([0.5, 0.9, 0.6, 0.4])
    keep = nms(boxes, scores, 0.5)
    assert keep.tolist() == [1, 2, 3]
    assert nms(boxes, scores, 0.3).tolist() == [1, 2]  # IoU(1, 3) = 45/115 = 0.39
    assert nms(boxes[:0], scores[:0], 0.5).numel() == 0


def test_nms_ties_keep_the_earlier_box():
    boxes = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 10]])
    assert nms(boxes, torch.tensor([0.7, 0.7]), 0.5).tolist() == [0]


def test_select_boxes_threshold_clip_large_box_filter_and_nms():
    boxes = torch.tensor([
        [-5.0, -5, 10, 10],  # clipped to [0, 0, 10, 10]
        [0, 0, 10, 10],      # duplicate of the first after clipping
        [50, 50, 60, 60],    # below threshold
        [0, 0, 100, 80],     # the whole frame
        [20, 20, 30, 30],
    ])
    scores = torch.tensor([0.8, 0.7, 0.2, 0.9, 0.5])
    d = select_boxes(boxes, scores, threshold=0.35, nms_iou=0.5, image_size=(80, 100))
    assert len(d.boxes) == 3  # whole-frame box kept when no filter
    d = select_boxes(boxes, scores, threshold=0.35, nms_iou=0.5, image_size=(80, 100), max_box_fraction=0.5)
    assert len(d.boxes) == 2
    assert d.boxes[0].tolist() == [0, 0, 10, 10] and d.scores.tolist() == pytest.approx([0.8, 0.5])


# ---------------------------------------------------------------------------- GroundingDINO, tiny and offline
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", "a", "cat", "cats", "dog", "dogs", "red", "disc", "discs"]


def build_tiny_grounding_dino():
    """A random-weight GroundingDINO (ResNet backbone, 1-layer BERT) and its processor, offline."""
    from transformers import (BertConfig, BertTokenizerFast, GroundingDinoConfig, GroundingDinoForObjectDetection,
                              GroundingDinoProcessor, ResNetConfig)
    from transformers.models.grounding_dino import image_processing_pil_grounding_dino as gd_pil

    tokenizer = BertTokenizerFast(vocab={w: i for i, w in enumerate(VOCAB)})
    assert tokenizer("cats.").input_ids == [2, 8, 5, 3]
    images = gd_pil.GroundingDinoImageProcessorPil(size={"shortest_edge": 64, "longest_edge": 64})
    processor = GroundingDinoProcessor(image_processor=images, tokenizer=tokenizer)
    config = GroundingDinoConfig(
        backbone_config=ResNetConfig(embedding_size=8, hidden_sizes=[8, 16, 16, 16], depths=[1, 1, 1, 1],
                                     out_features=["stage2", "stage3", "stage4"]),
        use_timm_backbone=False, use_pretrained_backbone=False,
        text_config=BertConfig(vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=32),
        d_model=32, encoder_layers=1, decoder_layers=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
        encoder_attention_heads=2, decoder_attention_heads=2, num_queries=12, num_feature_levels=3,
        encoder_n_points=1, decoder_n_points=1, max_text_len=256,
    )
    torch.manual_seed(0)
    model = GroundingDinoForObjectDetection(config).eval()
    return model, processor


@pytest.fixture(scope="module")
def tiny_grounding_dino():
    return build_tiny_grounding_dino()


def test_grounding_dino_end_to_end_with_a_tiny_random_model(tiny_grounding_dino):
    model, processor = tiny_grounding_dino
    det = ZeroShotDetector("grounding-dino", model=model, processor=processor, box_threshold=0.0,
                           text_threshold=0.0, nms_iou=1.0, batch_size=2, device="cpu")
    assert isinstance(det, Counter)
    frames = np.random.default_rng(0).integers(0, 255, (3, 24, 32, 3), dtype=np.uint8)
    dets = det.detect(frames, ["cats", "dog"])
    assert set(dets) == {"cats", "dog"} and all(len(v) == 3 for v in dets.values())
    for d in dets["cats"]:
        # threshold 0 and NMS off: every one of the 12 queries is a box, inside the 32x24 frame
        assert len(d.boxes) == 12
        assert (d.boxes[:, 0] >= 0).all() and (d.boxes[:, 2] <= 32).all() and (d.boxes[:, 3] <= 24).all()
        assert ((d.scores > 0) & (d.scores < 1)).all()
    counts = det.count(frames, ["cats", "dog"])
    assert counts == {"cats": [12, 12, 12], "dog": [12, 12, 12]}
    # a threshold above every score keeps nothing; NMS at IoU 0 keeps disjoint boxes only
    strict = ZeroShotDetector("grounding-dino", model=model, processor=processor, box_threshold=1.0, device="cpu")
    assert strict.count(frames, ["cats"]) == {"cats": [0, 0, 0]}
    dedup = ZeroShotDetector("grounding-dino", model=model, processor=processor, box_threshold=0.0,
                             text_threshold=0.0, nms_iou=0.0, device="cpu")
    assert all(1 <= c <= 12 for c in dedup.count(frames, ["cats"])["cats"])
    json.dumps(det.settings)
    assert det.settings["box_threshold"] == 0.0 and det.settings["kind"] == "grounding-dino"


def test_grounding_dino_scores_only_the_nouns_tokens(tiny_grounding_dino):
    """Synthetic model outputs: a box that lights up only the '.' or [SEP] token is not an
    object; scores come from the noun's token columns; duplicates are suppressed."""
    _, processor = tiny_grounding_dino

    class FakeModel(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.p = torch.nn.Parameter(torch.zeros(1))

        def forward(self, input_ids, **kw):
            ids = input_ids[0].tolist()  # "[CLS] cats . [SEP]"
            noun, dot = ids.index(VOCAB.index("cats")), ids.index(VOCAB.index("."))
            b = input_ids.shape[0]
            logits = torch.full((b, 4, 256), -10.0)
            logits[:, 0, noun] = 3.0    # a cat
            logits[:, 1, noun] = 2.0    # the same cat, shifted a little: a duplicate
            logits[:, 2, dot] = 5.0     # only the '.' token: not a cat
            logits[:, 3, noun] = -2.0   # a weak box (p = 0.12)
            boxes = torch.tensor([[0.25, 0.25, 0.2, 0.2], [0.26, 0.26, 0.2, 0.2],
                                  [0.75, 0.75, 0.2, 0.2], [0.75, 0.25, 0.2, 0.2]]).expand(b, 4, 4)
            return SimpleNamespace(logits=logits, pred_boxes=boxes)

    det = ZeroShotDetector("grounding-dino", model=FakeModel(), processor=processor, box_threshold=0.35,
                           text_threshold=0.25, device="cpu")
    frames = np.zeros((2, 40, 40, 3), dtype=np.uint8)
    assert det.count(frames, ["cats"]) == {"cats": [1, 1]}
    loose = ZeroShotDetector("grounding-dino", model=FakeModel(), processor=processor, box_threshold=0.1,
                             text_threshold=0.1, device="cpu")
    d = loose.detect(frames, ["cats"])["cats"][0]
    assert len(d.boxes) == 2  # the cat and the weak box; never the '.' box
    assert d.boxes[0].tolist() == pytest.approx([6.0, 6.0, 14.0, 14.0])


def test_detector_rejects_bad_settings_and_frames(tiny_grounding_dino):
    model, processor = tiny_grounding_dino
    with pytest.raises(ValueError, match="box_threshold"):
        ZeroShotDetector("grounding-dino", model=model, processor=processor, box_threshold=1.5)
    with pytest.raises(ValueError, match="detector kind"):
        ZeroShotDetector("yolo", model=model, processor=processor)
    det = ZeroShotDetector("grounding-dino", model=model, processor=processor, device="cpu")
    with pytest.raises(ValueError, match=r"uint8 \[F, H, W, 3\]"):
        det.count(np.zeros((2, 8, 8, 3), dtype=np.float32), ["cats"])


def test_owlv2_scores_boxes_relative_to_the_padded_square():
    class FakeProcessor:
        def __call__(self, text, images, return_tensors):
            assert text == [["a photo of a cat"]] * len(images)
            return {"pixel_values": torch.zeros(len(images), 3, 8, 8), "input_ids": torch.zeros(len(images), 4).long()}

    class FakeModel(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.p = torch.nn.Parameter(torch.zeros(1))

        def forward(self, pixel_values, input_ids):
            b = pixel_values.shape[0]
            logits = torch.tensor([[[4.0], [-4.0]]]).expand(b, 2, 1)
            boxes = torch.tensor([[[0.5, 0.25, 0.2, 0.1], [0.1, 0.1, 0.1, 0.1]]]).expand(b, 2, 4)
            return SimpleNamespace(logits=logits, pred_boxes=boxes)

    det = ZeroShotDetector("owlv2", model=FakeModel(), processor=FakeProcessor(), device="cpu")
    assert det.settings["box_threshold"] == 0.2 and det.settings["text_threshold"] is None
    frames = np.zeros((3, 50, 100, 3), dtype=np.uint8)  # padded to 100 x 100
    d = det.detect(frames, ["cat"])["cat"]
    assert [len(x.boxes) for x in d] == [1, 1, 1]
    assert d[0].boxes[0].tolist() == pytest.approx([40.0, 20.0, 60.0, 30.0])


# ---------------------------------------------------------------------------- toy counter
def test_toy_counter_is_exact_on_world_clips_and_maps_nouns():
    from numina_hooks.toy.world import make_clip

    counter = make_counter("toy")
    assert isinstance(counter, Counter) and isinstance(counter, ToyCounter)
    for seed in range(4):
        clip = make_clip(seed, split="any")
        nouns = {"discs": "disc", "blue squares": "square", "triangle": "triangle"}
        counts = counter.count(clip.frames, list(nouns))
        for noun, cat in nouns.items():
            assert counts[noun] == [clip.counts.get(cat, 0)] * len(clip.frames)
    assert toy_category("Red Discs") == "disc" and toy_category("cats") is None
    with pytest.raises(ValueError, match="cannot count 'cats'"):
        counter.count(clip.frames, ["cats"])


# ---------------------------------------------------------------------------- CLIP score
def test_clip_score_is_100_cosine_averaged_over_frames():
    from transformers import CLIPConfig, CLIPModel, CLIPProcessor, CLIPTokenizerFast
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    from numina_hooks.eval.clip_score import ClipScorer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in "abcdefghijklmnopqrstuvwxyz":
        vocab.setdefault(c, len(vocab))
        vocab.setdefault(c + "</w>", len(vocab))
    tok = CLIPTokenizerFast(vocab=vocab, merges=[])
    assert tok("a red disc").input_ids[0] == 0 and tok("a red disc").input_ids[-1] == 1
    proc = CLIPProcessor(image_processor=CLIPImageProcessorPil(size={"shortest_edge": 32},
                                                               crop_size={"height": 32, "width": 32}),
                         tokenizer=tok)
    text = dict(vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                num_attention_heads=2, max_position_embeddings=77, bos_token_id=0, eos_token_id=1, pad_token_id=1)
    vision = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=32,
                  patch_size=8)
    torch.manual_seed(0)
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=8))
    scorer = ClipScorer(model=model, processor=proc, batch_size=2, device="cpu")
    frames = np.random.default_rng(1).integers(0, 255, (3, 24, 24, 3), dtype=np.uint8)
    per_frame = scorer.frame_scores(frames, "a red disc")
    assert len(per_frame) == 3 and all(-100 <= s <= 100 for s in per_frame)
    assert scorer.score(frames, "a red disc") == pytest.approx(sum(per_frame) / 3)
    # the same computation by hand, one frame at a time
    with torch.no_grad():
        t = model.get_text_features(**proc(text=["a red disc"], return_tensors="pt")).pooler_output
        v = model.get_image_features(**proc(images=[frames[2]], return_tensors="pt")).pooler_output
    expected = 100 * torch.nn.functional.cosine_similarity(t, v).item()
    assert per_frame[2] == pytest.approx(expected, rel=1e-4)
