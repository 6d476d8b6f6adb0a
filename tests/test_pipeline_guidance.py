"""Guidance: the formula, ONE batched UNet call per step, 2-pass text CFG when demos are off."""

import numpy as np
import pytest
import torch

from suti.models.subject_attn import DemoContext
from suti.pipeline.guidance import combine, plan_passes

from _tiny import demo_images, gen, run, tiny_pipe


def test_plans():
    dual = plan_passes("dual", 0, 5.0, 3.0, has_demos=True)
    assert [(p.text, p.demo) for p in dual] == [(False, False), (True, False), (True, True)]
    assert [p.coef for p in dual] == [-4.0, 2.0, 3.0]
    for s_subj, has in ((0.0, True), (3.0, False)):  # 2-pass text-only CFG
        assert [(p.text, p.demo) for p in plan_passes("dual", 0, 5.0, s_subj, has)] == [(False, False), (True, False)]
    text_led = plan_passes("interleaved", 0, 5.0, 3.0, True)
    subject_led = plan_passes("interleaved", 1, 5.0, 3.0, True)
    assert [(p.text, p.demo, p.coef) for p in text_led] == [(False, True, -4.0), (True, True, 5.0)]
    assert [(p.text, p.demo, p.coef) for p in subject_led] == [(True, False, -2.0), (True, True, 3.0)]
    assert [(p.text, p.demo) for p in plan_passes("dual", 0, 1.0, 1.0, True)] == [(True, True)]  # no guidance
    for mode in ("dual", "interleaved"):
        for step in (0, 1):
            assert sum(p.coef for p in plan_passes(mode, step, 7.5, 2.0, True)) == pytest.approx(1.0)


def test_combine_is_the_dual_formula():
    g = torch.Generator().manual_seed(0)
    e00, et0, etd = (torch.randn(2, 3, 4, 4, generator=g) for _ in range(3))
    s_t, s_d = 6.0, 2.5
    out = combine(torch.cat([e00, et0, etd]), plan_passes("dual", 0, s_t, s_d, True))
    torch.testing.assert_close(out, e00 + s_t * (et0 - e00) + s_d * (etd - et0), atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_one_batched_unet_call_equals_three_separate_passes():
    pipe = tiny_pipe()
    demos = pipe.prepare_demos([demo_images(3)], None)
    ctx = pipe.encode_demos(demos, 0)
    cond, _ = pipe.encode_text(["a red circle"])
    uncond, _ = pipe.encode_text([""])
    x = torch.randn(1, 3, 16, 16, generator=gen(0))
    t = torch.tensor(600)
    e00 = pipe.unet(x, t, encoder_hidden_states=uncond).sample
    et0 = pipe.unet(x, t, encoder_hidden_states=cond).sample
    etd = pipe.unet(x, t, encoder_hidden_states=(cond, ctx)).sample
    passes = plan_passes("dual", 0, 5.0, 3.0, True)
    text_in = torch.cat([cond if p.text else uncond for p in passes])
    demo_in = DemoContext.cat([ctx.with_weight(float(p.demo)) for p in passes])
    batched = pipe.unet(torch.cat([x] * 3), t, encoder_hidden_states=(text_in, demo_in)).sample
    torch.testing.assert_close(batched, torch.cat([e00, et0, etd]), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(combine(batched, passes), e00 + 5 * (et0 - e00) + 3 * (etd - et0), atol=1e-4, rtol=1e-4)


def _unet_batches(pipe, **kw):
    sizes = []
    hook = pipe.unet.register_forward_pre_hook(lambda m, a, k: sizes.append(
        (a[0].shape[0], isinstance(k.get("encoder_hidden_states"), tuple))), with_kwargs=True)
    out = run(pipe, **kw)
    hook.remove()
    return sizes, out


def test_pipeline_batches_the_passes_into_one_call():
    pipe = tiny_pipe()
    sizes, _ = _unet_batches(pipe, prompt="a red circle", demos=demo_images(3), steps=3, guidance_scale=5.0)
    assert sizes == [(3, True)] * 3  # dual, s_text != s_subj: three passes, one call per step
    sizes, _ = _unet_batches(pipe, prompt="a red circle", demos=demo_images(3), steps=3)
    assert sizes == [(2, True)] * 3  # the defaults s_text = s_subj = 3: e(t,0) has weight 0, so it is not run
    sizes, _ = _unet_batches(pipe, prompt=["a", "b"], demos=[demo_images(3), demo_images(4)], steps=2,
                             generator=[gen(0), gen(1)], guidance_scale=5.0)
    assert sizes == [(6, True)] * 2
    sizes, _ = _unet_batches(pipe, prompt="a red circle", demos=demo_images(3), steps=4, guidance_mode="interleaved")
    assert sizes == [(2, True)] * 4
    sizes, text_cfg = _unet_batches(pipe, prompt="a red circle", demos=demo_images(3), steps=3,
                                    subject_guidance_scale=0.0)
    assert sizes == [(2, False)] * 3  # s_subj = 0: plain 2-pass text CFG, demos never enter the UNet
    sizes, text_only = _unet_batches(pipe, prompt="a red circle", demos=None, steps=3)
    assert sizes == [(2, False)] * 3
    assert np.array_equal(text_cfg, text_only)


def test_interleaved_differs_from_dual_and_is_finite():
    pipe = tiny_pipe()
    dual = run(pipe, "a red circle", demo_images(3), steps=4)
    inter = run(pipe, "a red circle", demo_images(3), steps=4, guidance_mode="interleaved")
    assert np.isfinite(inter).all() and not np.array_equal(dual, inter)
