"""Study creation and the rating protocol on a real database: SQLite (WAL) and PostgreSQL.

The PostgreSQL variant uses $SUTI_TEST_PG_URL (a disposable database: its public schema is dropped)
or starts a throwaway cluster with initdb/pg_ctl; it is skipped, with the reason, when neither works.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from collections import Counter

import numpy as np
import pytest
from _human import SYSTEMS, fresh, make_eval_dir, postgres_url, reset_postgres
from PIL import Image
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from suti.errors import ConfigError, InputError
from suti.human.db import Asset, Assignment, Database, Item, Rater, Rating, Task, database_url, table_counts
from suti.human.evaldir import read_eval_dir
from suti.human.gold import passes, truth_render
from suti.human.ratings import Rejected, Submission, image_png, page_view, submit
from suti.human.study import StudyConfig, create_study
from suti.world import make_subject

RATERS = ("ann", "bob", "cy", "dee")


@pytest.fixture(scope="module")
def eval_dir(tmp_path_factory):
    return make_eval_dir(tmp_path_factory.mktemp("evaldir"))


@pytest.fixture(scope="module")
def pg():
    with postgres_url() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request, tmp_path):
    if request.param == "sqlite":
        database = Database.open(tmp_path / "study.db")
    else:
        url = request.getfixturevalue("pg")
        reset_postgres(url)
        database = Database.open(url)
    yield database
    database.dispose()


def _make(db, eval_dir, **kw):
    config = StudyConfig(name=kw.pop("name", "pilot"), raters=RATERS, raters_per_item=2, gold_fraction=0.2, **kw)
    return create_study(db, eval_dir, config)


def _snapshot(db):
    with db.read() as s:
        counts = table_counts(s, 1)
        ratings = [(r.id, r.assignment_id, r.submission_id, r.subject, r.text, r.realism, r.choice)
                   for r in s.scalars(select(Rating).order_by(Rating.id))]  # fmt: skip
    return counts, ratings


def test_create_study_assigns_balanced_blinded_queues(db, eval_dir):
    made = _make(db, eval_dir)
    c = made.counts
    assert (c["items"], c["systems"], c["tasks"], c["raters"]) == (6, 3, 18, 4)
    # 18 tasks x 2 raters / 4 raters = 9 real pages each; gold share 20% -> round(.25 * 9) = 2 gold pages
    assert c["gold_tasks"] == 2 and c["assignments"] == 4 * 2 + 18 * 2
    with db.read() as s:
        gold_items = list(s.scalars(select(Item).where(Item.gold_kind.is_not(None))))
        assert [g.gold_kind for g in gold_items] == ["truth/noise"]  # results.json's world seed -> truth renders
        per_task = Counter(a.task_id for a in s.scalars(select(Assignment)))
        tasks = {t.id: t for t in s.scalars(select(Task))}
        for task_id, n in per_task.items():
            assert n == (4 if tasks[task_id].expected else 2)  # every rater sees all gold, 2 raters per real task
        orders = []
        for rater in s.scalars(select(Rater)):
            mine = list(
                s.scalars(select(Assignment).where(Assignment.rater_id == rater.id).order_by(Assignment.position))
            )
            assert [a.position for a in mine] == list(range(len(mine)))
            real_items = {tasks[a.task_id].item_id for a in mine if not tasks[a.task_id].expected}
            for item in real_items:  # a rater who gets an item sees every system on it
                assert sorted(tasks[a.task_id].system for a in mine if tasks[a.task_id].item_id == item) == sorted(
                    SYSTEMS
                )
            orders.append([tasks[a.task_id].system for a in mine])
            assert 10 <= len(mine) <= 12  # balanced load (3 items x 3 systems... +-1 item) + 2 gold
    assert len({tuple(o) for o in orders}) == len(orders)  # each rater has an own random order
    view = page_view(db, made.rater_tokens["ann"], 0)
    assert not any(system in str(view) for system in SYSTEMS) and view["outputs"] == ["out"]
    assert image_png(db, made.rater_tokens["ann"], 0, "out")[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(InputError, match="already exists"):
        _make(db, eval_dir)


def test_create_is_one_transaction(db, eval_dir, tmp_path):
    broken = make_eval_dir(tmp_path / "broken", subjects=(3,), prompts=2)
    (broken / "outputs" / "gt" / "s003-p01-0.png").write_bytes(b"not a png")
    with pytest.raises(InputError, match="cannot read image"):
        _make(db, broken)
    with db.read() as s:
        assert s.scalar(select(Item.id)) is None  # nothing of the failed study was kept
    with pytest.raises(ConfigError, match="raters per item"):
        create_study(db, eval_dir, StudyConfig(name="x", raters=("a",), raters_per_item=2))


def test_rating_is_idempotent_and_double_submissions_are_refused(db, eval_dir):
    made = _make(db, eval_dir)
    ann, bob = made.rater_tokens["ann"], made.rater_tokens["bob"]
    ref0 = page_view(db, ann, 0)["ref"]
    form = fresh(ref0, subject=1, text=0.5, realism=0, duration_ms=1234)
    ack = submit(db, ann, 0, Submission.parse(form, "pytest"))
    assert (ack.replay, ack.done, ack.next_position) == (False, 1, 1)
    before = _snapshot(db)
    again = submit(db, ann, 0, Submission.parse(form))  # a retry of the same submission: same ack, no write
    assert (again.rating_id, again.replay) == (ack.rating_id, True) and _snapshot(db) == before
    ref1 = page_view(db, ann, 1)["ref"]
    bob_ref = page_view(db, bob, 0)["ref"]
    bad = [
        (409, ann, 0, fresh(ref0, subject=1, text=1, realism=1)),  # second answer to a rated page
        (409, ann, 0, {**form, "text": "1"}),  # same key, different answer
        (409, ann, 1, {**form, "ref": ref1}),  # same key reused on another page
        (400, ann, 1, fresh(ref0, subject=1, text=1, realism=1)),  # tampered: the ref of another page
        (400, ann, 1, fresh(bob_ref, subject=1, text=1, realism=1)),  # another rater's page reference
        (404, "x" * 24, 1, fresh(ref1, subject=1, text=1, realism=1)),  # unknown token
        (404, ann, 999, fresh(ref1, subject=1, text=1, realism=1)),  # not in the queue
        (404, ann, -1, fresh(ref1, subject=1, text=1, realism=1)),
        (422, ann, 1, fresh(ref1, subject=1, text=1)),  # missing axis
        (422, ann, 1, fresh(ref1, subject=1, text=1, realism=1, choice="A")),  # pairwise field
    ]
    for status, token, position, fields in bad:
        with pytest.raises(Rejected) as info:
            submit(db, token, position, Submission.parse(fields))
        assert info.value.status == status, (status, fields)
        assert _snapshot(db) == before
    for value in ("0.7", "2", "-1", "nan", "inf", "abc", "0.50000001"):
        with pytest.raises(Rejected) as info:
            Submission.parse(fresh(ref1, subject=value, text=1, realism=1))
        assert info.value.status == 422
    for field, value in (("submission_id", "short"), ("ref", "../../etc"), ("duration_ms", "-5"), ("choice", "C")):
        with pytest.raises(Rejected, match=field.split("_")[0]):
            Submission.parse({**fresh(ref1, subject=1, text=1, realism=1), field: value})
    assert _snapshot(db) == before


def test_concurrent_identical_submissions_store_one_rating(db, eval_dir):
    made = _make(db, eval_dir)
    token = made.rater_tokens["cy"]
    form = fresh(page_view(db, token, 2)["ref"], subject=0.5, text=0.5, realism=0.5)
    acks, errors = [], []

    def go():
        try:
            acks.append(submit(db, token, 2, Submission.parse(form)))
        except Exception as e:  # noqa: BLE001 - collected and asserted below
            errors.append(e)

    threads = [threading.Thread(target=go) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len({a.rating_id for a in acks}) == 1 and sum(not a.replay for a in acks) == 1
    assert _snapshot(db)[0]["ratings"] == 1


def test_database_enforces_one_rating_per_page(db, eval_dir):
    made = _make(db, eval_dir)
    ack = submit(db, made.rater_tokens["dee"], 0, Submission.parse(fresh(page_view(db, made.rater_tokens["dee"], 0)["ref"],
                                                                         subject=1, text=1, realism=1)))  # fmt: skip
    with pytest.raises(IntegrityError), db.write() as s:
        row = s.get(Rating, ack.rating_id)
        s.add(Rating(assignment_id=row.assignment_id, rater_id=row.rater_id, submission_id=uuid.uuid4().hex,
                     subject=0.0, text=0.0, realism=0.0))  # fmt: skip


def test_pairwise_resolves_the_shown_side(db, eval_dir):
    made = create_study(db, eval_dir, StudyConfig(name="pw", mode="pairwise", systems=("gt", "blur"),
                                                  raters=("ann", "bob"), raters_per_item=2, gold_fraction=0.0))  # fmt: skip
    token = made.rater_tokens["ann"]
    with db.read() as s:
        rows = [(a, s.get(Task, a.task_id)) for a in s.scalars(select(Assignment).order_by(Assignment.position))
                if a.rater_id == s.scalar(select(Rater.id).where(Rater.token == token))]  # fmt: skip
    assert {a.swap for a, _ in rows} == {True, False}  # both layouts occur
    for asg, task in rows:
        shown_a = image_png(db, token, asg.position, "a")
        ack = submit(db, token, asg.position, Submission.parse(fresh(asg.ref, choice="A")))
        with db.read() as s:
            preferred = s.get(Rating, ack.rating_id).preferred
            winner_asset = task.asset if preferred == task.system else task.asset_b
            assert s.get(Asset, winner_asset).png == shown_a
    with pytest.raises(Rejected) as info:
        submit(db, made.rater_tokens["bob"], 0, Submission.parse(fresh(page_view(db, made.rater_tokens["bob"], 0)["ref"],
                                                                           subject=1, text=1, realism=1)))  # fmt: skip
    assert info.value.status == 422


def test_database_url_forms(tmp_path):
    assert database_url(tmp_path / "a.db") == f"sqlite:///{tmp_path / 'a.db'}"
    assert database_url("postgresql://u:p@h/db").startswith("postgresql+psycopg://u:p@h/db")
    with pytest.raises(ConfigError, match="SQLite or PostgreSQL"):
        database_url("mysql://u@h/db")
    with pytest.raises(InputError, match="does not exist"):
        Database.open(tmp_path / "missing" / "a.db")
    with pytest.raises(InputError, match="does not exist"):
        Database.open(tmp_path / "none.db", create=False)


def test_eval_dir_errors_name_the_line_and_field(tmp_path):
    root = make_eval_dir(tmp_path / "ev", subjects=(3,), prompts=2)
    good = root.joinpath("items.jsonl").read_text().splitlines()
    assert read_eval_dir(root).systems == SYSTEMS and read_eval_dir(root).world_seed == 0
    row = json.loads(good[1])
    cases = [
        ({**row, "outputs": {"gt": "../../etc/passwd"}}, "leaves the EVAL_DIR"),
        ({**row, "outputs": {"gt": "/etc/passwd"}}, "must be relative"),
        ({**row, "demos": ["demos/none.png", *row["demos"][1:]]}, "does not exist"),
        ({**row, "demos": []}, "'demos' must be a non-empty list"),
        ({**row, "prompt": ""}, "'prompt' must be a non-empty string"),
        ({**row, "item_id": json.loads(good[0])["item_id"]}, "appears twice"),
        ({**row, "demo_captions": ["only one"]}, "'demo_captions' must be a list of 3 strings"),
    ]
    for bad, message in cases:
        root.joinpath("items.jsonl").write_text(good[0] + "\n" + json.dumps(bad) + "\n")
        with pytest.raises(InputError, match=re.escape(message)) as info:
            read_eval_dir(root)
        assert "line 2" in str(info.value)
    root.joinpath("items.jsonl").write_text(good[0] + "\n{oops\n")
    with pytest.raises(InputError, match="line 2: not valid JSON"):
        read_eval_dir(root)


def test_truth_gold_is_the_world_render_of_the_prompt(tmp_path):
    root = make_eval_dir(tmp_path / "ev", subjects=(3, 5), prompts=2)
    evaldir = read_eval_dir(root)
    for item in evaldir.items:  # the fixture's "gt" system is the ground truth, variant 0
        truth = truth_render(item, world_seed=0, size=(32, 32))
        gt = np.asarray(Image.open(item.outputs["gt"]), dtype=float)
        assert truth is not None and np.abs(np.asarray(truth, dtype=float) - gt).mean() < 2.0
        sid = int(item.subject[1:])
        if make_subject(sid, 1).coarse != make_subject(sid, 0).coarse:  # another world seed: detected, no render
            assert truth_render(item, world_seed=1, size=(32, 32)) is None
    other = evaldir.items[0].__class__(**{**evaldir.items[0].__dict__, "subject": "cat-photo", "context": None})
    assert truth_render(other, 0, (32, 32)) is None
    assert passes({"subject": 1.0, "text": 1.0}, {"subject": 0.5, "text": 1.0})
    assert not passes({"subject": 0.0}, {"subject": 1.0}) and passes(
        {"preferred": "gold:truth"}, {"preferred": "gold:truth"}
    )
