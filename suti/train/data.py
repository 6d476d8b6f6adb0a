"""Training batches rendered on the fly from the procedural world (no dataset on disk for the oracle).

Every batch is a pure function of (seed, step, micro-batch, process): a resumed run sees exactly the
batches it would have seen, and two processes never see the same samples.

    source = make_source(recipe, tokenize, image_size)
    batch = source.batch(step, micro=0, rank=0)   # dict of tensors, see `Batch` below

Batch keys: target (B, 3, S, S) in [-1, 1]; text_ids (B, L); with `noise.subject_weight`,
`noise.shape_weight` or `noise.accessory_weight` != 1: target_weight (B, 1, S, S) per-pixel loss weights,
1 + (w - 1) x the subject's body coverage (grown by `noise.subject_margin` pixels) + (w_shape - 1) x its
shape contrast + (w_acc - 1) x its accessory's coverage;
apprentice only: demos (B, N, 3, S, S), demo_ids (B, N, L), demo_mask (B, N) bool, demo_weight (B,)
float (0 = demos dropped for that sample).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable

import numpy as np
import torch

from suti.errors import ConfigError
from suti.train.recipe import TrainRecipe
from suti.world import (SCENES, SHAPES, Context, allowed_recolors, caption, make_subject, render, sample_context,
                        split_of)
from suti.world.render import render_layers

Tokenize = Callable[[list[str]], torch.Tensor]  # texts -> (n, L) token ids
Batch = dict[str, torch.Tensor]


def to_tensor(images: list) -> torch.Tensor:
    arr = np.stack([np.asarray(im, dtype=np.float32) for im in images])  # (n, S, S, 3)
    return torch.from_numpy(arr).permute(0, 3, 1, 2) / 127.5 - 1.0  # (n, 3, S, S)


def subjects_of_split(split: str, num_subjects: int, world_seed: int) -> list[int]:
    return [i for i in range(num_subjects) if split_of(i, world_seed) == split]


def step_rng(seed: int, step: int, micro: int, rank: int, salt: int = 0) -> np.random.Generator:
    return np.random.default_rng([seed, step, micro, rank, salt])


class WorldSource:
    """Text-to-image samples: a random train subject in a random context, with a varied caption."""

    def __init__(self, recipe: TrainRecipe, tokenize: Tokenize, image_size: int):
        self.recipe, self.tokenize, self.size = recipe, tokenize, image_size
        self.seed = recipe.loop.seed
        self.world_seed = recipe.world.world_seed
        self.pool = subjects_of_split("train", recipe.world.num_subjects, self.world_seed)
        if not self.pool:
            raise ConfigError(f"world.num_subjects={recipe.world.num_subjects} holds no train-split subject")
        self._subjects: dict[int, object] = {}

    def subject(self, sid: int):
        if sid not in self._subjects:
            self._subjects[sid] = make_subject(sid, self.world_seed)
        return self._subjects[sid]

    mix: dict = {}  # sample_context's mix keywords (recolor_p, ...); empty = its defaults, the datasets' mix

    def draw(self, rng: np.random.Generator) -> tuple[object, Context, str]:
        s = self.subject(self.pool[int(rng.integers(len(self.pool)))])
        ctx = sample_context(rng, s, allowed_recolors(s, "train"), **self.mix)
        return s, ctx, caption(s, ctx, rng)

    def text_dropped(self, rng: np.random.Generator, text: str) -> str:
        return "" if rng.random() < self.recipe.noise.text_dropout else text

    @property
    def weighted(self) -> bool:
        noise = self.recipe.noise
        return noise.subject_weight != 1.0 or noise.shape_weight != 1.0 or noise.accessory_weight != 1.0

    def render_target(self, s, ctx: Context) -> tuple[object, np.ndarray]:
        """The oracle render (PIL; the same pixels as `render`) and its pixel maps (3, S, S): the subject's
        body coverage, its shape contrast (zeros unless `noise.shape_weight` is on) and the accessory's
        coverage (zeros when nothing is worn)."""
        layers = render_layers(s, ctx, self.size)
        contrast = np.zeros_like(layers.body)
        if self.recipe.noise.shape_weight != 1.0:
            others = [render_layers(replace(s, shape=k), ctx, self.size).body for k in SHAPES if k != s.shape]
            contrast = np.mean([np.abs(layers.body - b) for b in others], axis=0)  # (S, S) in [0, 1]
        return layers.to_pil(), np.stack([layers.body, contrast, layers.accessory]).astype(np.float32)

    def loss_weights(self, pixel_maps: list[np.ndarray | None]) -> dict[str, torch.Tensor]:
        """{"target_weight": (B, 1, S, S)} = 1 + (w - 1) * body + (w_shape - 1) * shape contrast
        + (w_acc - 1) * accessory (no maps known, e.g. expert or photo targets: 1), or {} when nothing is
        weighted."""
        if not self.weighted:
            return {}
        noise, zero = self.recipe.noise, np.zeros((3, self.size, self.size), np.float32)
        maps = torch.from_numpy(np.stack([zero if p is None else p for p in pixel_maps]))  # (B, 3, S, S)
        body, contrast, accessory = maps[:, :1], maps[:, 1:2], maps[:, 2:]  # (B, 1, S, S) each
        if m := noise.subject_margin:
            body = torch.nn.functional.max_pool2d(body, 2 * m + 1, stride=1, padding=m)  # (B, 1, S, S) grown
        weight = 1.0 + (noise.subject_weight - 1.0) * body + (noise.shape_weight - 1.0) * contrast
        return {"target_weight": weight + (noise.accessory_weight - 1.0) * accessory}  # (B, 1, S, S)

    def batch(self, step: int, micro: int = 0, rank: int = 0) -> Batch:
        rng = step_rng(self.seed, step, micro, rank)
        images, texts, pixel_maps = [], [], []
        for _ in range(self.recipe.loop.batch_size):
            s, ctx, text = self.draw(rng)
            image, maps = self.render_target(s, ctx)
            images.append(image)
            pixel_maps.append(maps)
            texts.append(self.text_dropped(rng, text))
        return {"target": to_tensor(images), "text_ids": self.tokenize(texts), **self.loss_weights(pixel_maps)}


class DreamBoothSource(WorldSource):
    """One subject's few photos captioned `<identifier> <caption>`; prior samples are other subjects."""

    def __init__(self, recipe: TrainRecipe, tokenize: Tokenize, image_size: int):
        super().__init__(recipe, tokenize, image_size)
        cfg = recipe.dreambooth
        if cfg.photos:
            self.photos = folder_photos(cfg.photos, image_size)
            return
        self.target = self.subject(cfg.subject_id)
        self.photos = dreambooth_photos(self.target, cfg.subject_id, cfg.num_photos, self.world_seed, image_size)
        self.pool = [i for i in self.pool if i != cfg.subject_id]

    def batch(self, step: int, micro: int = 0, rank: int = 0) -> Batch:
        rng = step_rng(self.seed, step, micro, rank)
        cfg = self.recipe.dreambooth
        images, texts, pixel_maps = [], [], []
        for _ in range(self.recipe.loop.batch_size):
            maps = None
            if rng.random() < cfg.prior_fraction:
                s, ctx, text = self.draw(rng)
                image, maps = self.render_target(s, ctx)
            else:
                image, text = self.photos[int(rng.integers(len(self.photos)))]
                text = f"{cfg.identifier} {text}"
            images.append(image)
            pixel_maps.append(maps)
            texts.append(self.text_dropped(rng, text))
        return {"target": to_tensor(images), "text_ids": self.tokenize(texts), **self.loss_weights(pixel_maps)}


def demo_context(rng: np.random.Generator, subject, slot: int, kind: str, split: str = "train") -> Context:
    """The context of demo `slot`, by `ApprenticeConfig.demo_contexts`: "any" = a random context of
    every skill; "photo" = photo style, upright, own colour, the plain background first, then scenes."""
    if kind == "photo":
        scene = "plain" if slot == 0 else str(rng.choice(SCENES))
        return Context(scene=scene, variant=int(rng.integers(0, 4)))
    return sample_context(rng, subject, allowed_recolors(subject, split))


def dreambooth_photos(subject, subject_id: int, n: int, world_seed: int, size: int) -> list[tuple[object, str]]:
    """The subject's n "photos": the identity context first, then seeded random contexts."""
    rng = np.random.default_rng([world_seed, subject_id, 0xDB])
    contexts = [Context()] + [sample_context(rng, subject, recolors=()) for _ in range(n - 1)]
    return [(render(subject, c, size), caption(subject, c, rng)) for c in contexts]


def folder_photos(folder: str, size: int) -> list[tuple[object, str]]:
    """A user's photos and captions from a folder with `captions.jsonl`, as RGB squares of `size` px."""
    import PIL.Image

    from retrieval.reader import read_captions_folder
    from suti.pipeline.preprocess import fit_square, to_rgb_image

    photos = []
    for row in read_captions_folder(folder):
        try:
            with PIL.Image.open(row["path"]) as im:
                image = to_rgb_image(im, row["path"])
        except (OSError, PIL.UnidentifiedImageError) as e:
            raise ConfigError(f"dreambooth.photos: cannot read {row['path']!r}: {e}") from None
        photos.append((fit_square(image, size), row["caption"]))
    return photos


class ApprenticeSource(WorldSource):
    """Demos = other contexts of a train subject (its "cluster"); target = a new context of it."""

    def __init__(self, recipe: TrainRecipe, tokenize: Tokenize, image_size: int, max_slots: int):
        super().__init__(recipe, tokenize, image_size)
        cfg = recipe.apprentice
        if cfg.max_demos > max_slots:
            raise ConfigError(f"apprentice.max_demos={cfg.max_demos} exceeds the model's subject.max_demos={max_slots}")
        self.experts = ExpertTargets(cfg.expert_dataset, image_size) if cfg.expert_fraction > 0 else None
        self.mix = dict(recolor_p=cfg.recolor_fraction, style_p=cfg.style_fraction,
                        accessory_p=cfg.accessory_fraction, view_p=cfg.view_fraction)

    def batch(self, step: int, micro: int = 0, rank: int = 0) -> Batch:
        rng = step_rng(self.seed, step, micro, rank)
        cfg, B, N = self.recipe.apprentice, self.recipe.loop.batch_size, self.recipe.apprentice.max_demos
        targets, texts, demos, demo_texts, pixel_maps = [], [], [], [], []
        mask = torch.zeros(B, N, dtype=torch.bool)
        weight = torch.ones(B)
        for b in range(B):
            use_expert = self.experts is not None and rng.random() < cfg.expert_fraction
            maps = None
            if use_expert:
                sid, image, text = self.experts.draw(rng)
                s = self.subject(sid)
            else:
                s, ctx, text = self.draw(rng)
                image, maps = self.render_target(s, ctx)
            pixel_maps.append(maps)
            n = int(rng.integers(cfg.min_demos, cfg.max_demos + 1))
            for j in range(N):
                if j < n:
                    c = demo_context(rng, s, j, cfg.demo_contexts)
                    demos.append(render(s, c, self.size))
                    demo_texts.append(caption(s, c, rng))
                    mask[b, j] = True
                else:
                    demos.append(np.zeros((self.size, self.size, 3), np.float32) + 127.5)
                    demo_texts.append("")
            u = rng.random()  # [demo_dropout | all_dropout | prompt_dropout | both kept]
            off_demos = cfg.demo_dropout + cfg.all_dropout
            if u < off_demos:
                weight[b] = 0.0
            if cfg.demo_dropout <= u < off_demos + cfg.prompt_dropout:
                text = ""
            targets.append(image)
            texts.append(text)
        S = self.size
        return {
            "target": to_tensor(targets),  # (B, 3, S, S)
            "text_ids": self.tokenize(texts),  # (B, L)
            "demos": to_tensor(demos).view(B, N, 3, S, S),  # (B, N, 3, S, S)
            "demo_ids": self.tokenize(demo_texts).view(B, N, -1),  # (B, N, L)
            "demo_mask": mask,  # (B, N)
            "demo_weight": weight,  # (B,)
            **self.loss_weights(pixel_maps),  # target_weight (B, 1, S, S) when the subject is weighted
        }


class ExpertTargets:
    """Targets rendered by per-subject experts (`suti experts run`): rows with image, caption, subject_id."""

    def __init__(self, path: str, size: int):
        from datasets import load_from_disk

        try:
            ds = load_from_disk(path)
        except (FileNotFoundError, ValueError) as e:
            raise ConfigError(f"apprentice.expert_dataset: cannot load {path!r}: {e}") from None
        missing = {"image", "caption", "subject_id"} - set(ds.column_names)
        if missing:
            raise ConfigError(f"apprentice.expert_dataset: {path!r} lacks columns {sorted(missing)}")
        if len(ds) == 0:
            raise ConfigError(f"apprentice.expert_dataset: {path!r} is empty")
        self.ds, self.size = ds, size

    def draw(self, rng: np.random.Generator) -> tuple[int, object, str]:
        row = self.ds[int(rng.integers(len(self.ds)))]
        image = row["image"].convert("RGB")
        if image.size != (self.size, self.size):
            image = image.resize((self.size, self.size))
        return int(row["subject_id"]), image, row["caption"]


def make_source(recipe: TrainRecipe, tokenize: Tokenize, image_size: int, max_slots: int = 8) -> WorldSource:
    if recipe.kind == "base":
        return WorldSource(recipe, tokenize, image_size)
    if recipe.kind == "dreambooth":
        return DreamBoothSource(recipe, tokenize, image_size)
    return ApprenticeSource(recipe, tokenize, image_size, max_slots)


def validation_subjects(recipe: TrainRecipe) -> list[int]:
    """Held-out subjects (test_subject split) for metrics and grids; DreamBooth validates on its own subject."""
    if recipe.kind == "dreambooth":
        return [recipe.dreambooth.subject_id]
    held = subjects_of_split("test_subject", max(recipe.world.num_subjects, 200), recipe.world.world_seed)
    return held[: recipe.validation.num_subjects]


def with_batch_size(recipe: TrainRecipe, batch_size: int) -> TrainRecipe:
    return replace(recipe, loop=replace(recipe.loop, batch_size=batch_size))
