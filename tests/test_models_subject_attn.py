"""Subject attention: zero gate == base UNet, explicit demo channel, exact install/uninstall, namespaced weights."""

import copy

import pytest
import torch

from suti.errors import ConfigError, ModelLoadError
from suti.models.base import build_base
from suti.models.config import SubjectConfig
from suti.models.subject_attn import DemoContext, SubjectAttnProcessor, TextOnlyProcessor
from suti.models.subject_layers import SubjectLayers, install_subject_layers, uninstall_subject_layers

from _tiny import tiny_config


@pytest.fixture()
def base():
    return build_base(tiny_config())


def _inputs(cfg, b=2, m=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    s, d = cfg.unet.sample_size, cfg.unet.cross_attention_dim
    x = torch.randn(b, 3, s, s, generator=g)
    text = torch.randn(b, cfg.text.max_length, d, generator=g)
    demo = DemoContext(torch.randn(b, m, d, generator=g))
    return x, torch.tensor([10, 500]), text, demo


@torch.no_grad()
def test_zero_gate_is_exactly_the_base_unet(base):
    cfg = tiny_config()
    x, t, text, demo = _inputs(cfg)
    ref = base.unet(x, t, encoder_hidden_states=text).sample  # before installation
    layers = install_subject_layers(base.unet, cfg.subject)
    assert all(g == 0.0 for g in layers.gates().values())
    out_demo = base.unet(x, t, encoder_hidden_states=(text, demo)).sample
    out_plain = base.unet(x, t, encoder_hidden_states=text).sample
    out_none = base.unet(x, t, encoder_hidden_states=(text, None)).sample
    assert torch.equal(out_demo, ref) and torch.equal(out_plain, ref) and torch.equal(out_none, ref)

    layers.set_gates(0.5)
    out = base.unet(x, t, encoder_hidden_states=(text, demo)).sample
    assert (out - ref).abs().max() > 1e-3
    assert torch.equal(base.unet(x, t, encoder_hidden_states=text).sample, ref)  # text-only call = base


@torch.no_grad()
def test_demo_key_value_cache_is_exact_and_computes_demo_keys_once(base):
    cfg = tiny_config()
    x, t, text, demo = _inputs(cfg)
    layers = install_subject_layers(base.unet, cfg.subject)
    layers.set_gates(0.5)
    ref = base.unet(x, t, encoder_hidden_states=(text, demo)).sample
    calls = []
    hooks = [layers.processor(p).to_k_demo.register_forward_hook(lambda *a: calls.append(1)) for p in layers.paths]
    cache: dict = {}
    steps = [base.unet(x, t_i, encoder_hidden_states=(text, demo.cached(cache))).sample
             for t_i in (t, torch.tensor([300, 20]), t)]
    for h in hooks:
        h.remove()
    assert torch.equal(steps[0], ref) and torch.equal(steps[2], ref)  # reused keys/values give the same output
    assert len(calls) == len(layers.paths) == len(cache)  # demo keys computed at the first call only
    # a different rows pattern (sample 0 switched off) is its own entry, not a stale reuse
    off = base.unet(x, t, encoder_hidden_states=(text, demo.with_weight(torch.tensor([0.0, 1.0])).cached(cache))).sample
    assert len(cache) == 2 * len(layers.paths)
    assert torch.equal(off[1], ref[1]) and not torch.equal(off[0], ref[0])
    with torch.enable_grad():  # training never reads a cache: keys must carry gradients to the demo tokens
        leaf = demo.tokens.clone().requires_grad_(True)
        out = base.unet(x, t, encoder_hidden_states=(text, DemoContext(leaf).cached(cache))).sample
        out.sum().backward()
    assert leaf.grad is not None and leaf.grad.abs().sum() > 0


@torch.no_grad()
def test_per_sample_weight_and_masks(base):
    cfg = tiny_config()
    x, t, text, demo = _inputs(cfg)
    ref = base.unet(x, t, encoder_hidden_states=text).sample
    layers = install_subject_layers(base.unet, cfg.subject)
    layers.set_gates(0.5)
    # weight 0 for sample 0 only: sample 0 is exactly the base, sample 1 is not
    out = base.unet(x, t, encoder_hidden_states=(text, demo.with_weight(torch.tensor([0.0, 1.0])))).sample
    assert torch.equal(out[0], ref[0]) and (out[1] - ref[1]).abs().max() > 1e-3
    # rows without demos are skipped, not computed: sample 1 is the same with or without a demo neighbour
    both = base.unet(x, t, encoder_hidden_states=(text, demo.with_weight(torch.tensor([1.0, 1.0])))).sample
    assert torch.allclose(both[1], out[1], atol=1e-5) and (both[0] - ref[0]).abs().max() > 1e-3
    # a sample whose demo tokens are all padding gets the base output (and stays finite)
    mask = torch.ones(2, demo.tokens.shape[1], dtype=torch.bool)
    mask[0] = False
    out = base.unet(x, t, encoder_hidden_states=(text, DemoContext(demo.tokens, mask))).sample
    assert torch.isfinite(out).all() and torch.equal(out[0], ref[0])
    # padded tokens do not matter
    mask = torch.ones_like(mask)
    mask[:, 15:] = False
    tokens2 = demo.tokens.clone()
    tokens2[:, 15:] = 1e3
    a = base.unet(x, t, encoder_hidden_states=(text, DemoContext(demo.tokens, mask))).sample
    b = base.unet(x, t, encoder_hidden_states=(text, DemoContext(tokens2, mask))).sample
    assert torch.equal(a, b)


def test_install_uninstall_restores_exact_processors(base):
    unet = base.unet
    before = dict(unet.attn_processors)
    keys_before = set(unet.state_dict())
    ref_sd = copy.deepcopy(unet.state_dict())
    layers = install_subject_layers(unet, SubjectConfig())
    assert layers.blocks == ("down.1", "mid", "up.0")  # default: the lowest-resolution blocks
    procs = unet.attn_processors
    for path in layers.paths:
        assert isinstance(procs[path + ".processor"], SubjectAttnProcessor)
        assert path.startswith(("down_blocks.1.", "mid_block.", "up_blocks.0."))
    others = [k for k, p in procs.items() if "attn2" in k and k[: -len(".processor")] not in layers.paths]
    assert others and all(isinstance(procs[k], TextOnlyProcessor) for k in others)
    assert all(".attn1." not in p for p in layers.paths)
    with pytest.raises(ConfigError, match="already"):
        layers.install(unet)
    with pytest.raises(ConfigError, match="already"):
        install_subject_layers(unet, SubjectConfig())

    uninstall_subject_layers(unet, layers)
    after = unet.attn_processors
    assert after.keys() == before.keys() and all(after[k] is before[k] for k in before)
    assert set(unet.state_dict()) == keys_before
    assert all(torch.equal(v, ref_sd[k]) for k, v in unet.state_dict().items())
    layers.install(unet)  # re-installable
    assert isinstance(unet.attn_processors[layers.paths[0] + ".processor"], SubjectAttnProcessor)


def test_demo_kv_start_from_text_kv_and_gate_is_zero(base):
    layers = install_subject_layers(base.unet, SubjectConfig())
    attn = dict(base.unet.named_modules())[layers.paths[0]]
    proc = layers.processor(layers.paths[0])
    assert torch.equal(proc.to_k_demo.weight, attn.to_k.weight) and proc.to_k_demo.weight is not attn.to_k.weight
    assert torch.equal(proc.to_v_demo.weight, attn.to_v.weight)
    assert proc.gate.item() == 0.0 and proc.gate.requires_grad


def test_explicit_blocks_and_errors(base):
    layers = SubjectLayers(base.unet, SubjectConfig(attn_blocks=("down.0", "up.1")))
    assert all(p.startswith(("down_blocks.0.", "up_blocks.1.")) for p in layers.paths) and layers.paths
    with pytest.raises(ConfigError, match="attn_blocks"):
        SubjectLayers(base.unet, SubjectConfig(attn_blocks=("down.5",)))


def test_namespaced_state_dict_round_trip(base, tmp_path):
    layers = install_subject_layers(base.unet, SubjectConfig(), seed=0)
    layers.set_gates(0.3)
    sd = layers.subject_state_dict()
    assert all(k.startswith(("subject.attn.", "subject.demo_encoder.")) for k in sd)
    p = layers.paths[0]
    assert f"subject.attn.{p}.to_k_demo.weight" in sd and f"subject.attn.{p}.gate" in sd
    assert not any("conv_in" in k or "resnets" in k for k in sd)  # no UNet weight is carried
    n_params = sum(v.numel() for v in layers.parameters())
    assert sum(v.numel() for v in sd.values()) == n_params

    layers.save(tmp_path)
    other = build_base(tiny_config())
    loaded = SubjectLayers.load(tmp_path, other.unet)
    assert loaded.config == layers.config
    assert all(torch.equal(v, loaded.subject_state_dict()[k]) for k, v in sd.items())
    bad = dict(sd)
    bad.pop(next(iter(bad)))
    with pytest.raises(ModelLoadError, match="missing"):
        loaded.load_subject_state_dict(bad)
    with pytest.raises(ModelLoadError):
        SubjectLayers.load(tmp_path / "nowhere", other.unet)


@pytest.mark.slow
@torch.no_grad()
def test_zero_gate_on_a_full_size_sd15_unet():
    """Random-init SD-1.5-sized UNet (860 M parameters, ~3.5 GB): installed zero-gated layers == base."""
    from configs import load_preset
    from suti.models.base import build_unet

    cfg = load_preset("sd15")
    torch.manual_seed(0)
    unet = build_unet(cfg.unet).eval()
    x = torch.randn(1, 4, 32, 32)
    text = torch.randn(1, 77, 768)
    ref = unet(x, 500, encoder_hidden_states=text).sample
    layers = install_subject_layers(unet, cfg.subject)
    demo = DemoContext(torch.randn(1, 3 * 141, 768))
    assert torch.equal(unet(x, 500, encoder_hidden_states=(text, demo)).sample, ref)
    layers.set_gates(0.5)
    assert not torch.equal(unet(x, 500, encoder_hidden_states=(text, demo)).sample, ref)
