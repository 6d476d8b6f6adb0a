"""The world CLIP: an open_clip model from a small custom config, trained contrastively on world renders.

The config is a JSON file registered through open_clip's own mechanism (`open_clip.add_model_config`);
the weights are an fp16 safetensors checkpoint that `open_clip.create_model(name, pretrained=PATH)`
loads. Token-embedding rows of BPE tokens that no world caption uses stay exactly zero (they never get
a gradient), so the file compresses to a fraction of its size in git.

    clip = load_world_clip()                              # the committed weights
    clip.score_text(images, prompts)                      # CLIP-T: cosine(image, prompt), (N,)
    clip.score_subject(images, demos)                     # CLIP-I: mean cosine(image, demos), (N,)
    retrieval.load_embedder(world_clip_spec())            # the same model for retrieval/
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from suti.errors import ModelLoadError
from suti.eval.images import add_noise, to_grader_array

WEIGHTS_DIR = Path(__file__).parent / "weights"
WORLD_CLIP_NAME = "suti-world-clip"
WORLD_CLIP_CONFIG: dict[str, Any] = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 32, "layers": 3, "width": 64, "patch_size": 4, "head_width": 32},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}
MEAN = np.array([0.48145466, 0.4578275, 0.40821073], np.float32)  # open_clip's OPENAI_DATASET_MEAN/STD
STD = np.array([0.26862954, 0.26130258, 0.27577711], np.float32)


def config_path(folder: str | Path = WEIGHTS_DIR, name: str = WORLD_CLIP_NAME) -> Path:
    return Path(folder) / f"{name}.json"


def checkpoint_path(folder: str | Path = WEIGHTS_DIR, name: str = WORLD_CLIP_NAME) -> Path:
    return Path(folder) / f"{name}.safetensors"


def register(folder: str | Path = WEIGHTS_DIR, name: str = WORLD_CLIP_NAME, config: dict | None = None) -> Path:
    """Register `folder/name.json` with open_clip (writing `config` there first, if given)."""
    import open_clip

    path = config_path(folder, name)
    if config is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(config, indent=2) + "\n")
    if not path.is_file():
        raise ModelLoadError(f"world CLIP config {path} not found; run `suti eval train-graders`")
    open_clip.add_model_config(path)
    return path


def world_clip_spec(folder: str | Path = WEIGHTS_DIR, name: str = WORLD_CLIP_NAME):
    """A `retrieval.ClipSpec` for the world CLIP (config + checkpoint paths)."""
    from retrieval.embed import ClipSpec

    return ClipSpec(name, checkpoint=str(checkpoint_path(folder, name)), config=str(config_path(folder, name)))


def to_clip_tensor(images: Any):
    """Images (any kind/size, or (N, 32, 32, 3) uint8) -> normalised (N, 3, 32, 32) float32."""
    import torch

    x = to_grader_array(images).astype(np.float32) / 255.0  # (N, 32, 32, 3)
    return torch.from_numpy((x - MEAN) / STD).permute(0, 3, 1, 2).contiguous()  # (N, 3, 32, 32)


@dataclass
class WorldClip:
    """The loaded world CLIP: unit-norm image/text embeddings and CLIP-I / CLIP-T scores."""

    model: Any
    tokenizer: Any
    name: str = WORLD_CLIP_NAME

    def embed_images(self, images: Any, batch_size: int = 256) -> np.ndarray:
        import torch

        x = to_clip_tensor(images)
        with torch.inference_mode():
            out = [self.model.encode_image(x[a : a + batch_size], normalize=True) for a in range(0, len(x), batch_size)]
        return torch.cat(out).numpy() if out else np.zeros((0, self.dim), np.float32)

    def embed_texts(self, texts: list[str], batch_size: int = 256) -> np.ndarray:
        import torch

        with torch.inference_mode():
            out = [self.model.encode_text(self.tokenizer(list(texts[a : a + batch_size])), normalize=True)
                   for a in range(0, len(texts), batch_size)]  # fmt: skip
        return torch.cat(out).numpy() if out else np.zeros((0, self.dim), np.float32)

    @property
    def dim(self) -> int:
        return int(self.model.text_projection.shape[1])

    def score_text(self, images: Any, prompts: list[str]) -> np.ndarray:
        """CLIP-T: cosine between each image and its prompt, (N,) in [-1, 1]."""
        return np.sum(self.embed_images(images) * self.embed_texts(list(prompts)), axis=1)

    def score_subject(self, images: Any, demos: Any) -> np.ndarray:
        """CLIP-I: mean cosine between each image and the demo images of its subject, (N,)."""
        return (self.embed_images(images) @ self.embed_images(demos).T).mean(axis=1)


def load_world_clip(folder: str | Path = WEIGHTS_DIR, name: str = WORLD_CLIP_NAME) -> WorldClip:
    """The world CLIP from `folder` (default: the committed weights), float32, eval mode."""
    import open_clip

    register(folder, name)
    ckpt = checkpoint_path(folder, name)
    if not ckpt.is_file():
        raise ModelLoadError(f"world CLIP checkpoint {ckpt} not found; run `suti eval train-graders`")
    try:
        model = open_clip.create_model(name, pretrained=str(ckpt))
    except (RuntimeError, KeyError, ValueError, OSError) as e:
        raise ModelLoadError(f"cannot load world CLIP {ckpt}: {str(e).splitlines()[0]}") from e
    return WorldClip(model.eval(), open_clip.get_tokenizer(name), name)


# --- training ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClipTrainConfig:
    steps: int = 800
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup: int = 40
    noise_prob: float = 0.3
    seed: int = 0


def world_token_ids(tokenizer) -> list[int]:
    """BPE ids any world caption can produce (plus start, end and padding)."""
    from suti.world.captions import vocabulary

    ids = set(tokenizer(vocabulary()).flatten().tolist())
    return sorted(ids | {0, tokenizer.sot_token_id, tokenizer.eot_token_id})


def new_world_clip(folder: str | Path, name: str = WORLD_CLIP_NAME, config: dict | None = None, seed: int = 0):
    """A freshly initialised model of the registered config; unused token rows set to zero."""
    import open_clip
    import torch

    register(folder, name, config if config is not None else WORLD_CLIP_CONFIG)
    torch.manual_seed(seed)
    model = open_clip.create_model(name)
    tokenizer = open_clip.get_tokenizer(name)
    keep = torch.zeros(model.token_embedding.weight.shape[0], dtype=torch.bool)
    keep[world_token_ids(tokenizer)] = True
    with torch.no_grad():
        model.token_embedding.weight[~keep] = 0.0
    return model, tokenizer


def train_world_clip(pool, folder: str | Path, cfg: ClipTrainConfig = ClipTrainConfig(), name: str = WORLD_CLIP_NAME,
                     config: dict | None = None, progress: bool = True) -> tuple[WorldClip, list[dict]]:  # fmt: skip
    """Contrastive training on (render, random-phrasing caption) pairs of a render pool; saves to folder."""
    import torch
    import torch.nn.functional as F
    from tqdm import tqdm

    from suti.world.captions import caption

    model, tokenizer = new_world_clip(folder, name, config, cfg.seed)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    rng = np.random.default_rng([cfg.seed, 0xC11F])
    images, srow, scol = pool.flat()
    subjects = pool.subjects
    log, start = [], time.perf_counter()
    for step in tqdm(range(cfg.steps), desc="world clip", disable=not progress):
        idx = rng.choice(len(images), min(cfg.batch_size, len(images)), replace=False)
        texts = [caption(subjects[srow[i]], pool.contexts[srow[i]][scol[i]], rng) for i in idx]
        x = to_clip_tensor(images[idx])  # (B, 3, 32, 32)
        x = add_noise(x, rng, cfg.noise_prob)
        img = model.encode_image(x, normalize=True)  # (B, D)
        txt = model.encode_text(tokenizer(texts), normalize=True)  # (B, D)
        logits = model.logit_scale.exp().clamp(max=100) * img @ txt.T  # (B, B)
        target = torch.arange(len(idx))
        loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
        lr = cfg.lr * min(1.0, (step + 1) / cfg.warmup) * 0.5 * (1 + math.cos(math.pi * step / cfg.steps))
        for group in opt.param_groups:
            group["lr"] = lr
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 50 == 0 or step == cfg.steps - 1:
            log.append({"step": step, "loss": float(loss.detach()), "seconds": round(time.perf_counter() - start, 1)})
    save_world_clip(model, folder, name)
    return load_world_clip(folder, name), log


def save_world_clip(model, folder: str | Path, name: str = WORLD_CLIP_NAME) -> Path:
    """Write the fp16 safetensors checkpoint next to the registered config."""
    from safetensors.torch import save_file

    path = checkpoint_path(folder, name)
    state = {k: v.detach().half().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path))
    return path


def retrieval_recall(clip: WorldClip, images: Any, captions: list[str], ks: tuple[int, ...] = (1, 5)) -> dict:
    """Text -> image recall@k: each caption's own image among all images (ties broken pessimistically)."""
    img, txt = clip.embed_images(images), clip.embed_texts(captions)
    sim = txt @ img.T  # (N, N)
    own = np.diag(sim)
    rank = (sim >= own[:, None]).sum(axis=1)  # 1 = the own image is the best match
    return {f"recall@{k}": float(np.mean(rank <= k)) for k in ks} | {"n": len(captions)}
