"""The training module's loss: demos of rows whose demos are dropped are not encoded, and nothing changes."""

from __future__ import annotations

import torch

from _tiny import tiny_pipe


def test_dropped_rows_skip_demo_encoding_with_the_same_loss_and_gradients():
    from suti.train.model import TrainModule
    from suti.train.recipe import load_recipe

    pipe = tiny_pipe(gate=0.5)
    module = TrainModule(pipe, load_recipe("apprentice_tiny"))
    module.unet.requires_grad_(True)
    g = torch.Generator().manual_seed(0)
    B, N, s = 3, 2, pipe.image_size
    x0 = torch.rand(B, 3, s, s, generator=g) * 2 - 1
    noise, t = torch.randn(B, 3, s, s, generator=g), torch.tensor([900, 500, 100])
    ids = pipe.tokenize(["a red circle", "a red circle on the beach", "a small red circle"]).input_ids
    demos = torch.rand(B, N, 3, s, s, generator=g) * 2 - 1
    demo_ids = pipe.tokenize(["a red circle"] * (B * N)).input_ids.view(B, N, -1)
    mask, weight = torch.ones(B, N, dtype=torch.bool), torch.tensor([1.0, 0.0, 1.0])  # row 1: demos dropped

    seen = []
    encode = module.subject.encode_demos

    def spy(*args, **kwargs):
        seen.append(args[4].clone())  # the demo mask that reaches the encoder
        return encode(*args, **kwargs)

    module.subject.encode_demos = spy
    loss = module(x0, ids, noise, t, demos, demo_ids, mask, weight)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}
    assert seen[0].tolist() == [[True, True], [False, False], [True, True]]

    module.zero_grad(set_to_none=True)  # the reference: every row's demos encoded, the dropped row weighted 0
    x_t = module.noisy(x0, noise, t)
    caps = module.encode_text(demo_ids.flatten(0, 1)).view(B, N, *ids.shape[1:], -1)
    ctx = encode(module.unet, demos, caps, demo_ids != module.pad_id, mask).with_weight(weight)
    pred = module.denoise(x_t, t, ids, ctx)
    ref = ((pred - module.regression_target(x0, noise, t)) ** 2).mean()
    ref.backward()
    assert torch.allclose(loss, ref, atol=1e-6)
    for n, p in module.named_parameters():
        if n in grads:
            assert torch.allclose(grads[n], p.grad, atol=1e-6), n
    assert any(n.startswith("subject.") for n in grads) and any(n.startswith("unet.") for n in grads)
