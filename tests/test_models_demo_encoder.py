"""DemoEncoder: runs the UNet's own down path (same parameter objects), gradients reach the UNet through it."""

import pytest
import torch

from suti.models.base import build_base
from suti.models.config import SubjectConfig
from suti.models.subject_attn import DemoContext
from suti.models.subject_layers import install_subject_layers

from _tiny import tiny_config


@pytest.fixture()
def model():
    cfg = tiny_config()
    base = build_base(cfg)
    layers = install_subject_layers(base.unet, cfg.subject)
    return cfg, base, layers


def _demos(cfg, b=2, n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    s, d, L = cfg.unet.sample_size, cfg.unet.cross_attention_dim, cfg.text.max_length
    images = torch.rand(b, n, 3, s, s, generator=g) * 2 - 1
    caps = torch.randn(b, n, L, d, generator=g)
    cap_mask = torch.ones(b, n, L, dtype=torch.bool)
    cap_mask[..., 5:] = False
    return images, caps, cap_mask


def test_owns_no_unet_weights(model):
    cfg, base, layers = model
    enc = layers.demo_encoder
    unet_ids = {id(p) for p in base.unet.parameters()}
    assert not unet_ids & {id(p) for p in enc.parameters()}
    assert not any(m is base.unet or m is base.unet.conv_in for m in enc.modules())
    assert not any(k.startswith(("conv_in", "down_blocks", "mid_block", "time_embedding")) for k in enc.state_dict())
    # subject layers as a whole own only the processors' and the encoder's parameters
    subject_ids = {id(p) for p in layers.parameters()}
    assert subject_ids & unet_ids == {id(p) for n, p in base.unet.named_parameters() if ".processor." in n}


@torch.no_grad()
def test_runs_the_unets_own_modules(model):
    cfg, base, layers = model
    images, caps, cap_mask = _demos(cfg)
    seen = []
    hooks = [m.register_forward_hook(lambda mod, i, o: seen.append(mod))
             for m in (base.unet.conv_in, base.unet.down_blocks[0], base.unet.down_blocks[1], base.unet.mid_block)]
    ctx = layers.encode_demos(base.unet, images, caps, cap_mask)
    for h in hooks:
        h.remove()
    assert seen == [base.unet.conv_in, base.unet.down_blocks[0], base.unet.down_blocks[1], base.unet.mid_block]
    assert not any(m in seen for m in base.unet.up_blocks)
    # the computation reads the UNet's weight tensors themselves: changing them in place changes the tokens
    base.unet.conv_in.weight.mul_(0.5)
    assert not torch.allclose(layers.encode_demos(base.unet, images, caps, cap_mask).tokens, ctx.tokens)


@torch.no_grad()
def test_token_layout_masks_and_padding(model):
    cfg, base, layers = model
    images, caps, cap_mask = _demos(cfg)
    L, n = cfg.text.max_length, 3
    T = layers.demo_encoder.tokens_per_demo(base.unet, L)
    assert T == (cfg.unet.sample_size // 2) ** 2 + L  # mid-block map 8x8 + caption tokens
    demo_mask = torch.tensor([[True, True, True], [True, True, False]])  # sample 1 has only 2 demos
    ctx = layers.encode_demos(base.unet, images, caps, cap_mask, demo_mask)
    assert ctx.tokens.shape == (2, n * T, cfg.unet.cross_attention_dim) and ctx.mask.shape == (2, n * T)
    m = ctx.mask.view(2, n, T)
    assert m[0, :, : T - L].all() and m[1, 2].sum() == 0  # padded demo slot fully masked
    assert torch.equal(m[0, 0, T - L:], cap_mask[0, 0])  # caption padding masked
    # sample 1 (2 demos, padded) == that sample encoded alone with 2 demos
    alone = layers.encode_demos(base.unet, images[1:, :2], caps[1:, :2], cap_mask[1:, :2])
    torch.testing.assert_close(ctx.tokens[1, : 2 * T], alone.tokens[0], atol=1e-5, rtol=1e-5)
    # timestep matters (t = 0 is the default)
    assert not torch.allclose(layers.encode_demos(base.unet, images, caps, cap_mask, timestep=500).tokens,
                              layers.encode_demos(base.unet, images, caps, cap_mask).tokens)


def test_gradients_reach_the_unet_through_the_demo_path(model):
    cfg, base, layers = model
    unet = base.unet
    layers.set_gates(0.5)
    images, caps, cap_mask = _demos(cfg, b=2)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, cfg.unet.sample_size, cfg.unet.sample_size, generator=g)
    text = torch.randn(2, cfg.text.max_length, cfg.unet.cross_attention_dim, generator=g)

    # isolate the demo path: d(loss)/d(tokens) from the denoiser, then back through the encoder only
    ctx = layers.encode_demos(unet, images, caps, cap_mask)
    leaf = ctx.tokens.detach().requires_grad_(True)
    out = unet(x, torch.tensor([300, 700]), encoder_hidden_states=(text, DemoContext(leaf, ctx.mask))).sample
    out.pow(2).mean().backward()
    unet.zero_grad(set_to_none=True)
    ctx.tokens.backward(leaf.grad)
    demo_path = {
        "conv_in": unet.conv_in.weight, "time_embedding": unet.time_embedding.linear_1.weight,
        "down0": unet.down_blocks[0].resnets[0].conv1.weight,
        "down1_attn": unet.down_blocks[1].attentions[0].transformer_blocks[0].attn2.to_k.weight,
        "mid": unet.mid_block.resnets[0].conv1.weight,
    }
    for name, p in demo_path.items():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert unet.up_blocks[0].resnets[0].conv1.weight.grad is None  # not on the demo path
    assert all(p.grad is not None for p in layers.demo_encoder.proj.parameters())

    # a training step on the full loss moves UNet weights, the encoder heads and the gates
    unet.zero_grad(set_to_none=True)
    params = list({id(p): p for p in list(unet.parameters()) + list(layers.parameters())}.values())
    opt = torch.optim.SGD(params, lr=0.1)
    before = {k: v.detach().clone() for k, v in demo_path.items()}
    proj_before = next(iter(layers.demo_encoder.proj.values())).weight.detach().clone()
    gate_before = layers.gates()
    ctx = layers.encode_demos(unet, images, caps, cap_mask)
    unet(x, torch.tensor([300, 700]), encoder_hidden_states=(text, ctx)).sample.pow(2).mean().backward()
    opt.step()
    assert all(not torch.equal(before[k], v) for k, v in demo_path.items())
    assert not torch.equal(proj_before, next(iter(layers.demo_encoder.proj.values())).weight)
    assert layers.gates() != gate_before


def test_zero_gate_still_gets_a_gradient(model):
    cfg, base, layers = model
    images, caps, cap_mask = _demos(cfg, b=1)
    x = torch.randn(1, 3, cfg.unet.sample_size, cfg.unet.sample_size)
    text = torch.randn(1, cfg.text.max_length, cfg.unet.cross_attention_dim)
    ctx = layers.encode_demos(base.unet, images, caps, cap_mask)
    base.unet(x, 500, encoder_hidden_states=(text, ctx)).sample.pow(2).mean().backward()
    gate_grads = [layers.processor(p).gate.grad for p in layers.paths]
    assert all(g is not None and g.abs() > 0 for g in gate_grads)


def test_levels_and_pooling(model):
    cfg, _, _ = model
    base = build_base(cfg)
    layers = install_subject_layers(base.unet, SubjectConfig(levels=("down.0", "mid"), pool_size=2,
                                                             caption_tokens=False))
    images, caps, cap_mask = _demos(cfg, b=1, n=2)
    with torch.no_grad():
        ctx = layers.encode_demos(base.unet, images, caps, cap_mask)
    assert ctx.tokens.shape == (1, 2 * (4 + 4), cfg.unet.cross_attention_dim)
    assert layers.demo_encoder.tokens_per_demo(base.unet, cfg.text.max_length) == 8
