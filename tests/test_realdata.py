"""Real-data metric loaders on tiny random-weight stand-ins that the tests build and save."""
import json
import string

import numpy as np
import pytest
import torch

from .toys import toy_wd14

from nai3eval.realdata import InceptionFeatures, clip_score, inception_fid, load_clip, write_pngs


def test_missing_weights_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="inception.pth"):
        InceptionFeatures(tmp_path / "inception.pth")
    with pytest.raises(FileNotFoundError, match="clip-here"):
        load_clip(tmp_path / "clip-here")


@pytest.mark.slow
def test_clean_fid_with_a_local_inception(tmp_path):
    from cleanfid import fid
    from safetensors.torch import save_file
    from torchvision.models import inception_v3

    torch.manual_seed(0)
    net = inception_v3(weights=None, aux_logits=True, init_weights=True)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp_path / "inception.safetensors"))
    full = InceptionFeatures(tmp_path / "inception.safetensors")

    class FirstFeatures(torch.nn.Module):  # 10 images cannot fill a 2048-d covariance: keep 6 features
        def forward(self, x):
            return full(x)[:, :6]

    ex = FirstFeatures()
    gen = torch.Generator().manual_seed(1)
    a = torch.rand(10, 3, 32, 32, generator=gen) * 2 - 1
    b = torch.rand(10, 3, 32, 32, generator=gen) * 0.5 - 0.9  # darker, narrower: a different set
    c = a * 0.9 + 0.05  # close to a
    feats = fid.get_folder_features(str(write_pngs(a, tmp_path / "a")), full, num_workers=0, mode="clean",
                                    device=torch.device("cpu"), verbose=False)
    assert feats.shape == (10, 2048) and np.isfinite(feats).all()
    same = inception_fid(tmp_path / "a", tmp_path / "a", "", extractor=ex)
    far = inception_fid(a, b, "", extractor=ex)
    near = inception_fid(a, c, "", extractor=ex)
    assert abs(same) < 1e-3 * far
    assert 0 < near < far
    assert inception_fid(b, a, "", extractor=ex) == pytest.approx(far, rel=1e-3)
    # the sweep's path: the reference featurised once (metrics/inception.py), against clean-fid's folders
    from nai3eval.metrics.inception import InceptionSpace

    space = InceptionSpace(ex)
    fd = space.distance_from(space.features(a))
    assert fd(space.features(b))[0] == pytest.approx(far, rel=1e-4)
    assert fd(space.features(c))[0] == pytest.approx(near, rel=1e-4)


def _tiny_clip(folder):
    from transformers import (CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTextConfig, CLIPTokenizer,
                              CLIPVisionConfig)

    torch.manual_seed(0)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for ch in string.ascii_lowercase + ",_ ":
        vocab[ch] = len(vocab)
        vocab[ch + "</w>"] = len(vocab)
    (folder / "src").mkdir(parents=True)
    (folder / "src" / "vocab.json").write_text(json.dumps(vocab))
    (folder / "src" / "merges.txt").write_text("#version: 0.2\n")
    text = CLIPTextConfig(vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                          num_attention_heads=2, max_position_embeddings=32, bos_token_id=0, eos_token_id=1,
                          pad_token_id=1)
    vision = CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                              image_size=32, patch_size=8)
    model = CLIPModel(CLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=8))
    tok = CLIPTokenizer(str(folder / "src" / "vocab.json"), str(folder / "src" / "merges.txt"), model_max_length=32)
    proc = CLIPProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 32},
                                                            crop_size={"height": 32, "width": 32}), tokenizer=tok)
    model.save_pretrained(folder / "clip")
    proc.save_pretrained(folder / "clip")
    return folder / "clip"


def test_clip_score_from_a_local_folder_matches_the_formula(tmp_path):
    path = _tiny_clip(tmp_path)
    model, processor = load_clip(path)
    prompts = ["red circle", "black background", "two objects", "blue square"]
    positive = 0
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(4, 3, 16, 16, generator=gen) * 2 - 1
    for flip in (False, True):
        if flip:  # negating the text projection flips every cosine: one of the two runs is above the floor
            with torch.no_grad():
                model.text_projection.weight.mul_(-1)
        got = clip_score(images, prompts, path, loaded=(model, processor))
        with torch.no_grad():
            u8 = ((images + 1) / 2 * 255).round().to(torch.uint8)
            inp = processor(text=prompts, images=[x for x in u8], return_tensors="pt", padding=True)
            img = model.get_image_features(pixel_values=inp["pixel_values"])
            txt = model.get_text_features(input_ids=inp["input_ids"], attention_mask=inp["attention_mask"])
            mean_cos = float(torch.nn.functional.cosine_similarity(img, txt).mean())
        assert got == pytest.approx(max(100 * mean_cos, 0.0), rel=1e-4, abs=1e-4)  # CLIPScore floors the mean
        positive += mean_cos > 0
    assert positive > 0  # at least one case where the floor does not decide


def test_wd14_tagger_from_local_onnx(tmp_path):
    """A tiny ONNX tagger the test exports: it detects 'dark' when the image is dark, 'bright' when not."""
    from nai3eval.realdata import WD14Tagger

    toy_wd14(tmp_path, ["dark", "bright", "never"])
    tagger = WD14Tagger(tmp_path / "model.onnx", tmp_path / "selected_tags.csv")
    assert tagger.side == 24 and tagger.tags == ["dark", "bright", "never"]
    images = torch.cat([torch.full((2, 3, 8, 8), -0.9), torch.full((2, 3, 8, 8), 0.9)])
    prompts = [["dark"], ["bright"], ["bright", "never"], ["bright", "unknown_tag"]]
    precision, recall = tagger.adherence(images, prompts)
    # found: dark, dark, bright, bright → tp = 1 (img0) + 1 (img2) + 1 (img3); prompted known = 1+1+2+1 = 5
    assert recall == pytest.approx(3 / 5) and precision == pytest.approx(3 / 4)
    with pytest.raises(FileNotFoundError, match="selected_tags.csv"):
        WD14Tagger(tmp_path / "model.onnx", tmp_path / "nope" / "selected_tags.csv")


def test_wd14_count_tags_count_objects_for_c4(tmp_path):
    """C4 on anime models reads the count through WD14's count tags. A tiny ONNX tagger the test
    exports says '1girl' for a dark image and '2girls' for a bright one (never a boy): the wrong
    rate per image follows by hand."""
    from nai3eval.counting import WD14Counter, count_tag, wrong_counts
    from nai3eval.realdata import WD14Tagger

    model, tags = toy_wd14(tmp_path, ["1girl", "2girls", "6+girls", "1boy"])
    counter = WD14Counter(WD14Tagger(model, tags))
    assert count_tag("2girls") == ("girl", 2) and count_tag("6+girls") == ("girl", 6) and count_tag("1boy") == ("boy", 1)
    assert count_tag("girl") is None and count_tag("solo") is None
    dark, bright = torch.full((1, 3, 8, 8), -0.9), torch.full((1, 3, 8, 8), 0.9)
    images = torch.cat([dark, dark, bright, bright, dark, bright])
    prompts = [["1girl", "smile"], ["2girls"], ["2girls"], ["solo"], ["1boy"], ["landscape"]]
    wrong = wrong_counts(counter, prompts, images)
    # dark reads 1 girl, bright 2 girls; '1boy' reads no boy above threshold → 0; no count asked → NaN
    assert wrong[:5] == [0.0, 1.0, 0.0, 1.0, 1.0] and np.isnan(wrong[5])
