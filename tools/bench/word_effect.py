"""Word-effect probe: how much one prompt word moves a model's prediction, at the subject and around it.

    python -m tools.bench.word_effect --model models/world --out bench/word_effect.json [--t 850] [--draws 8]

For each swap (one word of a base prompt replaced, or a phrase added) the probe runs the UNet text-only
at timestep t on the same noised frames (`--draws` noise draws of a mid-grey frame) with both prompts
and reports the mean absolute change of the predicted x0 in grey levels (0-255), over the centre
12x12 px (where the subject is drawn at the default size) and over the rest of the frame. A model that
has learned a word moves the prediction where that word acts: colour, shape and pattern words at the
centre, scene words at the border, accessory words (a hat above the body, glasses on it) at the centre's
edge. This is a diagnosis of what a model listens to, not a quality score.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tools.bench import emit_or_fail

BASE_PROMPT = "a photo of a red dotted flower"
SWAPS = (("colour", "red", "green"), ("shape", "flower", "star"), ("pattern", "dotted", "striped"),
         ("scene", "flower", "flower on the beach"), ("hat", "flower", "flower wearing a hat"),
         ("glasses", "flower", "flower wearing glasses"))  # fmt: skip
CENTRE = 12  # px: the centre square, at 32 px the subject's body at the default size


def word_effects(model_dir: str, t: int = 850, draws: int = 8, seed: int = 0) -> dict:
    """{swap name: {"from", "to", "centre", "border"}} for the model in `model_dir`."""
    import torch

    from suti.errors import InputError
    from suti.pipeline import SuTIPipeline
    from suti.train.model import TrainModule
    from suti.train.recipe import load_recipe

    if not Path(model_dir).is_dir():
        raise InputError(f"model directory {model_dir} not found")
    pipe = SuTIPipeline.from_pretrained(model_dir)  # fp16 files, float32 compute
    module = TrainModule(pipe, load_recipe("apprentice")).eval()
    T = module.scheduler.config.num_train_timesteps
    if not 0 <= t < T:
        raise InputError(f"--t must be in [0, {T}), got {t}")
    size = pipe.unet.config.sample_size
    g = torch.Generator().manual_seed(seed)
    x0 = torch.zeros(draws, pipe.unet.config.in_channels, size, size)  # (D, C, s, s) mid-grey in model space
    steps = torch.full((draws,), t, dtype=torch.long)
    x_t = module.noisy(x0, torch.randn(x0.shape, generator=g), steps)  # (D, C, s, s)

    def predict(prompt: str) -> torch.Tensor:
        ids = pipe.tokenize([prompt] * draws).input_ids  # (D, L)
        with torch.no_grad():
            x0_hat = module.predicted_x0(module.denoise(x_t, steps, ids), x_t, steps)
            if module.vae is not None:
                x0_hat = module.vae.decode(x0_hat / module.vae.config.scaling_factor).sample
        return x0_hat.clamp(-1, 1) * 127.5  # (D, 3, S, S) grey levels

    base = predict(BASE_PROMPT)
    S = base.shape[-1]
    lo = (S - CENTRE) // 2
    centre = torch.zeros(S, S, dtype=torch.bool)
    centre[lo: lo + CENTRE, lo: lo + CENTRE] = True
    out = {}
    for name, old, new in SWAPS:
        change = (predict(BASE_PROMPT.replace(old, new)) - base).abs().mean(dim=(0, 1))  # (S, S)
        out[name] = {"from": old, "to": new, "centre": round(float(change[centre].mean()), 3),
                     "border": round(float(change[~centre].mean()), 3)}  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.bench.word_effect", description=__doc__.split("\n")[0])
    p.add_argument("--model", action="append", required=True, help="SuTIPipeline dir (repeat to compare).")
    p.add_argument("--out", type=Path, help="JSON file to write (default: print only).")
    p.add_argument("--t", type=int, default=850, help="Timestep of the probe (high noise: where prompts act).")
    p.add_argument("--draws", type=int, default=8, help="Noise draws averaged over.")
    args = p.parse_args(argv)
    return emit_or_fail(lambda: {"base_prompt": BASE_PROMPT, "t": args.t, "draws": args.draws, "centre_px": CENTRE,
                                 "models": {m: word_effects(m, args.t, args.draws) for m in args.model}},
                        args.out)  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
