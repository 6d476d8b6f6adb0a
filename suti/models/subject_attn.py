"""Gated demo cross-attention as a diffusers attention processor (the IP-Adapter idea, for demo tokens).

The demo tokens travel through the UNet in an explicit channel: ``encoder_hidden_states=(text, demo)``
where `demo` is a `DemoContext`. Nothing is concatenated to the text tokens and sliced off again.

    out = base(attn, x, text)                                         # the layer's own processor, untouched
        + tanh(gate) * weight_b * W_out · attention(q(x), k_demo(demo), v_demo(demo))

With `positions=True` (SubjectConfig) every image token carries its 2-D place (x, y in [0, 1]) and so
does every query of the layer's feature map; each head adds a locality bias to its logits,

    logit(q, k) = q·k / sqrt(d) − α_h |p_q − p_k|²           (tokens without a place, captions: no bias)

so a head with α_h > 0 reads the demos where they show the same spot of the frame (a subject's outline
and marks, not only its colours: without places, attention over demo tokens is a bag of features).
The bias is computed inside scaled-dot-product attention by 4 extra dimensions per head (no (L, M)
bias tensor is materialised).

`gate` starts at exactly 0, so a freshly installed layer returns the base output bit for bit. A plain
tensor (or ``demo=None``) as `encoder_hidden_states` runs only the base processor: that is how the
demo encoder runs the same down blocks on the demos with their captions (no recursion into demos).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from suti.errors import InputError

LOCALITY_SCALE = 64.0  # alpha_h = LOCALITY_SCALE * locality_h (so a trainable value of order 1)


def grid_places(h: int, w: int, device: torch.device | str | None = None) -> torch.Tensor:
    """(h*w, 3) rows (x, y, 1) of an h x w map's cell centres in [0, 1], row-major like `flatten(2)`."""
    ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) / h
    xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) / w
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx.flatten(), gy.flatten(), torch.ones(h * w, device=device)], dim=-1)


@dataclass
class DemoContext:
    """Demo tokens for a batch, as they travel in the second slot of `encoder_hidden_states`."""

    tokens: torch.Tensor  # (B, M, D) demo tokens (image feature tokens + caption tokens of every demo)
    mask: torch.Tensor | None = None  # (B, M) bool, True = a real token, False = padding
    weight: torch.Tensor | None = None  # (B,) per-sample demo weight: 0 turns demos off (dropout / guidance)
    positions: torch.Tensor | None = None  # (B, M, 3) (x, y, 1) of image tokens, zeros for tokens without a place
    # Demo keys/values of each subject layer, kept across the denoising steps of ONE sampling call whose
    # demo tokens stay fixed (the pipeline makes it; see `SubjectAttnProcessor.demo_keys`). None: no caching.
    kv_cache: dict | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.tokens.ndim != 3:
            raise InputError(f"demo tokens must be (B, M, D), got shape {tuple(self.tokens.shape)}")
        b, m = self.tokens.shape[:2]
        if self.mask is not None and tuple(self.mask.shape) != (b, m):
            raise InputError(f"demo mask must be (B, M)=({b}, {m}), got {tuple(self.mask.shape)}")
        if self.weight is not None and tuple(self.weight.shape) != (b,):
            raise InputError(f"demo weight must be (B,)=({b},), got {tuple(self.weight.shape)}")
        if self.positions is not None and tuple(self.positions.shape) != (b, m, 3):
            raise InputError(f"demo positions must be (B, M, 3)=({b}, {m}, 3), got {tuple(self.positions.shape)}")

    def cached(self, cache: dict) -> "DemoContext":
        """The same context, whose subject layers keep their demo keys/values in `cache` (and reuse them).

        Only for a sampling loop under `torch.no_grad()` where every step passes the same demo tokens
        with the same per-row weights pattern; a new call needs a new dict."""
        return replace(self, kv_cache=cache)

    @property
    def batch_size(self) -> int:
        return self.tokens.shape[0]

    def full_mask(self) -> torch.Tensor:
        if self.mask is None:
            return torch.ones(self.tokens.shape[:2], dtype=torch.bool, device=self.tokens.device)
        return self.mask.bool()

    def full_weight(self) -> torch.Tensor:
        if self.weight is None:
            return torch.ones(self.batch_size, dtype=self.tokens.dtype, device=self.tokens.device)
        return self.weight.to(self.tokens.dtype)

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "DemoContext":
        """Tokens and positions moved (and cast), the mask made explicit, the per-sample weight dropped."""
        pos = None if self.positions is None else self.positions.to(device, dtype)
        return DemoContext(self.tokens.to(device, dtype), self.full_mask().to(device), None, pos)

    def with_weight(self, weight: torch.Tensor | float) -> "DemoContext":
        w = torch.as_tensor(weight, dtype=self.tokens.dtype, device=self.tokens.device)
        return replace(self, weight=w.expand(self.batch_size).clone())

    def repeat_interleave(self, n: int) -> "DemoContext":
        """Each sample repeated `n` times in place (for several images per prompt)."""
        rep = lambda t: None if t is None else t.repeat_interleave(n, dim=0)  # noqa: E731
        return DemoContext(rep(self.tokens), rep(self.mask), rep(self.weight), rep(self.positions))

    def full_positions(self) -> torch.Tensor:
        if self.positions is None:  # no token has a place
            return self.tokens.new_zeros(*self.tokens.shape[:2], 3)
        return self.positions

    @staticmethod
    def _positions_of(contexts: Sequence["DemoContext"], pad: Any = None) -> torch.Tensor | None:
        if all(c.positions is None for c in contexts):
            return None
        parts = [c.full_positions() for c in contexts]
        return torch.cat([pad(p, 0.0) for p in parts] if pad else parts)

    @staticmethod
    def cat(contexts: Sequence["DemoContext"]) -> "DemoContext":
        """Batch-concatenate contexts with equal token counts (e.g. the guidance passes of one step)."""
        return DemoContext(
            torch.cat([c.tokens for c in contexts]),
            torch.cat([c.full_mask() for c in contexts]),
            torch.cat([c.full_weight() for c in contexts]),
            DemoContext._positions_of(contexts),
        )

    @staticmethod
    def cat_padded(contexts: Sequence["DemoContext"]) -> "DemoContext":
        """Batch-concatenate contexts whose token counts differ (e.g. 3 demos and 5 demos): shorter ones
        are padded with masked-out zero tokens, which attention ignores."""
        m = max(c.tokens.shape[1] for c in contexts)
        pad = lambda t, v: F.pad(t, (0, 0, 0, m - t.shape[1]), value=v) if t.ndim == 3 else \
            F.pad(t, (0, m - t.shape[1]), value=v)  # noqa: E731
        return DemoContext(
            torch.cat([pad(c.tokens, 0.0) for c in contexts]),  # (sum B, m, D)
            torch.cat([pad(c.full_mask(), False) for c in contexts]),  # (sum B, m)
            torch.cat([c.full_weight() for c in contexts]),  # (sum B,)
            DemoContext._positions_of(contexts, pad),  # (sum B, m, 3) or None
        )


def split_encoder_states(encoder_hidden_states: Any) -> tuple[torch.Tensor | None, DemoContext | None]:
    if isinstance(encoder_hidden_states, tuple):
        text, demo = encoder_hidden_states
        return text, demo
    return encoder_hidden_states, None


class TextOnlyProcessor:
    """Pass-through for attn2 layers without subject attention: drops the demo channel, runs the original."""

    def __init__(self, base: Any):
        self.base = base

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None):
        text, _ = split_encoder_states(encoder_hidden_states)
        return self.base(attn, hidden_states, encoder_hidden_states=text, attention_mask=attention_mask, temb=temb)


class SubjectAttnProcessor(nn.Module):
    """attn2 processor = the layer's original processor on text + a zero-gated attention over demo tokens."""

    def __init__(self, attn: nn.Module, positions: bool = False):
        super().__init__()
        to_k, to_v = attn.to_k, attn.to_v
        self.to_k_demo = nn.Linear(to_k.in_features, to_k.out_features, bias=to_k.bias is not None)
        self.to_v_demo = nn.Linear(to_v.in_features, to_v.out_features, bias=to_v.bias is not None)
        with torch.no_grad():  # start from the text key/value maps: demo tokens live in the text token space
            self.to_k_demo.weight.copy_(to_k.weight)
            self.to_v_demo.weight.copy_(to_v.weight)
            if to_k.bias is not None:
                self.to_k_demo.bias.copy_(to_k.bias)
            if to_v.bias is not None:
                self.to_v_demo.bias.copy_(to_v.bias)
        self.gate = nn.Parameter(torch.zeros(()))  # explicit zero-init: installed layer == base layer
        # per-head locality strength, alpha_h = LOCALITY_SCALE * locality_h; 1 = a Gaussian of sd ~0.09 of
        # the frame (about 1.4 tokens at 16x16). Behind a zero gate its start value does not change the output.
        self.locality = nn.Parameter(torch.ones(attn.heads)) if positions else None
        self._base: tuple[Any, ...] = ()  # the layer's original processor; a tuple so it is never a submodule

    @property
    def base(self) -> Any:
        if not self._base:
            raise RuntimeError("SubjectAttnProcessor is not installed on an attention layer")
        return self._base[0]

    def bind(self, base: Any) -> None:
        self._base = (base,)

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None):
        text, demo = split_encoder_states(encoder_hidden_states)
        out = self.base(attn, hidden_states, encoder_hidden_states=text, attention_mask=attention_mask, temb=temb)
        if demo is None:
            return out
        return out + self.demo_attention(attn, hidden_states, demo, temb)

    def demo_attention(self, attn, hidden_states: torch.Tensor, demo: DemoContext, temb=None) -> torch.Tensor:
        """tanh(gate) * weight * W_out · softmax(q k_demo^T / sqrt(d)) v_demo, shaped like the layer output."""
        x = hidden_states
        if attn.spatial_norm is not None:
            x = attn.spatial_norm(x, temb)
        spatial = x.ndim == 4
        if spatial:
            b, c, h, w = x.shape
            x = x.view(b, c, h * w).transpose(1, 2)  # (B, HW, C)
        if attn.group_norm is not None:
            x = attn.group_norm(x.transpose(1, 2)).transpose(1, 2)
        B, L, _ = x.shape
        if demo.batch_size != B:
            raise InputError(f"demo batch ({demo.batch_size}) does not match the UNet batch ({B})")
        # Only rows with demos and a non-zero demo weight attend; the others (the unconditional and
        # text-only guidance passes, dropped demos) add exactly 0, so they are not computed at all.
        weight = demo.full_weight()  # (B,)
        mask = demo.full_mask()  # (B, M)
        rows = (mask.any(dim=1) & (weight != 0)).nonzero().squeeze(1)  # (R,)
        if rows.numel() == 0:
            return torch.zeros_like(hidden_states)
        x, mask, R = x[rows], mask[rows], rows.numel()  # (R, L, C), (R, M)

        q = attn.to_q(x)  # (R, L, inner)
        inner = q.shape[-1]
        hd = inner // attn.heads
        q = q.view(R, -1, attn.heads, hd).transpose(1, 2)  # (R, H, L, hd)
        if attn.norm_q is not None:
            q = attn.norm_q(q)
        k, v = self.demo_keys(attn, demo, rows, x.dtype)  # (R, H, M, hd[+4]) each

        # no padding (the usual case: every demo set of the same size) -> no mask, so SDPA can take its
        # fused CPU kernel instead of the masked math path (softmax + bmm, ~2x slower here)
        keep = None if bool(mask.all()) else mask[:, None, None, :]  # (R, 1, 1, M)
        if self.locality is not None:  # k, v already carry the 4 place dims (v as zero padding)
            q = self.query_with_locality(q)  # (R, H, L, hd + 4)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=keep, scale=1.0)[..., :hd]  # (R, H, L, hd)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=keep)  # (R, H, L, hd)
        y = y.transpose(1, 2).reshape(R, L, inner).to(v.dtype)  # (R, L, inner)
        y = attn.to_out[1](F.linear(y, attn.to_out[0].weight))  # shared output map; its bias stays in `out`
        y = y * (torch.tanh(self.gate) * weight[rows].to(y.dtype)).view(R, 1, 1)  # (R, L, C_out)
        if R < B:
            y = y.new_zeros((B, *y.shape[1:])).index_copy(0, rows, y)  # (B, L, C_out), 0 on rows without demos
        if spatial:
            y = y.transpose(-1, -2).reshape(b, c, h, w)
        return y / attn.rescale_output_factor

    def demo_keys(self, attn, demo: DemoContext, rows: torch.Tensor,
                  dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values (R, H, M, hd), or (R, H, M, hd + 4) with places, of the demo tokens of `rows`.

        With a `demo.kv_cache` and no autograd they are computed at the first step and reused after:
        the demo tokens of a sampling call are fixed, so only the queries change from step to step."""
        cache = demo.kv_cache if demo.kv_cache is not None and not torch.is_grad_enabled() else None
        key = (id(self), tuple(rows.tolist())) if cache is not None else None
        if key is not None and key in cache:
            return cache[key]
        ctx = demo.tokens[rows].to(dtype)  # (R, M, D)
        if attn.norm_cross:
            ctx = attn.norm_encoder_hidden_states(ctx)
        R, M = ctx.shape[:2]
        k = self.to_k_demo(ctx)  # (R, M, inner)
        v = self.to_v_demo(ctx)  # (R, M, inner)
        hd = k.shape[-1] // attn.heads
        k = k.view(R, M, attn.heads, hd).transpose(1, 2)  # (R, H, M, hd)
        v = v.view(R, M, attn.heads, hd).transpose(1, 2)  # (R, H, M, hd)
        if attn.norm_k is not None:
            k = attn.norm_k(k)
        if self.locality is not None:
            k = self.key_with_locality(k, demo.full_positions()[rows].to(k.dtype))  # (R, H, M, hd + 4)
            v = F.pad(v, (0, 4))  # (R, H, M, hd + 4): equal head dims let SDPA use its fused kernel
        if key is not None:
            cache[key] = (k, v)
        return k, v

    # Locality bias as 4 extra dims per head: q' = [q/sqrt(d), α(2x, 2y, −1, |p_q|²)], k' = [k, (x, y, |p_k|², 0)]
    # for a key with a place and k' = [k, (0, 0, 0, 1)] without; then q'·k' = q·k/sqrt(d) − α|p_q − p_k|² + α|p_q|²
    # (with a place) or q·k/sqrt(d) + α|p_q|² (without), and the per-query constant α|p_q|² cancels in the softmax.

    def query_with_locality(self, q: torch.Tensor) -> torch.Tensor:
        """q (B, H, L, d) of a square L = side² map -> q' (B, H, L, d + 4)."""
        B, H, L, d = q.shape
        side = math.isqrt(L)
        if side * side != L:
            raise InputError(f"demo positions need a square feature map, got {L} query tokens")
        pq = grid_places(side, side, q.device)[:, :2].to(q.dtype)  # (L, 2) row-major, like the flattened map
        alpha = (LOCALITY_SCALE * self.locality).to(q.dtype).view(1, H, 1, 1)  # (1, H, 1, 1)
        sq = (pq * pq).sum(-1)  # (L,)
        q_extra = torch.cat([2 * pq, -torch.ones_like(sq)[:, None], sq[:, None]], dim=-1)  # (L, 4)
        q_extra = q_extra.view(1, 1, L, 4) * alpha  # (1, H, L, 4)
        return torch.cat([q * d ** -0.5, q_extra.expand(B, H, L, 4)], dim=-1)  # (B, H, L, d+4)

    @staticmethod
    def key_with_locality(k: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """k (B, H, M, d), key places pos (B, M, 3) -> k' (B, H, M, d + 4)."""
        B, H, M, _ = k.shape
        placed = pos[..., 2:3]  # (B, M, 1) 1 = an image token with a place
        pk = pos[..., :2] * placed  # (B, M, 2)
        k_extra = torch.cat([pk, (pk * pk).sum(-1, keepdim=True), 1 - placed], dim=-1)  # (B, M, 4)
        return torch.cat([k, k_extra[:, None].expand(B, H, M, 4)], dim=-1)  # (B, H, M, d+4)
