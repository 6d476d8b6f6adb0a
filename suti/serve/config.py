"""Typed settings of the personalization server: where it listens, what it loads, and every hard limit.

    cfg = ServeConfig(model="tiny", max_batch=8).check()     # ConfigError names the first bad field

Limits are enforced by the server before any work is done (bytes, pixels, counts, lengths, numbers);
`public_limits()` is what `GET /v1/limits` shows to clients.
"""

from __future__ import annotations

import ipaddress
import math
from dataclasses import asdict, dataclass

from suti.errors import ConfigError

HARD_MIN_IMAGES, HARD_MAX_IMAGES = 1, 8  # what the model supports at all
RECOMMENDED_IMAGES = (3, 5)  # what SuTI works best with (the default accepted range)
LOOPBACK_NAMES = ("localhost",)


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and 'localhost' (the only hosts that may run without an API key)."""
    if host.strip().lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass
class ServeConfig:
    # -- what to serve -----------------------------------------------------------------------------
    model: str = "default"  # model dir, preset name (tiny, world: random weights) or "default"
    index: str | None = None  # FAISS index dir for /v1/catalog/generations (Re-Imagen mode)
    store_dir: str | None = None  # on-disk subject cache; None = a fresh temporary dir per run
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None  # required when host is not loopback
    torch_threads: int | None = None  # None = leave torch's default

    # -- upload limits -------------------------------------------------------------------------------
    max_body_bytes: int = 40_000_000  # whole request body
    max_image_bytes: int = 8_000_000  # one encoded image
    max_image_pixels: int = 16_777_216  # width * height from the header, checked BEFORE decoding (4096^2)
    max_image_side: int = 8192
    min_image_side: int = 8
    min_images: int = RECOMMENDED_IMAGES[0]
    max_images: int = RECOMMENDED_IMAGES[1]
    decode_concurrency: int = 2  # images decoded at once (bounds decode memory)
    max_concurrent_uploads: int = 8  # request bodies over 64 KB read at once (bounds upload memory)

    # -- request limits -----------------------------------------------------------------------------
    max_prompt_chars: int = 500
    max_caption_chars: int = 300
    max_n: int = 4
    max_steps: int = 100
    default_steps: int = 25
    max_guidance: float = 50.0
    default_guidance_scale: float = 2.0
    default_subject_guidance_scale: float = 2.0
    max_size: int = 512  # output side in pixels (the model samples at its native size; larger is upsampled)
    max_k: int = 8  # neighbours for catalog generations

    # -- queue and batching -------------------------------------------------------------------------
    queue_size: int = 64  # pending generation images beyond which requests get 429
    max_batch: int = 8  # images per pipeline call (1 = no micro-batching)
    max_wait_ms: float = 25.0  # how long the free worker waits to fill a batch
    request_timeout_s: float = 120.0

    # -- subject store ------------------------------------------------------------------------------
    cache_items: int = 256  # demo contexts kept in memory (LRU)
    max_subjects: int = 10_000  # subjects on disk

    def check(self) -> ServeConfig:
        def positive(name: str, minimum: float = 1) -> None:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(v) or v < minimum:
                raise ConfigError(f"serve.{name} must be a number >= {minimum}, got {v!r}")

        for name in ("max_body_bytes", "max_image_bytes", "max_image_pixels", "max_image_side", "min_image_side",
                     "decode_concurrency", "max_concurrent_uploads", "max_prompt_chars", "max_caption_chars",
                     "max_n", "max_steps", "default_steps", "max_size", "max_k", "queue_size", "max_batch",
                     "cache_items", "max_subjects"):
            positive(name)
        for name in ("max_guidance", "max_wait_ms", "default_guidance_scale", "default_subject_guidance_scale"):
            positive(name, 0)
        positive("request_timeout_s", 0.001)
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"serve.port must be in 0..65535, got {self.port}")
        if not HARD_MIN_IMAGES <= self.min_images <= self.max_images <= HARD_MAX_IMAGES:
            raise ConfigError(f"serve image count range {self.min_images}..{self.max_images} must lie within "
                              f"{HARD_MIN_IMAGES}..{HARD_MAX_IMAGES} with min <= max")
        if self.min_image_side > self.max_image_side:
            raise ConfigError("serve.min_image_side must be <= serve.max_image_side")
        if self.max_image_bytes > self.max_body_bytes:
            raise ConfigError("serve.max_image_bytes must be <= serve.max_body_bytes")
        if self.default_steps > self.max_steps:
            raise ConfigError(f"serve.default_steps ({self.default_steps}) exceeds max_steps ({self.max_steps})")
        if self.torch_threads is not None and self.torch_threads < 1:
            raise ConfigError(f"serve.torch_threads must be >= 1, got {self.torch_threads}")
        if self.api_key is not None and len(self.api_key) < 16:
            raise ConfigError("serve.api_key must be at least 16 characters")
        if not is_loopback(self.host) and not self.api_key:
            raise ConfigError(f"binding to {self.host!r} (not loopback) needs an API key: pass --api-key or set "
                              "SUTI_API_KEY")
        return self

    @property
    def warn_image_count(self) -> bool:
        """Whether accepted image counts outside 3-5 should carry a warning (a widened range)."""
        return (self.min_images, self.max_images) != RECOMMENDED_IMAGES

    def public_limits(self) -> dict:
        hidden = {"model", "index", "store_dir", "host", "port", "api_key", "torch_threads"}
        return {k: v for k, v in asdict(self).items() if k not in hidden}
