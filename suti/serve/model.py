"""The model as the server uses it: load once, encode a subject, generate a batch, count what ran.

    runner = ModelRunner.load("tiny")                 # or a model dir, or "default"
    ctx = runner.encode(images, captions)             # DemoContext (1, M, D): the ONLY demo encoding
    images = runner.generate(prompts, ctxs, seeds, steps=4, guidance_scale=3, subject_guidance_scale=3)

Every image carries its own seed (one torch.Generator per image), so an image depends on its request
only, never on what else shares the batch. A forward hook on the demo encoder counts every demo
encoding, so "a second generation does not re-encode" is measured, not assumed. Only the server's
single worker thread calls `encode` / `generate`.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import PIL.Image


@dataclass
class RunnerStats:
    demo_encoder_calls: int = 0  # forward passes of the demo encoder (any caller)
    pipeline_calls: int = 0  # sampling calls (one per micro-batch)
    images_generated: int = 0


class ModelRunner:
    def __init__(self, pipe, source: str):
        import torch

        self.pipe = pipe
        self.source = source
        self.stats = RunnerStats()
        self._lock = threading.Lock()  # the pipeline (scheduler state) is not re-entrant
        pipe.set_progress_bar_config(disable=True)
        if pipe.subject is None:
            from suti.errors import ModelLoadError

            raise ModelLoadError(f"model {source!r} has no subject layers; it cannot serve subjects")
        pipe.subject.demo_encoder.register_forward_hook(self._count_encoding)
        self.torch = torch
        self.fingerprint = weights_fingerprint(pipe)

    @classmethod
    def load(cls, spec: str, torch_threads: int | None = None) -> ModelRunner:
        import warnings

        import torch

        from suti.pipeline.registry import load_pipeline

        if torch_threads is not None:
            torch.set_num_threads(torch_threads)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # the preset "random weights" warning; said in /readyz
            pipe = load_pipeline(spec)
        return cls(pipe, str(spec))

    @contextmanager
    def hold(self) -> Iterator[None]:
        """Keep the worker from running the model while inside (maintenance; tests that line up a queue)."""
        with self._lock:
            yield

    def _count_encoding(self, module, args, output) -> None:
        self.stats.demo_encoder_calls += 1

    @property
    def image_size(self) -> int:
        return int(self.pipe.image_size)

    @property
    def max_prompt_tokens(self) -> int:
        return int(self.pipe.tokenizer.model_max_length)

    # -- work --------------------------------------------------------------------------------------------
    def encode(self, images: list[PIL.Image.Image], captions: list[str] | None):
        """Demo tokens of one subject, moved to the CPU for caching: DemoContext (1, M, D)."""
        with self._lock, self.torch.inference_mode():
            ctx = self.pipe.encode_subject(images, captions)
        return ctx.to("cpu", self.torch.float32)

    def generate(self, prompts: list[str], contexts: list, seeds: list[int], steps: int, guidance_scale: float,
                 subject_guidance_scale: float) -> list[PIL.Image.Image]:
        """One sampling call for a micro-batch: image i = prompts[i] + contexts[i] + seeds[i]."""
        gens = [self.torch.Generator().manual_seed(int(s)) for s in seeds]
        with self._lock, self.torch.inference_mode():
            out = self.pipe(list(prompts), subject_embeds=list(contexts), generator=gens,
                            num_inference_steps=int(steps), guidance_scale=float(guidance_scale),
                            subject_guidance_scale=float(subject_guidance_scale), output_type="pil")
        self.stats.pipeline_calls += 1
        self.stats.images_generated += len(prompts)
        return list(out.images)

    def describe(self) -> dict:
        from configs import preset_names

        cfg = getattr(self.pipe, "suti_config", None)
        return {"source": self.source, "name": getattr(cfg, "name", None), "image_size": self.image_size,
                "fingerprint": self.fingerprint, "random_weights": self.source in preset_names()}


def weights_fingerprint(pipe) -> str:
    """sha256 over every weight that shapes demo tokens or images (UNet, text encoder, subject layers,
    VAE): the on-disk subject cache is only valid for exactly these weights."""
    import torch

    h = hashlib.sha256()
    modules = [("unet", pipe.unet), ("text_encoder", pipe.text_encoder), ("subject", pipe.subject)]
    if getattr(pipe, "vae", None) is not None:
        modules.append(("vae", pipe.vae))
    for name, module in modules:
        for key, tensor in sorted(module.state_dict().items()):
            t = tensor.detach().cpu().contiguous()
            h.update(f"{name}.{key}:{t.dtype}:{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
