"""DemoEncoder: clean demo images -> demo tokens, through the UNet's OWN down path (same weights).

For every demo the UNet's conv_in -> time embedding (t = 0 by default) -> down_blocks (-> mid_block)
run on the clean demo (pixels or VAE latents) with that demo's caption embedding as cross-attention
context. The chosen feature maps are flattened into tokens, normalised and projected to the
cross-attention width, tagged with a level embedding and a demo-slot embedding; the demo's caption
tokens follow. The encoder owns only these small heads: the UNet is an argument of `forward`, never
a submodule, so `DemoEncoder.parameters()` and the UNet's parameters are disjoint, and gradients of a
loss on the denoiser's output flow back into the UNet through the demo path.

Initialisation: LayerNorm + Xavier-uniform projection (bias 0) so that image tokens have the same
~unit scale as CLIP text tokens, which the demo key/value maps (copied from the text ones) expect.
The projection is deliberately NOT zero: the gate of every demo attention is the one zero switch, and a
zero projection behind a zero gate would give neither of them a useful first gradient.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from suti.errors import ConfigError, InputError
from suti.models.config import SubjectConfig
from suti.models.pooled_text import pooled_text, uses_pooled_text
from suti.models.subject_attn import DemoContext, grid_places


def level_key(level: str) -> str:
    return level.replace(".", "_")  # nn.ModuleDict keys cannot contain dots


def level_channels(unet: nn.Module, levels: tuple[str, ...]) -> dict[str, int]:
    """Channels of each chosen feature map: 'down.<i>' = output of down block i, 'mid' = mid block output."""
    chans = list(unet.config.block_out_channels)
    out = {}
    for lvl in levels:
        if lvl == "mid":
            if unet.mid_block is None:
                raise ConfigError("subject.levels: 'mid' requested but the UNet has no mid block")
            out[lvl] = chans[-1]
        else:
            i = int(lvl.split(".")[1])
            if i >= len(chans):
                raise ConfigError(f"subject.levels: {lvl!r} out of range (the UNet has {len(chans)} down blocks)")
            out[lvl] = chans[i]
    return out


def check_supported_unet(unet: nn.Module) -> None:
    if getattr(unet, "class_embedding", None) is not None and not uses_pooled_text(unet):
        raise ConfigError("unet: the demo encoder supports no class embedding other than pooled text "
                          "(class_embed_type='projection')")
    if getattr(unet, "config", None) is not None and getattr(unet.config, "class_embeddings_concat", False):
        raise ConfigError("unet: the demo encoder does not support class_embeddings_concat")
    for name in ("add_embedding", "encoder_hid_proj"):
        if getattr(unet, name, None) is not None:
            raise ConfigError(f"unet: the demo encoder does not support UNets with `{name}`")


class DemoEncoder(nn.Module):
    def __init__(self, cfg: SubjectConfig, channels: dict[str, int], dim: int):
        super().__init__()
        self.levels = tuple(cfg.levels)
        self.pool_size = cfg.pool_size
        self.caption_tokens = cfg.caption_tokens
        self.max_demos = cfg.max_demos
        self.positions = cfg.positions
        self.norm = nn.ModuleDict({level_key(l): nn.LayerNorm(channels[l]) for l in self.levels})
        self.proj = nn.ModuleDict({level_key(l): nn.Linear(channels[l], dim) for l in self.levels})
        self.level_emb = nn.Parameter(torch.zeros(len(self.levels) + 1, dim))  # last row tags caption tokens
        self.slot_emb = nn.Parameter(torch.zeros(cfg.max_demos, dim)) if cfg.slot_embedding else None
        for p in self.proj.values():
            nn.init.xavier_uniform_(p.weight)
            nn.init.zeros_(p.bias)
        nn.init.normal_(self.level_emb, std=0.02)
        if self.slot_emb is not None:
            nn.init.normal_(self.slot_emb, std=0.02)

    # -- the UNet's own down path ---------------------------------------------------------------------------
    def unet_features(self, unet: nn.Module, x: torch.Tensor, context: torch.Tensor,
                      timestep: torch.Tensor, context_mask: torch.Tensor | None = None,
                      mask_context: bool = False) -> dict[str, torch.Tensor]:
        """Run conv_in -> down blocks (-> mid) of `unet` on x (n, C, H, W) with text-only context (n, L, D);
        `mask_context`: cross-attention reads only the tokens `context_mask` (n, L) marks as real."""
        if unet.config.center_input_sample:
            x = 2 * x - 1.0
        emb = unet.time_embedding(unet.get_time_embed(sample=x, timestep=timestep), None)  # (n, T)
        pooled = pooled_text(unet, context, context_mask)  # (n, D): the caption's pooled state, if used
        if pooled is not None:
            emb = emb + unet.class_embedding(pooled).to(emb.dtype)  # (n, T)
        if unet.time_embed_act is not None:
            emb = unet.time_embed_act(emb)
        keep = context_mask if mask_context and context_mask is not None else None  # (n, L) or None
        h = unet.conv_in(x)  # (n, C0, H, W)
        feats: dict[str, torch.Tensor] = {}
        need_mid = "mid" in self.levels
        last = len(unet.down_blocks) - 1 if need_mid else max(int(l.split(".")[1]) for l in self.levels)
        for i, block in enumerate(unet.down_blocks[: last + 1]):
            if getattr(block, "has_cross_attention", False):
                h, _ = block(hidden_states=h, temb=emb, encoder_hidden_states=context,  # plain tensor: text only
                             encoder_attention_mask=keep)
            else:
                h, _ = block(hidden_states=h, temb=emb)
            if f"down.{i}" in self.levels:
                feats[f"down.{i}"] = h  # (n, C_i, H_i, W_i)
        if need_mid:
            if getattr(unet.mid_block, "has_cross_attention", False):
                h = unet.mid_block(h, emb, encoder_hidden_states=context, encoder_attention_mask=keep)
            else:
                h = unet.mid_block(h, emb)
            feats["mid"] = h  # (n, C_last, h, w)
        return feats

    def tokens_per_demo(self, unet: nn.Module, caption_length: int) -> int:
        n_down = len(unet.config.block_out_channels) - 1
        size = unet.config.sample_size
        total = 0
        for lvl in self.levels:
            i = n_down if lvl == "mid" else min(int(lvl.split(".")[1]) + 1, n_down)
            side = self.pool_size or size // 2**i
            total += side * side
        return total + (caption_length if self.caption_tokens else 0)

    # -- demos -> tokens ----------------------------------------------------------------------------------
    def forward(
        self,
        unet: nn.Module,
        images: torch.Tensor,  # (B, N, C, H, W) clean demos in the UNet's input space
        caption_embeds: torch.Tensor,  # (B, N, L, D) text-encoder output of each demo's caption
        caption_mask: torch.Tensor | None = None,  # (B, N, L) bool, True = real caption token
        demo_mask: torch.Tensor | None = None,  # (B, N) bool, True = a real demo (False = padding slot)
        timestep: int | float | torch.Tensor = 0,
        mask_captions: bool = False,  # the UNet's cross-attention skips caption padding (TextConfig.mask_padding)
    ) -> DemoContext:
        if images.ndim != 5 or caption_embeds.ndim != 4 or caption_embeds.shape[:2] != images.shape[:2]:
            raise InputError(f"demo images (B, N, C, H, W) and caption embeddings (B, N, L, D) do not match: "
                             f"{tuple(images.shape)} vs {tuple(caption_embeds.shape)}")
        B, N = images.shape[:2]
        L = caption_embeds.shape[2]
        if N > self.max_demos:
            raise InputError(f"at most {self.max_demos} demos per sample, got {N}")
        dev = images.device
        demo_mask = torch.ones(B, N, dtype=torch.bool, device=dev) if demo_mask is None else demo_mask.bool()
        caption_mask = (torch.ones(B, N, L, dtype=torch.bool, device=dev) if caption_mask is None
                        else caption_mask.bool())
        valid = demo_mask.flatten()  # (B*N,)
        x = images.flatten(0, 1)[valid]  # (n, C, H, W) only real demos run through the UNet
        ctx = caption_embeds.flatten(0, 1)[valid]  # (n, L, D)
        t = torch.as_tensor(timestep, device=dev)
        if t.ndim == 1:  # one timestep per sample -> one per demo
            t = t.repeat_interleave(N)[valid]

        feats = self.unet_features(unet, x, ctx, t, caption_mask.flatten(0, 1)[valid], mask_captions)
        toks, places = [], []  # places: (x, y, 1) per image token, zeros per caption token
        for i, lvl in enumerate(self.levels):
            f = feats[lvl]
            if self.pool_size is not None:
                f = F.adaptive_avg_pool2d(f, self.pool_size)
            if self.positions:
                places.append(grid_places(f.shape[-2], f.shape[-1], dev))  # (h*w, 3)
            f = f.flatten(2).transpose(1, 2)  # (n, h*w, C_l)
            k = level_key(lvl)
            toks.append(self.proj[k](self.norm[k](f)) + self.level_emb[i])  # (n, h*w, D)
        if self.caption_tokens:
            toks.append(ctx + self.level_emb[-1])  # (n, L, D)
            if self.positions:
                places.append(torch.zeros(L, 3, device=dev))  # captions have no place in the frame
        tok = torch.cat(toks, dim=1)  # (n, T, D)
        T, D = tok.shape[1], tok.shape[2]
        tok_mask = torch.ones(tok.shape[:2], dtype=torch.bool, device=dev)  # (n, T)
        if self.caption_tokens:
            tok_mask[:, T - L:] = caption_mask.flatten(0, 1)[valid]

        full = tok.new_zeros(B * N, T, D)
        full[valid] = tok
        full = full.view(B, N, T, D)  # (B, N, T, D)
        if self.slot_emb is not None:
            full = full + self.slot_emb[:N].view(1, N, 1, D)
        full_mask = torch.zeros(B * N, T, dtype=torch.bool, device=dev)
        full_mask[valid] = tok_mask
        pos = None
        if self.positions:
            pos = torch.cat(places).to(full.dtype).repeat(N, 1).expand(B, N * T, 3)  # (B, N*T, 3)
        return DemoContext(tokens=full.reshape(B, N * T, D),  # (B, N*T, D)
                           mask=full_mask.view(B, N * T),  # (B, N*T)
                           positions=pos)
