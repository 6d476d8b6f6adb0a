"""Demo tokens with places (subject.positions): the locality bias is exact, zero gate is still the base,
and a demo attention head with a strong locality reads the demo at its own spot of the frame."""

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from suti.errors import InputError
from suti.models.base import build_base
from suti.models.subject_attn import LOCALITY_SCALE, DemoContext, grid_places
from suti.models.subject_layers import install_subject_layers

from _tiny import tiny_config


def _config():
    cfg = tiny_config()
    return replace(cfg, subject=replace(cfg.subject, levels=("down.0", "mid"), positions=True))


def _demos(cfg, b=2, n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    s, d, L = cfg.unet.sample_size, cfg.unet.cross_attention_dim, cfg.text.max_length
    return torch.randn(b, n, 3, s, s, generator=g), torch.randn(b, n, L, d, generator=g)


def test_grid_places_are_row_major_cell_centres():
    p = grid_places(2, 4)
    assert p.shape == (8, 3)
    assert torch.allclose(p[1], torch.tensor([0.375, 0.25, 1.0]))  # row 0, column 1
    assert torch.allclose(p[4], torch.tensor([0.125, 0.75, 1.0]))  # row 1, column 0


def test_demo_tokens_carry_their_places_and_captions_none():
    cfg = _config()
    base = build_base(cfg)
    layers = install_subject_layers(base.unet, cfg.subject)
    images, caps = _demos(cfg)
    ctx = layers.encode_demos(base.unet, images, caps)
    T = layers.demo_encoder.tokens_per_demo(base.unet, cfg.text.max_length)
    assert ctx.positions.shape == (2, 3 * T, 3)
    per_demo = ctx.positions[0, :T]
    n_img = T - cfg.text.max_length
    assert torch.all(per_demo[:n_img, 2] == 1) and torch.all(per_demo[n_img:] == 0)  # captions: no place
    assert torch.equal(ctx.positions[1, T:2 * T], per_demo)  # the same layout for every demo and sample
    # a context moved, repeated and batched keeps them
    assert torch.equal(ctx.to("cpu", torch.float64).positions, ctx.positions.double())
    assert torch.equal(ctx.repeat_interleave(2).positions[1], ctx.positions[0])
    assert DemoContext.cat_padded([ctx, DemoContext(ctx.tokens[:, :T])]).positions.shape == (4, 3 * T, 3)


def test_locality_bias_equals_the_explicit_formula():
    cfg = _config()
    base = build_base(cfg)
    layers = install_subject_layers(base.unet, cfg.subject)
    proc = layers.processor(layers.paths[0])
    with torch.no_grad():
        proc.locality.copy_(torch.linspace(0.5, 2.0, proc.locality.numel()))
    g = torch.Generator().manual_seed(1)
    B, H, L, M, d = 2, proc.locality.numel(), 16, 10, 8
    q, k, v = (torch.randn(B, H, n, d, generator=g) for n in (L, M, M))
    pos = torch.cat([torch.rand(B, M - 3, 2, generator=g), torch.ones(B, M - 3, 1)], dim=-1)
    pos = torch.cat([pos, torch.zeros(B, 3, 3)], dim=1)  # the last 3 keys have no place
    q2, k2 = proc.query_with_locality(q), proc.key_with_locality(k, pos)
    got = F.scaled_dot_product_attention(q2, k2, v, scale=1.0)
    pq = grid_places(4, 4)[:, :2]
    dist2 = ((pq[None, :, None, :] - pos[:, None, :, :2]) ** 2).sum(-1)  # (B, L, M)
    bias = -(LOCALITY_SCALE * proc.locality).view(1, H, 1, 1) * (dist2 * pos[..., 2][:, None, :])[:, None]
    want = torch.softmax(q @ k.transpose(-1, -2) / d ** 0.5 + bias, dim=-1) @ v
    assert torch.allclose(got, want, atol=1e-5)
    with pytest.raises(InputError, match="square"):
        proc.query_with_locality(q[:, :, :15])


@torch.no_grad()
def test_zero_gate_is_still_exactly_the_base_unet():
    cfg = _config()
    base = build_base(cfg)
    g = torch.Generator().manual_seed(0)
    s = cfg.unet.sample_size
    x, t = torch.randn(2, 3, s, s, generator=g), torch.tensor([10, 500])
    text = torch.randn(2, cfg.text.max_length, cfg.unet.cross_attention_dim, generator=g)
    ref = base.unet(x, t, encoder_hidden_states=text).sample
    layers = install_subject_layers(base.unet, cfg.subject)
    ctx = layers.encode_demos(base.unet, *_demos(cfg))
    assert torch.equal(base.unet(x, t, encoder_hidden_states=(text, ctx)).sample, ref)
    layers.set_gates(0.5)
    with_places = base.unet(x, t, encoder_hidden_states=(text, ctx)).sample
    without = base.unet(x, t, encoder_hidden_states=(text, replace(ctx, positions=None))).sample
    assert (with_places - ref).abs().max() > 1e-3
    assert (with_places - without).abs().max() > 1e-4  # the places act


@torch.no_grad()
def test_strong_locality_reads_the_demo_at_the_same_spot():
    """With a huge alpha, each query position attends (almost) only to the demo tokens of its own cell."""
    cfg = _config()
    base = build_base(cfg)
    layers = install_subject_layers(base.unet, cfg.subject)
    proc = layers.processor(layers.paths[0])
    proc.locality.fill_(1e4)
    H = proc.locality.numel()
    side, d = 4, 8
    q = torch.zeros(1, H, side * side, d)  # no content preference at all
    keys = grid_places(side, side)  # one demo token per cell, value = its own index
    v = torch.arange(side * side, dtype=torch.float32).view(1, 1, -1, 1).expand(1, H, -1, 1)
    k = torch.randn(1, H, side * side, d)
    q2, k2 = proc.query_with_locality(q), proc.key_with_locality(k, keys[None])
    y = F.scaled_dot_product_attention(q2, k2, v.contiguous(), scale=1.0)
    assert torch.allclose(y[0, :, :, 0], torch.arange(side * side, dtype=torch.float32).expand(H, -1), atol=1e-3)


def test_pipeline_with_places_saves_loads_and_batches(tmp_path):
    import numpy as np

    from suti.pipeline import SuTIPipeline

    from _tiny import demo_images, run, tiny_pipe

    pipe = tiny_pipe(_config())
    before = run(pipe, "a red circle", demo_images(3))
    pipe.save_pretrained(tmp_path)
    loaded = SuTIPipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    assert loaded.subject.config.positions
    assert np.array_equal(run(loaded, "a red circle", demo_images(3)), before)
    # an encoded subject (places included) reused through subject_embeds gives the same images
    ctx = loaded.encode_subject(demo_images(3))
    assert ctx.positions is not None
    assert np.array_equal(run(loaded, "a red circle", subject_embeds=ctx), before)


def test_subject_store_keeps_the_places(tmp_path):
    from suti.serve.subjects import SubjectStore

    cfg = _config()
    base = build_base(cfg)
    layers = install_subject_layers(base.unet, cfg.subject)
    with torch.no_grad():
        ctx = layers.encode_demos(base.unet, *_demos(cfg, b=1)).to("cpu", torch.float32)
    store = SubjectStore(tmp_path, "f" * 64, cache_items=0)
    record = store.add(ctx, 3, ["", "", ""])
    back, _ = SubjectStore(tmp_path, "f" * 64).get(record.subject_id)
    assert torch.equal(back.positions, ctx.positions) and torch.equal(back.tokens, ctx.tokens)
