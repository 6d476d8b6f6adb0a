"""What the HTTP routes call: validation against the limits, decoding, the subject store and the queue.

    service = Service.create(ServeConfig(model="tiny"))
    record = service.register(blobs, captions)                           # blocking: decode + queued encode
    job = service.submit_generation(ctx, GenerationSpec(...), timeout)   # a queued job; await job.future
    service.close()

Routes (app.py) stay thin: they parse HTTP, call these methods in a worker thread or await the queued
job, and shape the responses.
"""

from __future__ import annotations

import base64
import io
import secrets
import tempfile
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

import PIL.Image

from suti.serve.batcher import Job, MicroBatcher
from suti.serve.config import RECOMMENDED_IMAGES, ServeConfig
from suti.serve.errors import InvalidInput, Timeout
from suti.serve.model import ModelRunner
from suti.serve.subjects import SubjectRecord, SubjectStore
from suti.serve.uploads import ImageDecoder, ImageLimits, decode_base64

MAX_SEED = 2**53  # JSON-safe integers; image i of a request uses seed + i


@dataclass
class GenerationSpec:
    prompt: str
    n: int
    steps: int
    seed: int
    guidance_scale: float
    subject_guidance_scale: float
    size: int

    @property
    def batch_key(self) -> tuple:
        """Requests with equal keys can share one sampling call."""
        return ("generate", self.steps, self.guidance_scale, self.subject_guidance_scale)


@dataclass
class GenerationPayload:
    spec: GenerationSpec
    ctx: object  # DemoContext (1, M, D)


@dataclass
class Generated:
    images: list[PIL.Image.Image]
    seeds: list[int]
    timings_ms: dict[str, float]
    batch_images: int
    warnings: list[str] = field(default_factory=list)


class Service:
    def __init__(self, cfg: ServeConfig, runner: ModelRunner, store: SubjectStore, retriever=None):
        self.cfg = cfg
        self.runner = runner
        self.store = store
        self.retriever = retriever
        self.started_at = time.time()
        limits = ImageLimits(cfg.max_image_bytes, cfg.max_image_pixels, cfg.max_image_side, cfg.min_image_side)
        self.decoder = ImageDecoder(limits, runner.image_size, cfg.decode_concurrency)
        self.batcher = MicroBatcher(self._run, cfg.max_batch, cfg.max_wait_ms / 1000.0, cfg.queue_size).start()
        self._catalog: OrderedDict[tuple, object] = OrderedDict()  # neighbour ids -> DemoContext (memory LRU)
        self._catalog_lock = threading.Lock()
        self._search_lock = threading.Lock()
        self._tmp: tempfile.TemporaryDirectory | None = None

    @classmethod
    def create(cls, cfg: ServeConfig) -> Service:
        cfg.check()
        runner = ModelRunner.load(cfg.model, cfg.torch_threads)
        tmp = None
        if cfg.store_dir is None:
            tmp = tempfile.TemporaryDirectory(prefix="suti-subjects-")
        store = SubjectStore(cfg.store_dir or tmp.name, runner.fingerprint, cfg.cache_items, cfg.max_subjects)
        retriever = None
        if cfg.index is not None:
            from retrieval import open_retriever

            retriever = open_retriever(cfg.index)
        service = cls(cfg, runner, store, retriever)
        service._tmp = tmp
        return service

    def close(self) -> None:
        self.batcher.close()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    # -- checks --------------------------------------------------------------------------------------------
    def check_image_count(self, n: int, where: str = "images") -> list[str]:
        lo, hi = self.cfg.min_images, self.cfg.max_images
        if not lo <= n <= hi:
            raise InvalidInput(f"{where}: {n} images given; give {lo} to {hi}", code="image_count")
        if not RECOMMENDED_IMAGES[0] <= n <= RECOMMENDED_IMAGES[1]:
            return [f"{n} reference images; SuTI works best with {RECOMMENDED_IMAGES[0]}-{RECOMMENDED_IMAGES[1]}"]
        return []

    def check_captions(self, captions: list[str] | None, n: int) -> list[str] | None:
        if not captions:
            return None
        if len(captions) != n:
            raise InvalidInput(f"captions: {len(captions)} captions for {n} images (give one per image, or none)",
                               code="caption_count")
        for i, c in enumerate(captions):
            if not isinstance(c, str):
                raise InvalidInput(f"captions[{i}]: expected a string")
            if len(c) > self.cfg.max_caption_chars:
                raise InvalidInput(f"captions[{i}]: {len(c)} characters; the limit is {self.cfg.max_caption_chars}",
                                   code="caption_too_long")
            if "\x00" in c:
                raise InvalidInput(f"captions[{i}]: contains a NUL character")
        return list(captions)

    def check_generation(self, prompt: str, n: int, steps: int | None, seed: int | None,
                         guidance_scale: float | None, subject_guidance_scale: float | None,
                         size: int | None) -> GenerationSpec:
        """Config-dependent limits (types and signs were checked by the request schema)."""
        c = self.cfg
        if not prompt.strip():
            raise InvalidInput("prompt: is empty", code="invalid_prompt")
        if len(prompt) > c.max_prompt_chars:
            raise InvalidInput(f"prompt: {len(prompt)} characters; the limit is {c.max_prompt_chars}",
                               code="prompt_too_long")
        if "\x00" in prompt:
            raise InvalidInput("prompt: contains a NUL character", code="invalid_prompt")
        if not 1 <= n <= c.max_n:
            raise InvalidInput(f"n: {n} images asked; give 1 to {c.max_n}")
        steps = c.default_steps if steps is None else steps
        if not 1 <= steps <= c.max_steps:
            raise InvalidInput(f"steps: {steps}; give 1 to {c.max_steps}")
        gs = c.default_guidance_scale if guidance_scale is None else float(guidance_scale)
        sgs = c.default_subject_guidance_scale if subject_guidance_scale is None else float(subject_guidance_scale)
        for name, v in (("guidance_scale", gs), ("subject_guidance_scale", sgs)):
            if not 0 <= v <= c.max_guidance:
                raise InvalidInput(f"{name}: {v}; give a number from 0 to {c.max_guidance}")
        native = self.runner.image_size
        size = native if size is None else size
        if not native <= size <= c.max_size:
            raise InvalidInput(f"size: {size}; this model samples {native}x{native} and outputs {native} to "
                               f"{c.max_size} px")
        seed = secrets.randbelow(2**31) if seed is None else seed
        if not 0 <= seed <= MAX_SEED - c.max_n:
            raise InvalidInput(f"seed: {seed}; give an integer from 0 to {MAX_SEED - c.max_n}")
        return GenerationSpec(prompt, n, steps, seed, gs, sgs, size)

    # -- subjects ------------------------------------------------------------------------------------------
    def decode_images(self, blobs: list[bytes], where: str = "images") -> list[PIL.Image.Image]:
        return [self.decoder.decode(b, f"{where}[{i}]") for i, b in enumerate(blobs)]

    def decode_base64_images(self, items: list[str], where: str = "images") -> list[PIL.Image.Image]:
        blobs = [decode_base64(s, f"{where}[{i}]", self.cfg.max_image_bytes) for i, s in enumerate(items)]
        return self.decode_images(blobs, where)

    def time_left(self, t0: float) -> float:
        """Seconds left of the request that started at `t0` (time.monotonic()); Timeout when none."""
        left = self.cfg.request_timeout_s - (time.monotonic() - t0)
        if left <= 0:
            raise Timeout(f"the request did not finish within {self.cfg.request_timeout_s:g} s", code="timeout")
        return left

    def submit_encode(self, images: list[PIL.Image.Image], captions: list[str] | None, t0: float) -> Job:
        return self.batcher.submit(None, 1, lambda: self.runner.encode(images, captions), self.time_left(t0))

    def add_subject(self, ctx, n_images: int, captions: list[str] | None, warnings: list[str]) -> SubjectRecord:
        return self.store.add(ctx, n_images, captions or [], warnings)

    # -- generation ----------------------------------------------------------------------------------------
    def submit_generation(self, ctx, spec: GenerationSpec, t0: float) -> Job:
        return self.batcher.submit(spec.batch_key, spec.n, GenerationPayload(spec, ctx), self.time_left(t0))

    def _run(self, jobs: list[Job]) -> list:
        """Worker thread: one job without a key is a plain call; keyed jobs share ONE sampling call."""
        if jobs[0].key is None:
            return [jobs[0].payload()]
        prompts, contexts, seeds = [], [], []
        for job in jobs:
            p: GenerationPayload = job.payload
            for i in range(p.spec.n):
                prompts.append(p.spec.prompt)
                contexts.append(p.ctx)
                seeds.append(p.spec.seed + i)
        first = jobs[0].payload.spec
        images = self.runner.generate(prompts, contexts, seeds, first.steps, first.guidance_scale,
                                      first.subject_guidance_scale)
        out, at = [], 0
        for job in jobs:
            out.append(images[at: at + job.payload.spec.n])
            at += job.payload.spec.n
        return out

    def finish(self, job: Job, images: list[PIL.Image.Image]) -> Generated:
        spec: GenerationSpec = job.payload.spec
        if spec.size != self.runner.image_size:
            images = [im.resize((spec.size, spec.size), PIL.Image.Resampling.BICUBIC) for im in images]
        return Generated(images, [spec.seed + i for i in range(spec.n)], job.timings_ms(), job.batch_images)

    def expire(self, job: Job) -> Timeout:
        job.future.cancel()
        return Timeout(f"the request did not finish within {self.cfg.request_timeout_s:g} s", code="timeout")

    # -- catalog (Re-Imagen) -------------------------------------------------------------------------------
    def search_catalog(self, prompt: str, k: int):
        """(images, captions, used-neighbours dict) of the best cluster for `prompt`."""
        from suti.pipeline.retrieved import retrieve_demos

        if not 1 <= k <= min(self.cfg.max_k, 8):
            raise InvalidInput(f"k: {k}; give 1 to {min(self.cfg.max_k, 8)}")
        with self._search_lock:
            sets, caps, used = retrieve_demos(self.retriever, [prompt], k)
        return sets[0], caps[0], used[0]

    def catalog_context(self, ids: tuple) -> object | None:
        with self._catalog_lock:
            ctx = self._catalog.get(ids)
            if ctx is not None:
                self._catalog.move_to_end(ids)
            return ctx

    def remember_catalog(self, ids: tuple, ctx) -> None:
        with self._catalog_lock:
            self._catalog[ids] = ctx
            while len(self._catalog) > self.cfg.cache_items:
                self._catalog.popitem(last=False)

    # -- reporting -----------------------------------------------------------------------------------------
    def stats(self) -> dict:
        return {"model": self.runner.describe(), "runner": dict(self.runner.stats.__dict__),
                "queue": {"pending_images": self.batcher.pending, "queue_size": self.batcher.queue_size,
                          "max_batch": self.batcher.max_batch, **self.batcher.stats.to_dict()},
                "subjects": {"stored": len(self.store), "in_memory": len(self.store.memory_ids()),
                             **self.store.stats.__dict__},
                "uptime_s": round(time.time() - self.started_at, 1)}


def png_base64(img: PIL.Image.Image) -> str:
    return base64.b64encode(png_bytes(img)).decode("ascii")


def png_bytes(img: PIL.Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()
