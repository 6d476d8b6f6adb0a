"""Per-image scores in [0, 1] for a generated image of a known subject in a prompted context.

    subject  = P(same subject | identity embedding vs reference and ground-truth renders)
    text     = prod over the prompt's context fields of P(field shows the prompted value)
    realism  = soft conformal outlier test of the image against world renders (realism.py)
    overall  = sqrt(subject x text)                                    (ImagenHub)
    traits   = prod over identity traits (shape, pattern, own colour) of P(trait shown): a diagnostic,
               not a factor of `subject`: the identity check against ground truth already rejects a
               wrong shape or pattern (validation: trait-swapped twins), and multiplying in a probe
               that is not perfect would only add the probe's own error to the ceiling.
Field probabilities come from PerceptionNet's probes, except shape and pattern, which TraitNet reads
(traits.safetensors; a weights folder without it, from before TraitNet, falls back to PerceptionNet's
own shape and pattern probes).
Paper-style means for comparison: dino (identity cosine to the demos), clip_i (world-CLIP cosine to
the demos), clip_t (world-CLIP cosine to the prompt); raw cosines, not in [0, 1].
Field probabilities are summed over the values that render the same as the prompted one (probes.py).

    graders = Graders.load()
    rows = graders.score(images, subjects, prompts, demos=demo_lists)   # one dict per image
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from suti.errors import InputError, ModelLoadError
from suti.eval.clip_world import WEIGHTS_DIR, WorldClip, load_world_clip
from suti.eval.identity import REFERENCE_CONTEXTS, Calibration
from suti.eval.images import GRADER_SIZE, to_grader_array, to_tensor
from suti.eval.probes import (
    IMAGE_FIELDS,
    TRAIT_NET_FIELDS,
    accepted_sets,
    field_probability,
    text_fields,
    trait_fields,
)
from suti.eval.realism import RealismModel, load_realism
from suti.world.captions import context_from_caption
from suti.world.context import N_VARIANTS, Context
from suti.world.render import render
from suti.world.traits import Subject

SCORE_KEYS = ("subject", "text", "realism", "overall", "traits", "dino", "clip_i", "clip_t")


@dataclass
class Perception:
    """What the PerceptionNet reads off a batch of images."""

    fmap: Any  # torch (N, C, 4, 4)
    neck: np.ndarray  # (N, F)
    embedding: np.ndarray  # (N, E) unit identity embeddings
    probs: dict[str, np.ndarray]  # field -> (N, n_values)

    @property
    def realism_features(self) -> np.ndarray:
        return self.fmap.flatten(1).numpy()  # (N, C * 16)


class Graders:
    def __init__(self, net, pose_net, calibration: Calibration, realism: RealismModel | None,
                 clip: WorldClip | None, trait_net=None):  # fmt: skip
        self.net, self.pose_net, self.calibration, self.realism, self.clip = net, pose_net, calibration, realism, clip
        self.trait_net = trait_net  # None: shape and pattern from PerceptionNet's probes (pre-TraitNet folders)
        self._refs: dict[tuple[int, int], tuple[np.ndarray, Any]] = {}
        self._ctx_refs: dict[tuple, np.ndarray] = {}
        self._accepted: dict[tuple, dict] = {}  # (subject id, world seed, context) -> accepted sets

    @classmethod
    def load(cls, folder: str | Path = WEIGHTS_DIR, with_clip: bool = True) -> Graders:
        from suti.eval.nets import load_net

        folder = Path(folder)
        calib_file = folder / "calibration.json"
        if not calib_file.is_file():
            raise ModelLoadError(f"{calib_file} not found; run `suti eval train-graders`")
        calibration = Calibration(**json.loads(calib_file.read_text())["identity"])
        clip = load_world_clip(folder) if with_clip else None
        realism = load_realism(folder / "realism.safetensors")
        traits = load_net(folder, "traits") if (folder / "traits.safetensors").is_file() else None
        return cls(load_net(folder, "perception"), load_net(folder, "pose"), calibration, realism, clip, traits)

    # -- reading images ---------------------------------------------------------------------------
    def perceive(self, images: Any, batch_size: int = 256) -> Perception:
        import torch

        arr = to_grader_array(images)  # (N, 32, 32, 3)
        fmaps, necks = [], []
        with torch.inference_mode():
            for a in range(0, len(arr), batch_size):
                fmap, neck = self.net.features(to_tensor(arr[a : a + batch_size]))
                fmaps.append(fmap)
                necks.append(neck)
            fmap, neck = torch.cat(fmaps), torch.cat(necks)
            emb = self.net.embed(neck).numpy()
            probs = {f: v.softmax(-1).numpy() for f, v in self.net.probe_logits(neck).items()}
        return Perception(fmap, neck.numpy(), emb, probs)

    def image_probs(self, images: Any, seen: Perception | None = None, batch_size: int = 256) -> dict[str, np.ndarray]:
        """P(value) of every image field, (N, n_values) each: PerceptionNet's probes, with shape and
        pattern from TraitNet when it is loaded (image and mirror image averaged). `seen`: the images' Perception, if already computed."""
        import torch

        arr = to_grader_array(images)  # (N, 32, 32, 3)
        probs = dict((seen if seen is not None else self.perceive(arr, batch_size)).probs)
        if self.trait_net is not None:
            with torch.inference_mode():
                parts = [self.trait_net.predict(to_tensor(arr[a : a + batch_size]))
                         for a in range(0, len(arr), batch_size)]  # fmt: skip
            for f in TRAIT_NET_FIELDS:
                probs[f] = torch.cat([p[f] for p in parts]).numpy()  # (N, n_values)
        return probs

    def pose_probs(self, images: Any, subjects: Sequence[Subject]) -> np.ndarray:
        """P(rotation x mirroring) of each image relative to its subject's canonical render, (N, n_poses)."""
        import torch

        arr = to_grader_array(images)  # (N, 32, 32, 3)
        refs = np.stack([self.references(s)[1] for s in subjects])  # (N, 32, 32, 3)
        with torch.inference_mode():
            return self.pose_net(to_tensor(arr), to_tensor(refs)).softmax(-1).numpy()

    def references(self, subject: Subject) -> tuple[np.ndarray, np.ndarray]:
        """(identity embeddings of the reference renders (R, E), canonical render (32, 32, 3) uint8)."""
        key = (subject.subject_id, subject.seed)
        if key not in self._refs:
            imgs = to_grader_array([render(subject, ctx, GRADER_SIZE) for ctx in REFERENCE_CONTEXTS])
            self._refs[key] = (self.perceive(imgs).embedding, imgs[0])  # REFERENCE_CONTEXTS[0] = canonical
        return self._refs[key]

    def context_references(self, subject: Subject, ctx: Context) -> np.ndarray:
        """Identity embeddings of the ground truth of the prompt: the subject in `ctx`, every layout (V, E)."""
        key = (subject.subject_id, subject.seed, replace(ctx, variant=0))
        if key not in self._ctx_refs:
            imgs = [render(subject, replace(ctx, variant=v), GRADER_SIZE) for v in range(N_VARIANTS)]
            self._ctx_refs[key] = self.perceive(imgs).embedding
        return self._ctx_refs[key]

    def identity_statistic(self, embedding: np.ndarray, subjects: Sequence[Subject],
                           contexts: Sequence[Context]) -> np.ndarray:  # fmt: skip
        """Per image: the larger of its mean cosine to the subject's reference renders and to the
        ground-truth renders of its prompt (so a demo-like image and a right-context image both match)."""
        out = np.empty(len(embedding))
        for i, (subject, ctx) in enumerate(zip(subjects, contexts)):
            canonical = float((embedding[i] @ self.references(subject)[0].T).mean())
            prompted = float((embedding[i] @ self.context_references(subject, ctx).T).mean())
            out[i] = max(canonical, prompted)
        return out

    # -- scoring ----------------------------------------------------------------------------------
    def score(self, images: Sequence[Any], subjects: Sequence[Subject], prompts: Sequence[str],
              demos: Sequence[Sequence[Any]] | None = None,
              contexts: Sequence[Context] | None = None) -> list[dict[str, Any]]:  # fmt: skip
        """One score dict per image: SCORE_KEYS, plus 'fields' (P(prompted value) per graded field)."""
        n = len(images)
        if not (len(subjects) == len(prompts) == n) or (demos is not None and len(demos) != n):
            raise InputError("images, subjects, prompts (and demos) must have the same length")
        contexts = list(contexts) if contexts is not None else [context_from_caption(p) for p in prompts]
        arr = to_grader_array(images)  # (N, 32, 32, 3)
        seen = self.perceive(arr)
        probs = {**self.image_probs(arr, seen), "pose": self.pose_probs(arr, subjects)}
        p_same = self.calibration(self.identity_statistic(seen.embedding, subjects, contexts))
        realism = self.realism.score(seen.realism_features)
        extra = self._paper_scores(arr, seen.embedding, prompts, demos)
        rows = []
        for i in range(n):
            key = (subjects[i].subject_id, subjects[i].seed, contexts[i])
            if key not in self._accepted:
                self._accepted[key] = accepted_sets(subjects[i], contexts[i])
            acc = self._accepted[key]
            fields = {f: field_probability(probs[f][i], acc[f]) for f in set(text_fields(contexts[i]))
                      | set(trait_fields(contexts[i])) if acc[f]}  # fmt: skip
            traits = float(np.prod([fields[f] for f in trait_fields(contexts[i]) if f in fields]))
            text = float(np.prod([fields[f] for f in text_fields(contexts[i]) if f in fields]))
            subject = float(p_same[i])
            rows.append({"subject": subject, "text": text, "realism": float(realism[i]), "traits": traits,
                         "overall": float(np.sqrt(subject * text)), **{k: v[i] for k, v in extra.items()},
                         "fields": fields})  # fmt: skip
        return rows

    def _paper_scores(self, images, embedding: np.ndarray, prompts, demos) -> dict[str, list]:
        """dino / clip_i (need demos) and clip_t (needs the world CLIP); None where unavailable."""
        n = len(images)
        out: dict[str, list] = {"dino": [None] * n, "clip_i": [None] * n, "clip_t": [None] * n}
        if self.clip is not None:
            out["clip_t"] = [float(v) for v in self.clip.score_text(images, list(prompts))]
        if demos is None:
            return out
        cache: dict[int, tuple[np.ndarray, np.ndarray | None]] = {}
        clip_img = self.clip.embed_images(images) if self.clip is not None else None
        for i, ds in enumerate(demos):
            if id(ds) not in cache:
                d_emb = self.perceive(ds).embedding
                cache[id(ds)] = (d_emb, self.clip.embed_images(ds) if self.clip is not None else None)
            d_emb, d_clip = cache[id(ds)]
            out["dino"][i] = float((embedding[i] @ d_emb.T).mean())
            if d_clip is not None:
                out["clip_i"][i] = float((clip_img[i] @ d_clip.T).mean())
        return out

    def probe_fields(self, images: Any, subjects: Sequence[Subject]) -> dict[str, np.ndarray]:
        """Raw probabilities of every field (pose read against each subject's canonical render)."""
        arr = to_grader_array(images)
        probs = self.image_probs(arr)
        return {**{f: probs[f] for f in IMAGE_FIELDS}, "pose": self.pose_probs(arr, subjects)}
