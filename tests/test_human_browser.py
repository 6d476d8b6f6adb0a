"""A real headless Chromium (Debian's /usr/bin/chromium, driven by Playwright) completes a small study:
open the link, rate with the mouse and with keys, reload mid-way and resume, finish.

Skipped (with the reason) when /usr/bin/chromium is missing: install it with `apt-get install -y chromium`.
Playwright never downloads a browser here.
"""

from __future__ import annotations

import os
import re

import pytest
from _human import ThreadServer, make_eval_dir
from sqlalchemy import select

from suti.human.db import Assignment, Database, Rating, Task
from suti.human.study import StudyConfig, create_study

CHROMIUM = os.environ.get("SUTI_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--disable-quic"]  # fmt: skip

pytestmark = pytest.mark.skipif(
    not os.path.exists(CHROMIUM), reason=f"no Chromium at {CHROMIUM} (apt-get install -y chromium)"
)


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture(scope="module")
def eval_dir(tmp_path_factory):
    return make_eval_dir(tmp_path_factory.mktemp("evaldir"), subjects=(3,), prompts=2)


def _progress(page) -> tuple[int, int, int]:
    m = re.search(r"Item (\d+) of (\d+) · (\d+) rated", page.inner_text("body"))
    return int(m.group(1)), int(m.group(2)), int(m.group(3))


def _images_loaded(page) -> bool:
    return page.evaluate("Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")


def test_chromium_completes_a_study_with_mouse_keys_reload_and_resume(browser, eval_dir, tmp_path):
    db = Database.open(tmp_path / "study.db")
    made = create_study(db, eval_dir, StudyConfig(name="browser", systems=("gt", "blur"), raters=("ann",),
                                                  raters_per_item=1, gold_fraction=0.2))  # fmt: skip
    token = made.rater_tokens["ann"]
    entered: dict[int, tuple[float, float, float]] = {}
    with ThreadServer(db) as server:
        page = browser.new_page()
        page.goto(f"{server.url}/r/{token}")
        assert page.url.endswith(f"/r/{token}/0") and _progress(page) == (1, 6, 0)
        assert _images_loaded(page) and page.locator(".demos img").count() == 3

        # page 1: mouse only
        for axis, value in (("subject", "1"), ("text", "0.5"), ("realism", "0")):
            page.click(f'input[name="{axis}"][value="{value}"]')
        page.click("button[type=submit]")
        page.wait_for_url(f"**/r/{token}/1")
        entered[0] = (1, 0.5, 0)

        # page 2: an incomplete answer does not submit; then keys only (e = subject 1, s = text .5, x = realism .5)
        page.keyboard.press("e")
        page.keyboard.press("Enter")
        page.wait_for_timeout(300)
        assert page.url.endswith(f"/r/{token}/1") and db_count(db) == 1
        for key in ("s", "x", "Enter"):
            page.keyboard.press(key)
        page.wait_for_url(f"**/r/{token}/2")
        entered[1] = (1, 0.5, 0.5)

        # page 3: keys and mouse mixed, then a key overrides a click
        page.keyboard.press("q")
        page.click('input[name="text"][value="1"]')
        page.click('input[name="realism"][value="1"]')
        page.keyboard.press("z")
        page.keyboard.press("Enter")
        page.wait_for_url(f"**/r/{token}/3")
        entered[2] = (0, 1, 0)

        # reload mid-way, and open the personal link afresh: both resume at page 4 with 3 rated
        page.keyboard.press("d")
        page.reload()
        assert page.url.endswith(f"/r/{token}/3") and _progress(page) == (4, 6, 3)
        assert page.locator('input[name="text"]:checked').count() == 0  # nothing half-submitted
        page.goto(f"{server.url}/r/{token}")
        assert page.url.endswith(f"/r/{token}/3") and _images_loaded(page)

        for position, keys, values in ((3, "wsx", (0.5, 0.5, 0.5)), (4, "eac", (1, 0, 1)), (5, "qaz", (0, 0, 0))):
            for key in [*keys, "Enter"]:
                page.keyboard.press(key)
            if position < 5:
                page.wait_for_url(f"**/r/{token}/{position + 1}")
            entered[position] = values
        page.wait_for_selector("#done", timeout=10_000)
        assert "All 6 items rated" in page.inner_text("#done")
        page.goto(f"{server.url}/r/{token}/2")
        assert "already rated" in page.inner_text("body")
        agent = page.evaluate("navigator.userAgent")
        page.close()
    with db.read() as s:
        stored = {a.position: r for r, a in s.execute(select(Rating, Assignment).join(Assignment))}
    assert {p: (r.subject, r.text, r.realism) for p, r in stored.items()} == entered
    assert all(r.duration_ms is not None and r.duration_ms > 0 for r in stored.values())
    assert all(r.user_agent == agent and "Chrome" in agent for r in stored.values())
    db.dispose()


def db_count(db) -> int:
    with db.read() as s:
        return len(list(s.scalars(select(Rating.id))))


def test_chromium_pairwise_choice_by_key(browser, eval_dir, tmp_path):
    db = Database.open(tmp_path / "pw.db")
    made = create_study(db, eval_dir, StudyConfig(name="pw", mode="pairwise", systems=("gt", "copy"), raters=("ann",),
                                                  raters_per_item=1, gold_fraction=0.0))  # fmt: skip
    with ThreadServer(db) as server:
        page = browser.new_page()
        page.goto(f"{server.url}/r/{made.rater_tokens['ann']}")
        assert page.locator("#img-a").count() == 1 and page.locator("#img-b").count() == 1 and _images_loaded(page)
        page.keyboard.press("2")  # B is better
        page.keyboard.press("Enter")
        page.wait_for_url("**/1")
        page.close()
    with db.read() as s:
        rating, asg = s.execute(select(Rating, Assignment).join(Assignment)).one()
        task = s.get(Task, asg.task_id)
        shown_b = task.system if asg.swap else task.system_b
        assert (rating.choice, rating.preferred) == ("B", shown_b)
    db.dispose()
