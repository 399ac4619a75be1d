"""Encoders against the reference CLIP code; importing CLIP weights safely, with interpolation."""

from __future__ import annotations

import io
import pickle
import zipfile

import pytest
import torch

from clip_reference import reference_clip
from ufinebench.model.cfam import ModelConfig, RetrievalModel
from ufinebench.model.checkpoint import from_checkpoint
from ufinebench.model.pretrained import (
    ImportError_,
    import_clip,
    interpolate_image_positions,
    interpolate_text_positions,
    read_clip_state_dict,
    to_model_state_dict,
)

SMALL = dict(embed_dim=32, image_resolution=32, vision_layers=2, vision_width=128, vision_patch_size=8, context_length=16,
             vocab_size=100, transformer_width=64, transformer_heads=4, transformer_layers=2)


@pytest.fixture(scope="module")
def reference():
    """OpenAI's CLIP model code as shipped in clip-anytorch (tests/clip_reference.py)."""
    return reference_clip(**SMALL).eval()


def _ours(image=(32, 32), context=16) -> RetrievalModel:
    return RetrievalModel(ModelConfig(arch="clip-sdm", embed_dim=32, image_size=image, patch_size=8, vision_width=128, vision_layers=2,
                                      vision_heads=2, context_length=context, vocab_size=100, text_width=64, text_layers=2, text_heads=4)).eval()


def _inputs():
    g = torch.Generator().manual_seed(1)
    img = torch.randn(4, 3, 32, 32, generator=g)
    txt = torch.randint(1, 98, (4, 16), generator=g)
    for i, end in enumerate((5, 9, 15, 12)):
        txt[i, end] = 99  # the end token is the largest id, as in CLIP
        txt[i, end + 1 :] = 0
    return img, txt


def test_parity_with_reference_clip(reference):
    ours = _ours()
    sd, _ = to_model_state_dict(reference.state_dict(), (32, 32), 16)
    missing, unexpected = ours.load_state_dict(sd, strict=False)
    assert missing == ["logit_scale"] and not unexpected
    img, txt = _inputs()
    with torch.no_grad():
        assert torch.allclose(ours.encode_image(img)["global"], reference.encode_image(img), atol=1e-5, rtol=0)
        assert torch.allclose(ours.encode_text(txt)["global"], reference.encode_text(txt), atol=1e-5, rtol=0)
        # trimming padding does not change the result
        assert torch.allclose(ours.encode_text(txt, trim=False)["global"], ours.encode_text(txt)["global"], atol=1e-6)


def test_import_state_dict_and_torchscript_with_interpolation(reference, tmp_path):
    img, txt = _inputs()
    sd_path = tmp_path / "sd.pt"
    torch.save(reference.state_dict(), sd_path)
    ts_path = tmp_path / "ts.pt"
    torch.jit.trace(reference, (img, txt)).save(str(ts_path))
    a, b = read_clip_state_dict(sd_path), read_clip_state_dict(ts_path)
    assert set(a) == set(b) == set(reference.state_dict())
    assert all(torch.equal(a[k], b[k]) for k in a)
    out = import_clip(ts_path, tmp_path / "ck", image_size=(48, 16), context_length=24)
    loaded = from_checkpoint(out)
    m = loaded.model
    assert m.visual.positional_embedding.shape == (1 + 6 * 2, 128) and m.text.positional_embedding.shape == (24, 64)
    assert torch.equal(m.visual.conv1.weight, reference.visual.conv1.weight)
    assert torch.equal(m.visual.positional_embedding[0], reference.visual.positional_embedding[0])  # class position kept
    assert loaded.tokenizer.eot_id == 49407 and loaded.transform.size == (48, 16)
    with torch.no_grad():
        assert m.encode_image(torch.randn(2, 3, 48, 16))["global"].shape == (2, 32)


def test_interpolation_is_identity_at_the_same_size_and_smooth_otherwise():
    pos = torch.randn(1 + 4 * 4, 8)
    assert torch.allclose(interpolate_image_positions(pos, (4, 4), (4, 4)), pos, atol=1e-6)
    ramp = torch.linspace(0, 1, 10)[:, None].repeat(1, 3)
    longer = interpolate_text_positions(ramp, 20)
    assert longer.shape == (20, 3) and torch.all(longer[1:] >= longer[:-1] - 1e-6)


def test_refuses_code_in_weight_files(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    p = tmp_path / "evil.pt"
    torch.save({"w": Evil()}, p)
    with pytest.raises(ImportError_):
        read_clip_state_dict(p)
    z = tmp_path / "evil_ts.pt"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("m/code/__torch__/x.py", "")
        zf.writestr("m/data.pkl", pickle.dumps(Evil()))
    with pytest.raises(ImportError_, match="refusing"):
        read_clip_state_dict(z)
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(ImportError_):
        read_clip_state_dict(tmp_path / "junk.pt")
    buf = io.BytesIO()
    torch.save({"visual.conv1.weight": torch.zeros(1)}, buf)
    (tmp_path / "partial.pt").write_bytes(buf.getvalue())
    with pytest.raises(ImportError_, match="not a CLIP"):
        import_clip(tmp_path / "partial.pt", tmp_path / "o")


def test_mlm_has_its_own_mask_token():
    """MLM's [MASK] is a learned embedding for the id just past the vocabulary, not a borrowed token."""
    import torch

    from ufinebench.model.cfam import ModelConfig, RetrievalModel

    cfg = ModelConfig(arch="irra", mlm=True, embed_dim=32, image_size=(64, 32), patch_size=16, vision_width=32, vision_layers=1,
                      vision_heads=2, context_length=16, vocab_size=50, text_width=32, text_layers=1, text_heads=2,
                      decoder_heads=2, matcher_layers=1, num_classes=3)
    torch.manual_seed(0)
    model = RetrievalModel(cfg).eval()
    text = model.text
    assert text.mask_id == 50 and text.mask_embedding is not None
    ids = torch.tensor([[1, 5, 7, 49, 0, 0]])  # CLIP-style (eot_id None): the end token is the largest id, found by argmax
    masked = ids.clone()
    masked[0, 1] = text.mask_id
    assert int(text.eot_index(masked)) == 3  # a mask id (larger than every real id) never becomes the pooled end token
    with torch.no_grad():
        _, tok_a = text(ids)
        _, tok_b = text(masked)
        text.mask_embedding.add_(1.0)
        _, tok_c = text(masked)
    assert not torch.allclose(tok_a, tok_b) and not torch.allclose(tok_b, tok_c)  # the mask position reads mask_embedding
    no_mlm = RetrievalModel(ModelConfig(**{**cfg.__dict__, "mlm": False, "arch": "clip-sdm", "num_classes": 0}))
    assert no_mlm.text.mask_embedding is None and "text.mask_embedding" not in no_mlm.state_dict()


def test_text_position_modes_keep_what_they_say():
    from ufinebench.model.pretrained import resize_text_positions

    pos = torch.arange(77, dtype=torch.float32)[:, None].repeat(1, 4)  # row i holds the value i: which source each slot took
    stretch = resize_text_positions(pos, 168, "stretch")
    assert stretch.shape == (168, 4) and torch.all(stretch[1:] >= stretch[:-1]) and float(stretch[-1, 0]) > 75
    assert not torch.equal(stretch[:20], pos[:20])  # every position moves
    lc = resize_text_positions(pos, 168, "long-clip")
    assert torch.equal(lc[:20], pos[:20])  # the first 20 exactly
    assert float(lc[20, 0]) == 20.0 and float(lc[-1, 0]) == 76.0  # the rest stretched, ends aligned
    assert torch.all(lc[21:] >= lc[20:-1]) and torch.all(lc[21:] - lc[20:-1] < 1.0)
    ext = resize_text_positions(pos, 168, "extend")
    assert torch.equal(ext[:77], pos)  # all 77 exactly
    new = ext[77:, 0].tolist()  # 91 new slots from the last 77 positions, repeated in order
    assert new[:77] == list(range(0, 77)) and new[77:] == list(range(0, 14))
    short = resize_text_positions(pos, 90, "extend")
    assert short[77:, 0].tolist() == list(range(64, 77))  # 13 new slots copy the last 13 positions
    assert torch.equal(resize_text_positions(pos, 40, "extend"), pos[:40])
    assert torch.equal(resize_text_positions(pos, 77, "long-clip"), pos)


def test_import_records_the_text_position_mode(reference, tmp_path):
    import json

    sd_path = tmp_path / "sd.pt"
    torch.save(reference.state_dict(), sd_path)
    src = reference.state_dict()["positional_embedding"]
    with pytest.raises(ImportError_, match="--activation"):  # a plain state dict does not say its activation
        import_clip(sd_path, tmp_path / "ck0", image_size=(48, 16), context_length=40)
    out = import_clip(sd_path, tmp_path / "ck", image_size=(48, 16), context_length=40, text_positions="long-clip", model_name="ViT-B-16-quickgelu")
    meta = json.loads((out / "meta.json").read_text())
    assert meta["text_positions"] == {"mode": "long-clip", "source_length": src.shape[0], "length": 40}
    assert meta["config"]["model"]["activation"] == "quick_gelu" and meta["source_format"] == "state-dict"
    m = from_checkpoint(out).model
    keep = min(20, src.shape[0] - 1)
    assert torch.equal(m.text.positional_embedding[:keep], src[:keep].float()) and m.text.positional_embedding.shape[0] == 40


def test_text_position_offsets_read_the_shifted_rows_of_the_position_table():
    """Position jitter: offset k gives what offset 0 gives once the table's first k rows are cut."""
    from ufinebench.model.clip import TextTransformer

    torch.manual_seed(0)
    text = TextTransformer(8, 30, 16, 1, 2, 16, eot_id=3, pool="mean", position_jitter=4).eval()
    assert text.positional_embedding.shape == (8 + 4, 16)  # the table grows by the jitter
    ids = torch.tensor([[2, 5, 7, 9, 3, 0], [2, 6, 3, 0, 0, 0]])
    with torch.no_grad():
        g_none, _ = text(ids)
        g_zero, _ = text(ids, torch.zeros(2, dtype=torch.long))
        g_shift, _ = text(ids, torch.tensor([3, 1]))
        table = text.positional_embedding.detach().clone()
        for row, k in enumerate((3, 1)):  # text `row` at offset 0 with a table that starts at row k
            text.positional_embedding.data = torch.cat([table[k:], table[:k]])
            g_ref, _ = text(ids[row : row + 1])
            assert torch.allclose(g_shift[row], g_ref[0], atol=1e-6)
        text.positional_embedding.data = table
    assert torch.equal(g_none, g_zero)
    assert not torch.allclose(g_none, g_shift)  # positions matter, so the test can fail
    with pytest.raises(ValueError, match="position table"):
        text(ids, torch.tensor([7, 0]))  # 7 + 6 > 12 rows
    with pytest.raises(ValueError, match="text_position_jitter"):
        ModelConfig(text_position_jitter=-1)


def test_text_local_kernel_binds_neighbouring_words():
    """Without positions, a mean-pooled text encoder is a bag of words: "blue jacket, black
    jeans" and "black jacket, blue jeans" embed the same. The local convolution makes each word
    carry its neighbours, so the two differ, and padding never reaches a word's neighbourhood."""
    from ufinebench.model.clip import TextTransformer

    torch.manual_seed(0)
    blue, black, jacket, jeans = 5, 6, 7, 8
    ids = torch.tensor([[1, blue, jacket, black, jeans, 2], [1, black, jacket, blue, jeans, 2]])  # (2, 6): start .. end
    for kernel in (0, 3):
        text = TextTransformer(16, 20, 32, 1, 2, 16, eot_id=2, pool="mean", local_kernel=kernel).eval()
        text.positional_embedding.data.zero_()  # no positions: only the local convolution can tell the orders apart
        with torch.no_grad():
            g, _ = text(ids)
            padded = torch.cat([ids, torch.zeros(2, 5, dtype=torch.long)], dim=1)  # (2, 11): more padding after the end
            g_padded, _ = text(padded)
        assert torch.allclose(g, g_padded, atol=1e-5)
        if kernel == 0:
            assert torch.allclose(g[0], g[1], atol=1e-5)
        else:
            assert (g[0] - g[1]).norm() > 1e-2 * g[0].norm()
    for bad in (-1, 2):
        with pytest.raises(ValueError, match="text_local_kernel"):
            ModelConfig(text_local_kernel=bad)
