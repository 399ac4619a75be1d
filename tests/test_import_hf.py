"""Hugging Face CLIPModel folders imported with parity: tiny random models, head sizes other than 64.

`transformers` is a test extra (it imports beside the CPU torch without torchvision). Features of
the imported model must equal `get_image_features` / `get_text_features` to 1e-4, with QuickGELU
(OpenAI) and GELU (LAION) activations, at the original image size and at an interpolated one.
"""

from __future__ import annotations

import json

import pytest
import torch

from ufinebench.model.checkpoint import from_checkpoint
from ufinebench.model.pretrained import ImportError_, import_clip

# transformers is a test extra (pyproject.toml), installed by `bash run.sh setup`: imported where used


def _hf_model(tmp_path, act: str, vision_heads: int, text_heads: int, patch: int = 8):
    from transformers import CLIPConfig, CLIPModel

    cfg = CLIPConfig(
        text_config=dict(vocab_size=99, hidden_size=48, intermediate_size=192, num_hidden_layers=2, num_attention_heads=text_heads,
                         max_position_embeddings=16, hidden_act=act, eos_token_id=98, bos_token_id=97, pad_token_id=0),
        vision_config=dict(hidden_size=60, intermediate_size=240, num_hidden_layers=2, num_attention_heads=vision_heads, image_size=32,
                           patch_size=patch, hidden_act=act),
        projection_dim=24,
    )
    torch.manual_seed(0)
    model = CLIPModel(cfg).eval()
    with torch.no_grad():  # random, not HF's near-zero init, so every weight matters for the comparison
        for p in model.parameters():
            p.normal_(0, 0.2)
    folder = tmp_path / f"hf_{act}_{patch}"
    model.save_pretrained(folder)
    return model, folder


def _texts() -> torch.Tensor:
    g = torch.Generator().manual_seed(2)
    ids = torch.randint(1, 97, (3, 16), generator=g)
    for i, end in enumerate((6, 11, 15)):
        ids[i, end] = 98  # the end token: the largest id, as CLIP's rule and HF's eos agree on
        ids[i, end + 1 :] = 0
    return ids


@pytest.mark.parametrize("act,vision_heads,text_heads,patch", [("quick_gelu", 5, 3, 8), ("gelu", 3, 4, 16)])
def test_hf_clip_folder_imports_with_parity(tmp_path, act, vision_heads, text_heads, patch):
    hf, folder = _hf_model(tmp_path, act, vision_heads, text_heads, patch)
    out = import_clip(folder, tmp_path / "ck", image_size=(32, 32), context_length=16)
    lm = from_checkpoint(out)
    m = lm.model
    meta = json.loads((out / "meta.json").read_text())
    assert meta["source_format"] == "huggingface"
    mc = meta["config"]["model"]
    assert (mc["vision_heads"], mc["text_heads"], mc["activation"]) == (vision_heads, text_heads, act)  # from config.json, not widths
    img = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    ids = _texts()
    with torch.no_grad():
        want_i = hf.get_image_features(pixel_values=img)
        want_t = hf.get_text_features(input_ids=ids)
        want_i = want_i if isinstance(want_i, torch.Tensor) else want_i.pooler_output
        want_t = want_t if isinstance(want_t, torch.Tensor) else want_t.pooler_output
        got_i = m.encode_image(img)["global"]
        got_t = m.encode_text(ids)["global"]
    assert (got_i - want_i).abs().max() <= 1e-4
    assert (got_t - want_t).abs().max() <= 1e-4
    # at another image size, positions interpolated as Hugging Face interpolates them
    out2 = import_clip(folder, tmp_path / "ck2", image_size=(64, 32), context_length=16)
    m2 = from_checkpoint(out2).model
    tall = torch.randn(2, 3, 64, 32, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        want = hf.get_image_features(pixel_values=tall, interpolate_pos_encoding=True)
        want = want if isinstance(want, torch.Tensor) else want.pooler_output
        got = m2.encode_image(tall)["global"]
    assert (got - want).abs().max() <= 1e-4


def test_hf_folder_refusals(tmp_path):
    _, folder = _hf_model(tmp_path, "gelu", 3, 4)
    with pytest.raises(ImportError_, match="hidden_act gelu"):
        import_clip(folder, tmp_path / "ck", image_size=(32, 32), context_length=16, activation="quick_gelu")
    cfg = json.loads((folder / "config.json").read_text())
    cfg["vision_config"]["hidden_act"] = "gelu_new"
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ImportError_, match="not supported"):
        import_clip(folder, tmp_path / "ck", image_size=(32, 32), context_length=16)
    (tmp_path / "plain").mkdir()
    with pytest.raises(ImportError_, match="not a Hugging Face CLIPModel"):
        import_clip(tmp_path / "plain", tmp_path / "ck3", image_size=(32, 32), context_length=16)
