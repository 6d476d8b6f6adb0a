"""Web-like cluster pages: one subject per page, a source URL, captioned images, and noise.

A page (cluster) shows its subject in `per_cluster` contexts. With probability `noise` each clean
image is followed by one noise row of a random kind:
- "unrelated": another subject (from the same split) with its own caption;
- "near_duplicate": the same subject and context again, slightly cropped and JPEG-compressed;
- "off_topic_caption": the page's subject, captioned as some other subject in another context.
Row URLs are variants of the page URL (scheme, www, host case, trailing slash, query, fragment)
that `canonical_url` maps back to one string per page.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass, replace
from functools import lru_cache
from urllib.parse import urlsplit

import numpy as np
from PIL import Image

from suti.errors import InputError
from suti.world.captions import caption
from suti.world.context import STYLES, Context, sample_context
from suti.world.render import render
from suti.world.traits import (
    Subject,
    allowed_recolors,
    coarse_traits,
    draw_index,
    draw_subject_id,
    make_subject,
    split_of,
)

NOISE_KINDS: tuple[str, ...] = ("unrelated", "near_duplicate", "off_topic_caption")
EXTRA_IDS = (1_000_000, 2_000_000)  # subjects that only appear as noise, never as a page's own subject
SITES = ("snapgallery", "petpics", "craftshare", "toyfans", "shopmart", "photoblog", "objectdaily", "picbox")
USERS = ("anna", "bo", "chris", "dee", "emil", "fatima", "gus", "hana", "ivan", "jo", "kim", "lou")
SLUGS = ("{color}-{shape}", "my-{shape}", "{shape}-photos", "{pattern}-{shape}-gallery", "our-{color}-{shape}")
_PAGE_STREAM = 0x9A6E


@dataclass(frozen=True)
class Row:
    """One image-caption pair on a page, with its ground truth."""

    cluster: int
    seed: int
    subject_id: int  # the subject in the image
    context: Context  # the context of the image
    caption: str
    url: str
    split: str
    is_noise: bool = False
    noise_kind: str = ""
    caption_subject_id: int = -1  # whom the caption describes (differs only for off-topic captions)
    caption_context: Context | None = None
    jitter: int = 0  # 0 = clean render; otherwise the seed of the near-duplicate perturbation

    def attributes(self) -> dict:
        """JSON-able ground truth: subject traits, context, skills, and what the caption is about."""
        shape, color, pattern = coarse_traits(self.subject_id, self.seed)
        about = self.caption_context if self.caption_context is not None else self.context
        return {
            "subject": {"id": self.subject_id, "world_seed": self.seed, "shape": shape, "color": color,
                        "pattern": pattern},  # fmt: skip
            "context": self.context.to_dict(),
            "skills": list(self.context.skills),
            "caption_subject_id": self.caption_subject_id,
            "caption_context": about.to_dict(),
            "jitter": self.jitter,
        }


@lru_cache(maxsize=4096)
def _subject(subject_id: int, seed: int) -> Subject:
    return make_subject(subject_id, seed)


def canonical_url(url: str) -> str:
    """The page a URL points to: https, lowercase host without www, no query/fragment/trailing slash."""
    parts = urlsplit(url.strip())
    if not parts.netloc:
        raise InputError(f"not an absolute URL: {url!r}")
    host = parts.netloc.lower()
    host = host[4:] if host.startswith("www.") else host
    return f"https://{host}{parts.path.rstrip('/') or '/'}"


def _page_url(rng: np.random.Generator, subject: Subject, cluster: int) -> str:
    site = SITES[draw_index(rng, len(SITES))]
    user = f"{USERS[draw_index(rng, len(USERS))]}{draw_index(rng, 100, 1)}"
    slug = SLUGS[draw_index(rng, len(SLUGS))].format(**subject.coarse)
    number = cluster * 100 + draw_index(rng, 100)  # unique per cluster
    ending = ".html" if rng.random() < 0.6 else ""
    return f"https://{site}.example/{user}/{slug}-{number}{ending}"


def _url_variant(rng: np.random.Generator, page: str) -> str:
    parts = urlsplit(page)
    scheme = "https" if rng.random() < 0.7 else "http"
    host = ("www." if rng.random() < 0.6 else "") + parts.netloc
    if rng.random() < 0.15:
        host = host.upper() if rng.random() < 0.5 else host.title()
    path = parts.path
    if not path.endswith(".html") and rng.random() < 0.5:
        path += "/"
    url = f"{scheme}://{host}{path}"
    if rng.random() < 0.25:
        url += ("?utm_source=feed", "?ref=home", "?share=1&lang=en")[draw_index(rng, 3)]
    if rng.random() < 0.1:
        url += f"#photo-{draw_index(rng, 20, 1)}"
    return url


def plan_cluster(cluster: int, per_cluster: int, seed: int = 0, noise: float = 0.1,
                 styles: tuple[str, ...] = STYLES) -> list[Row]:  # fmt: skip
    """All rows of one page, in page order (no images: see `render_row`)."""
    rng = np.random.default_rng([int(seed), int(cluster), _PAGE_STREAM])
    split = split_of(cluster, seed)
    subject = _subject(cluster, seed)
    recolors = allowed_recolors(subject, split)

    def other() -> tuple[Subject, Context]:
        sid = draw_subject_id(rng, split, seed, *EXTRA_IDS)
        s = _subject(sid, seed)
        return s, sample_context(rng, s, allowed_recolors(s, split), styles)

    base = dict(cluster=cluster, seed=seed, split=split, url="")
    rows: list[Row] = []
    for _ in range(per_cluster):
        ctx = sample_context(rng, subject, recolors, styles)
        clean = Row(subject_id=cluster, context=ctx, caption=caption(subject, ctx, rng),
                    caption_subject_id=cluster, **base)  # fmt: skip
        rows.append(clean)
        if rng.random() >= noise:
            continue
        kind = NOISE_KINDS[draw_index(rng, len(NOISE_KINDS))]
        noisy = dict(is_noise=True, noise_kind=kind, **base)
        if kind == "unrelated":
            s, c = other()
            rows.append(Row(subject_id=s.subject_id, context=c, caption=caption(s, c, rng),
                            caption_subject_id=s.subject_id, **noisy))  # fmt: skip
        elif kind == "near_duplicate":
            rows.append(Row(subject_id=cluster, context=ctx, caption=caption(subject, ctx, rng),
                            caption_subject_id=cluster, jitter=draw_index(rng, 2**31, 1), **noisy))  # fmt: skip
        else:
            own = sample_context(rng, subject, recolors, styles)
            s, c = other()
            rows.append(Row(subject_id=cluster, context=own, caption=caption(s, c, rng),
                            caption_subject_id=s.subject_id, caption_context=c, **noisy))  # fmt: skip
    page = _page_url(rng, subject, cluster)
    order = rng.permutation(len(rows))
    return [replace(rows[i], url=_url_variant(rng, page)) for i in order]


def check_plan_args(clusters: int, per_cluster: int, seed: int, noise: float) -> None:
    """InputError unless the counts, seed and noise rate make sense."""
    for name, value in (("clusters", clusters), ("per-cluster", per_cluster), ("seed", seed)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise InputError(f"{name} must be a non-negative integer, got {value!r}")
    if clusters < 1 or per_cluster < 1:
        raise InputError(f"clusters and per-cluster must be at least 1, got {clusters} and {per_cluster}")
    if per_cluster > 64:
        raise InputError(f"per-cluster must be at most 64 images, got {per_cluster}")
    if clusters >= EXTRA_IDS[0]:
        raise InputError(f"clusters must be below {EXTRA_IDS[0]}, got {clusters}")
    if not isinstance(noise, (int, float)) or not 0.0 <= noise <= 1.0:
        raise InputError(f"noise must be a rate between 0 and 1, got {noise!r}")


def plan_world(clusters: int, per_cluster: int, seed: int = 0, noise: float = 0.1,
               styles: tuple[str, ...] = STYLES) -> Iterator[Row]:  # fmt: skip
    """Rows of pages 0..clusters-1, page after page. Page c shows subject id c."""
    check_plan_args(clusters, per_cluster, seed, noise)
    for cluster in range(clusters):
        yield from plan_cluster(cluster, per_cluster, seed, noise, styles)


def render_row(row: Row, size: int) -> Image.Image:
    """The image of a row (near-duplicates get their crop + JPEG perturbation)."""
    img = render(_subject(row.subject_id, row.seed), row.context, size)
    return _perturb(img, row.jitter) if row.jitter else img


def _perturb(img: Image.Image, jitter: int) -> Image.Image:
    """A near-duplicate: crop one pixel off one or two sides, resize back, JPEG round trip."""
    rng = np.random.default_rng(jitter)
    w, h = img.size
    cut = rng.integers(0, 2, 4)
    if not cut.any():
        cut[int(rng.integers(4))] = 1
    box = (int(cut[0]), int(cut[1]), w - int(cut[2]), h - int(cut[3]))
    img = img.crop(box).resize((w, h), Image.BILINEAR)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=int(rng.integers(60, 91)))
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
