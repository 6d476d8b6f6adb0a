"""Classifier-free guidance over two conditions (text, demos), as a linear combination of UNet passes.

dual (SuTI-style, every step):
    e = e(∅,∅) + s_text (e(t,∅) − e(∅,∅)) + s_subj (e(t,d) − e(t,∅))
      = (1 − s_text) e(∅,∅) + (s_text − s_subj) e(t,∅) + s_subj e(t,d)
  s_subj = 0 or no demos: plain 2-pass text CFG.
interleaved (Re-Imagen-style): even steps are text-led, odd steps subject-led:
    text-led:    e = e(∅,d) + s_text (e(t,d) − e(∅,d))
    subject-led: e = e(t,∅) + s_subj (e(t,d) − e(t,∅))

A plan lists only the passes with a non-zero coefficient; the pipeline runs them as ONE batched UNet
call (pass-major: the batch is [pass 0 samples, pass 1 samples, ...]) with per-sample demo weight 0/1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

GUIDANCE_MODES = ("dual", "interleaved")


@dataclass(frozen=True)
class GuidancePass:
    text: bool  # the prompt (True) or the empty prompt (False)
    demo: bool  # demo attention on (weight 1) or off (weight 0)
    coef: float  # weight of this pass's prediction in the guided prediction


def plan_passes(mode: str, step: int, text_scale: float, subject_scale: float,
                has_demos: bool) -> tuple[GuidancePass, ...]:
    """The UNet passes needed at denoising step `step` (0-based) and their coefficients (they sum to 1)."""
    if mode not in GUIDANCE_MODES:
        raise ValueError(f"guidance_mode must be one of {GUIDANCE_MODES}, got {mode!r}")
    s_t, s_d = float(text_scale), float(subject_scale)
    if not has_demos:
        terms = [(False, False, 1.0 - s_t), (True, False, s_t)]
    elif mode == "dual":
        terms = [(False, False, 1.0 - s_t), (True, False, s_t - s_d), (True, True, s_d)]
    elif step % 2 == 0:  # interleaved, text-led
        terms = [(False, True, 1.0 - s_t), (True, True, s_t)]
    else:  # interleaved, subject-led
        terms = [(True, False, 1.0 - s_d), (True, True, s_d)]
    passes = tuple(GuidancePass(t, d, c) for t, d, c in terms if c != 0.0)
    return passes or (GuidancePass(True, has_demos, 1.0),)


def combine(predictions: torch.Tensor, passes: Sequence[GuidancePass]) -> torch.Tensor:
    """predictions: (P*B, ...) pass-major batch of UNet outputs -> guided (B, ...)."""
    chunks = predictions.chunk(len(passes))
    if len(passes) == 1:
        return chunks[0] * passes[0].coef if passes[0].coef != 1.0 else chunks[0]
    out = chunks[0] * passes[0].coef
    for chunk, p in zip(chunks[1:], passes[1:]):
        out = out + chunk * p.coef
    return out


def uses_demos(passes: Sequence[GuidancePass]) -> bool:
    return any(p.demo for p in passes)
