"""The grader networks: PerceptionNet (one trunk, two readers), PoseNet and TraitNet.

    image (B, 3, 32, 32) -> trunk -> feature map (B, C, 4, 4) -> neck (B, N)
        neck -> identity head -> unit embedding (B, E)      the DINO analogue (identity.py)
        neck -> one linear probe per image field -> logits   scene, style, ... (probes.py)
    [image, canonical render] (B, 6, 32, 32) -> PoseNet -> logits over rotation x mirroring
    image (B, 3, 32, 32) -> TraitNet -> one linear head per identity trait (shape, pattern) -> logits

The pose is read by its own network with early fusion: whether a subject is mirrored or turned can
only be told against the subject itself, and comparing the two images pixel by pixel from the first
layer is what makes that comparison learnable at CPU budgets (a head on the pooled 4x4 maps was
not enough). The identity traits shape and pattern are read by their own network too: a pattern's
period is about 3 px at the grader size, and PerceptionNet pools to 16 px after its first conv and
shares its neck with the identity embedding, which capped its pattern probe near 90 %; TraitNet
keeps two convs at full resolution before its first pool and reads only the traits.
Weights are stored as fp16 safetensors with the NetConfig beside them as JSON.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from suti.errors import ModelLoadError
from suti.eval.images import GRADER_SIZE
from suti.eval.probes import FIELDS, IMAGE_FIELDS, TRAIT_NET_FIELDS


@dataclass(frozen=True)
class NetConfig:
    channels: tuple[int, int, int] = (32, 64, 96)
    neck: int = 192
    embed_dim: int = 64
    image_size: int = GRADER_SIZE

    @classmethod
    def from_dict(cls, d: dict) -> NetConfig:
        return cls(**{**d, "channels": tuple(d["channels"])})


def _conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class PerceptionNet(nn.Module):
    def __init__(self, cfg: NetConfig = NetConfig()):
        super().__init__()
        self.cfg = cfg
        c1, c2, c3 = cfg.channels
        cells = (cfg.image_size // 8) ** 2
        self.trunk = nn.Sequential(
            _conv(3, c1), nn.MaxPool2d(2),  # (B, c1, S/2, S/2)
            _conv(c1, c2), nn.MaxPool2d(2),  # (B, c2, S/4, S/4)
            _conv(c2, c3), _conv(c3, c3), nn.MaxPool2d(2),  # (B, c3, S/8, S/8)
        )  # fmt: skip
        self.neck = nn.Sequential(nn.Flatten(), nn.Linear(c3 * cells, cfg.neck), nn.ReLU(inplace=True))
        self.identity = nn.Sequential(nn.Linear(cfg.neck, cfg.neck), nn.ReLU(inplace=True),
                                      nn.Linear(cfg.neck, cfg.embed_dim))  # fmt: skip
        self.probes = nn.ModuleDict({f: nn.Linear(cfg.neck, len(FIELDS[f])) for f in IMAGE_FIELDS})

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(feature map (B, C, 4, 4), neck (B, N)) of images in [-1, 1]."""
        fmap = self.trunk(x)  # (B, c3, S/8, S/8)
        return fmap, self.neck(fmap)

    def embed(self, neck: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.identity(neck), dim=-1)  # (B, E)

    def probe_logits(self, neck: torch.Tensor) -> dict[str, torch.Tensor]:
        return {f: head(neck) for f, head in self.probes.items()}  # {field: (B, n_values)}



class PoseNet(nn.Module):
    """Rotation x mirroring of an image relative to the subject's canonical render."""

    def __init__(self, cfg: NetConfig = NetConfig()):
        super().__init__()
        self.cfg = cfg
        c1, c2, c3 = cfg.channels
        self.layers = nn.Sequential(
            _conv(6, c1), nn.MaxPool2d(2),  # (B, c1, S/2, S/2)
            _conv(c1, c2), nn.MaxPool2d(2),  # (B, c2, S/4, S/4)
            _conv(c2, c3), _conv(c3, c3), nn.MaxPool2d(2), nn.Flatten(),  # (B, c3 * cells)
            nn.Linear(c3 * (cfg.image_size // 8) ** 2, cfg.neck), nn.ReLU(inplace=True),
            nn.Linear(cfg.neck, len(FIELDS["pose"])),  # (B, n_poses)
        )  # fmt: skip

    def forward(self, image: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        return self.layers(torch.cat([image, reference], dim=1))  # (B, n_poses)


class TraitNet(nn.Module):
    """Identity traits (shape, pattern) from the image alone; cfg.channels = stage widths at S, S/2, S/4."""

    def __init__(self, cfg: NetConfig = NetConfig()):
        super().__init__()
        self.cfg = cfg
        c1, c2, c3 = cfg.channels
        self.trunk = nn.Sequential(
            _conv(3, c1), _conv(c1, c1), nn.MaxPool2d(2),  # (B, c1, S/2, S/2): fine texture seen at full size
            _conv(c1, c2), _conv(c2, c2), nn.MaxPool2d(2),  # (B, c2, S/4, S/4)
            _conv(c2, c3), _conv(c3, c3), nn.MaxPool2d(2),  # (B, c3, S/8, S/8)
        )  # fmt: skip
        cells = (cfg.image_size // 8) ** 2
        # the 4x4 map (where things are) plus its global mean (what texture there is, wherever it is)
        self.neck = nn.Sequential(nn.Linear(c3 * (cells + 1), cfg.neck), nn.ReLU(inplace=True))
        self.heads = nn.ModuleDict({f: nn.Linear(cfg.neck, len(FIELDS[f])) for f in TRAIT_NET_FIELDS})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """{trait: logits (B, n_values)} of images in [-1, 1]."""
        fmap = self.trunk(x)  # (B, c3, S/8, S/8)
        pooled = torch.cat([fmap.flatten(1), fmap.mean(dim=(2, 3))], dim=1)  # (B, c3 * (cells + 1))
        neck = self.neck(pooled)  # (B, N)
        return {f: head(neck) for f, head in self.heads.items()}  # {field: (B, n_values)}

    def predict(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """{trait: probabilities (B, n_values)}, averaged over the image and its mirror image (a mirrored
        subject keeps its shape and pattern; the average removes a few errors of a single view)."""
        views = (self(x), self(x.flip(3)))  # x.flip(3): (B, 3, S, S) mirrored left-right
        return {f: (views[0][f].softmax(-1) + views[1][f].softmax(-1)) / 2 for f in views[0]}  # {field: (B, n)}


NETS = {"perception": PerceptionNet, "pose": PoseNet, "traits": TraitNet}


def save_net(net: nn.Module, folder: str | Path, name: str = "perception") -> Path:
    """Write `name.safetensors` (fp16) and `name.json` (config) into folder."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in net.state_dict().items()}
    save_file(state, str(folder / f"{name}.safetensors"))
    (folder / f"{name}.json").write_text(json.dumps(asdict(net.cfg), indent=2) + "\n")
    return folder / f"{name}.safetensors"


def load_net(folder: str | Path, name: str = "perception") -> nn.Module:
    """The network `name` ("perception", "pose" or "traits") saved by `save_net` (float32, eval mode)."""
    from safetensors.torch import load_file

    folder = Path(folder)
    weights, config = folder / f"{name}.safetensors", folder / f"{name}.json"
    if not weights.is_file() or not config.is_file():
        raise ModelLoadError(f"grader weights {weights} (+ {config.name}) not found; run `suti eval train-graders`")
    try:
        net = NETS[name](NetConfig.from_dict(json.loads(config.read_text())))
        net.load_state_dict({k: v.float() for k, v in load_file(str(weights)).items()})
    except (RuntimeError, KeyError, TypeError, ValueError, OSError) as e:
        raise ModelLoadError(f"cannot load grader weights {weights}: {str(e).splitlines()[0]}") from e
    return net.eval()
