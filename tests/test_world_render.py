"""The renderer: sizes, anti-aliasing, identity details, and 'each skill changes what it should'."""

import numpy as np
import pytest
from PIL import Image

from suti.errors import InputError
from suti.world import ACCESSORIES, SCENES, STYLES, Context, caption, coarse_traits, make_subject, render, render_layers
from suti.world.render import POSITION_X
from suti.world.styles import apply_style


def _arr(img: Image.Image) -> np.ndarray:
    return np.asarray(img, dtype=np.float32) / 255.0


def _patterned_subject(pattern: str = "striped"):
    return make_subject(next(i for i in range(500) if coarse_traits(i)[2] == pattern))


@pytest.mark.parametrize("size", [16, 33, 64, 512])
def test_any_size_from_16_to_512(size):
    img = render(make_subject(1), Context(scene="beach"), size)
    assert img.mode == "RGB" and img.size == (size, size)


@pytest.mark.parametrize("size", [0, 15, 513, 10000, 64.0, True, "64"])
def test_bad_size_is_an_input_error(size):
    with pytest.raises(InputError, match="size"):
        render(make_subject(1), Context(), size)


def test_bad_subject_or_context_is_an_input_error():
    with pytest.raises(InputError, match="Subject"):
        render("star", Context(), 64)
    with pytest.raises(InputError, match="Context"):
        render(make_subject(1), {"scene": "beach"}, 64)


def test_same_caption_subjects_look_clearly_different():
    """Two subjects with the same coarse caption differ far above anti-aliasing noise."""
    groups: dict = {}
    for i in range(400):
        groups.setdefault(coarse_traits(i), []).append(i)
    pairs = [ids[:2] for ids in groups.values() if len(ids) >= 2][:8]
    assert any(coarse_traits(a)[2] == "solid" for a, _ in pairs) or len(pairs) == 8
    for a, b in pairs:
        sa, sb = make_subject(a), make_subject(b)
        ctx = Context(scene="grass")
        assert caption(sa, ctx) == caption(sb, ctx)
        ra = _arr(render(sa, ctx, 64))
        supersampled = _arr(render(sa, ctx, 64, supersample=4))
        resampled = _arr(render(sa, ctx, 128).resize((64, 64), Image.BOX))
        aa_noise = max(np.abs(ra - supersampled).mean(), np.abs(ra - resampled).mean())
        distance = np.abs(ra - _arr(render(sb, ctx, 64))).mean()
        assert distance > 5 * aa_noise, (a, b, distance, aa_noise)


def test_render_is_deterministic():
    s = make_subject(9)
    ctx = Context(scene="jungle", style="watercolor", accessory="hat", rotation=30)
    assert render(s, ctx, 48).tobytes() == render(s, ctx, 48).tobytes()


def _inner(mask: np.ndarray) -> np.ndarray:
    """Pixels fully inside a coverage mask, eroded by one pixel."""
    full = mask >= 1.0
    core = full.copy()
    core[1:] &= full[:-1]
    core[:-1] &= full[1:]
    core[:, 1:] &= full[:, :-1]
    core[:, :-1] &= full[:, 1:]
    return core


def test_recontextualization_keeps_the_subject_pixels():
    s = _patterned_subject("dotted")
    ref = render_layers(s, Context(), 64)
    core = _inner(ref.body)
    assert core.sum() > 300
    for scene in SCENES[1:]:
        other = render_layers(s, Context(scene=scene), 64)
        np.testing.assert_allclose(other.image[core], ref.image[core], atol=1e-6)
        outside = ref.body == 0
        assert np.abs(other.image[outside] - ref.image[outside]).mean() > 0.05, scene


def test_recolor_changes_only_body_colour_pixels():
    s = _patterned_subject("checkered")
    ref = render_layers(s, Context(), 64)
    weight = ref.body_color_weight
    for target in ("blue", "yellow"):
        if target == s.color:
            continue
        new = render_layers(s, Context(recolor=target), 64)
        diff = np.abs(new.image - ref.image).max(axis=2)
        step = np.abs(np.subtract(s.body_rgb(target), s.body_rgb())).max()
        assert (diff <= weight * 1.12 * step + 1e-5).all()  # nothing changes beyond the body colour share
        assert (diff[weight == 0] == 0).all()  # background, pattern ink and mark untouched
        assert diff[weight > 0.99].mean() > 0.1  # and the body colour did change


@pytest.mark.parametrize("accessory", ACCESSORIES)
def test_accessory_adds_pixels_only_in_its_region(accessory):
    s = make_subject(12)
    ref = render_layers(s, Context(scene="kitchen_table"), 64)
    new = render_layers(s, Context(scene="kitchen_table", accessory=accessory), 64)
    diff = np.abs(new.image - ref.image).max(axis=2)
    assert (diff[new.accessory == 0] == 0).all()
    assert (new.accessory > 0.5).sum() >= 20  # big enough to see at 64 px ...
    assert (diff > 0.1).sum() >= 15  # ... and actually visible


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    return xs.min(), ys.min(), xs.max() + 1, ys.max() + 1


def _box_iou(a, b) -> float:
    iw = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    area = lambda r: (r[2] - r[0]) * (r[3] - r[1])  # noqa: E731
    return inter / (area(a) + area(b) - inter)


@pytest.mark.parametrize("style", [s for s in STYLES if s != "photo"])
def test_style_changes_the_whole_image_but_keeps_the_layout(style):
    s = make_subject(5)
    ctx = Context(position="left", style=style)
    layers = render_layers(s, ctx, 64)
    styled_background = apply_style(style, layers.background, np.zeros_like(layers.body))
    seen = np.abs(layers.image - styled_background).max(axis=2) > 0.06  # where the subject shows
    body = layers.body > 0.5
    assert _box_iou(_bbox(seen), _bbox(body)) > 0.7
    assert (seen & body).sum() / (seen | body).sum() > 0.5
    assert (seen & np.fliplr(body)).sum() / (seen | np.fliplr(body)).sum() < 0.3  # a mirrored layout fails

    photo = render_layers(s, Context(scene="beach"), 64)
    styled = render_layers(s, Context(scene="beach", style=style), 64)
    change = np.abs(photo.image - styled.image).mean(axis=2)
    assert change[photo.body == 0].mean() > 0.015 and change[photo.body == 1].mean() > 0.05


def test_view_flip_and_rotations_move_the_mask_exactly():
    s = _patterned_subject("striped")
    base = render_layers(s, Context(), 64)
    flip = render_layers(s, Context(flip=True), 64)
    np.testing.assert_allclose(flip.body, np.fliplr(base.body), atol=1e-4)
    np.testing.assert_allclose(flip.mark, np.fliplr(base.mark), atol=1e-4)
    assert np.abs(flip.body - base.body).max() > 0.5  # the subject is not mirror-symmetric
    r90 = render_layers(s, Context(rotation=90), 64)
    np.testing.assert_allclose(r90.body, np.rot90(base.body, 1), atol=1e-4)  # counter-clockwise
    r180 = render_layers(s, Context(rotation=180), 64)
    np.testing.assert_allclose(r180.body, np.rot90(base.body, 2), atol=1e-4)


def _centroid(weights: np.ndarray) -> np.ndarray:
    ys, xs = np.mgrid[: weights.shape[0], : weights.shape[1]]
    return np.array([(xs * weights).sum(), (ys * weights).sum()]) / weights.sum()


@pytest.mark.parametrize("rotation", [30, -30])
def test_view_tilt_rotates_the_mark_about_the_centre(rotation):
    s = make_subject(21)
    size = 96
    centre = np.array([size / 2 - 0.5, size / 2 - 0.5])
    m0 = _centroid(render_layers(s, Context(), size).mark) - centre
    m1 = _centroid(render_layers(s, Context(rotation=rotation), size).mark) - centre
    a = np.deg2rad(rotation)  # counter-clockwise on screen, y pointing down
    expected = np.array([m0[0] * np.cos(a) + m0[1] * np.sin(a), -m0[0] * np.sin(a) + m0[1] * np.cos(a)])
    assert np.linalg.norm(m0) > 3
    np.testing.assert_allclose(m1, expected, atol=0.5)


def test_view_position_and_scale():
    s = make_subject(8)
    size = 80
    base = render_layers(s, Context(), size)
    shift = round(POSITION_X["right"] * size / 2)
    right = render_layers(s, Context(position="right"), size)
    np.testing.assert_allclose(right.body[:, shift:], base.body[:, :-shift], atol=1e-4)
    left = render_layers(s, Context(position="left"), size)
    np.testing.assert_allclose(left.body[:, :-shift], base.body[:, shift:], atol=1e-4)
    area = base.body.sum()
    assert 1.6 < render_layers(s, Context(scale="large"), size).body.sum() / area < 2.0
    assert 0.35 < render_layers(s, Context(scale="small"), size).body.sum() / area < 0.5
    assert 0.1 < area / size**2 < 0.6  # the default subject fills a good part of the frame
