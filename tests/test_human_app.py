"""The rating app over real HTTP (uvicorn on loopback), the admin pages, and the `suti eval human` CLI."""

from __future__ import annotations

import json
import re

import httpx
import pandas as pd
import pytest
from _human import SYSTEMS, ThreadServer, fresh, make_eval_dir
from sqlalchemy import select

from suti.human.db import Assignment, Database, Rater, Task, table_counts
from suti.human.ratings import Submission, page_view, submit
from suti.human.study import StudyConfig, create_study
from tools.eval_human import main

JSON = {"Accept": "application/json"}


@pytest.fixture(scope="module")
def eval_dir(tmp_path_factory):
    return make_eval_dir(tmp_path_factory.mktemp("evaldir"), subjects=(3, 5), prompts=2)


@pytest.fixture
def live(tmp_path, eval_dir):
    db = Database.open(tmp_path / "study.db")
    made = create_study(db, eval_dir, StudyConfig(name="pilot", raters=("ann", "bob"), raters_per_item=1,
                                                  gold_fraction=0.2))  # fmt: skip
    with ThreadServer(db) as server, httpx.Client(base_url=server.url, timeout=10) as client:
        yield db, made, client
    db.dispose()


def _state(db):
    with db.read() as s:
        return table_counts(s, 1)


def test_rater_pages_over_http(live):
    db, made, client = live
    ann = made.rater_tokens["ann"]
    assert client.get("/").status_code == 200
    r = client.get(f"/r/{ann}")
    assert r.status_code == 303 and r.headers["location"] == f"/r/{ann}/0"
    page = client.get(f"/r/{ann}/0")
    assert page.status_code == 200 and page.headers["cache-control"] == "no-store"
    assert page.headers["referrer-policy"] == "no-referrer"
    html = page.text
    view = page_view(db, ann, 0)
    assert view["prompt"] in html and html.count("/img/demo") == 3 and html.count("/img/out") == 1
    assert not re.search(r"\b(gt|copy|blur|gold)\b", html.replace(view["prompt"], ""))  # blinded
    png = client.get(f"/r/{ann}/0/img/out")
    assert png.status_code == 200 and png.headers["content-type"] == "image/png" and png.content[:4] == b"\x89PNG"
    assert client.get(f"/r/{ann}/0/img/a").status_code == 404
    assert client.get(f"/r/{ann}/0/img/demo9").status_code == 404
    # a plain form post redirects to the resume link, which goes on to the next page
    posted = client.post(f"/r/{ann}/0", data=fresh(view["ref"], subject=1, text=1, realism=0.5))
    assert posted.status_code == 303 and client.get(posted.headers["location"]).headers["location"] == f"/r/{ann}/1"
    assert "already rated" in client.get(f"/r/{ann}/0").text
    ack = client.post(f"/r/{ann}/1", json=fresh(page_view(db, ann, 1)["ref"], subject=0, text=0.5, realism=1))
    assert ack.status_code == 200 and ack.json()["done"] == 2 and ack.json()["replay"] is False
    assert client.get(f"/r/{ann}", headers=JSON).json()["next_position"] == 2


def test_bad_requests_get_4xx_and_change_nothing(live):
    db, made, client = live
    ann, bob = made.rater_tokens["ann"], made.rater_tokens["bob"]
    ref0, ref1 = page_view(db, ann, 0)["ref"], page_view(db, ann, 1)["ref"]
    form = fresh(ref0, subject=1, text=1, realism=1)
    assert client.post(f"/r/{ann}/0", json=form).status_code == 200
    before = _state(db)
    cases = [
        (200, f"/r/{ann}/0", form),  # identical resubmission: acknowledged again, nothing written
        (409, f"/r/{ann}/0", fresh(ref0, subject=0, text=0, realism=0)),  # double submission
        (400, f"/r/{ann}/1", fresh(ref0, subject=0, text=0, realism=0)),  # tampered item reference
        (400, f"/r/{bob}/1", fresh(ref1, subject=0, text=0, realism=0)),  # ann's item through bob's link
        (404, "/r/not-a-real-token-000/1", fresh(ref1, subject=0, text=0, realism=0)),
        (404, f"/r/{ann}/4000", fresh(ref1, subject=0, text=0, realism=0)),
        (422, f"/r/{ann}/one", fresh(ref1, subject=0, text=0, realism=0)),
        (422, f"/r/{ann}/1", fresh(ref1, subject=3, text=0, realism=0)),  # out of range
        (422, f"/r/{ann}/1", fresh(ref1, subject=0.25, text=0, realism=0)),
        (422, f"/r/{ann}/1", fresh(ref1, subject=0, text=0)),
    ]
    for status, path, body in cases:
        for send in ({"json": body}, {"data": body}):
            r = client.post(path, **send, headers=JSON)
            assert r.status_code == status, (path, body, r.text)
            assert _state(db) == before
    assert (
        client.post(f"/r/{ann}/1", content=b"{not json", headers={"content-type": "application/json"}).status_code
        == 422
    )
    assert client.post(f"/r/{ann}/1", json=[1, 2]).status_code == 422
    assert (
        client.get("/r/unknown-token-xyz").status_code == 404
        and "unknown rater link" in client.get("/r/unknown-token-xyz").text
    )
    assert _state(db) == before


def test_admin_pages_need_the_admin_token(live, tmp_path, eval_dir):
    db, made, client = live
    other = create_study(db, eval_dir, StudyConfig(name="other", raters=("zed",), raters_per_item=1, gold_fraction=0))
    assert client.get("/admin/pilot").status_code == 401
    assert client.get("/admin/pilot", params={"token": "wrong"}).status_code == 403
    assert client.get("/admin/pilot", params={"token": other.admin_token}).status_code == 403
    assert client.get("/admin/nope", params={"token": made.admin_token}).status_code == 403
    assert client.get(f"/r/{made.admin_token}").status_code == 404  # the admin token is no rater link
    page = client.get("/admin/pilot", params={"token": made.admin_token})
    assert page.status_code == 200 and made.rater_tokens["bob"] in page.text
    info = client.get("/admin/pilot", headers={**JSON, "X-Admin-Token": made.admin_token}).json()
    assert [r["name"] for r in info["raters"]] == ["ann", "bob"] and "token" not in info
    assert client.get("/admin/pilot/report", params={"token": made.admin_token}).status_code == 200  # no ratings yet
    ann = made.rater_tokens["ann"]
    client.post(f"/r/{ann}/0", json=fresh(page_view(db, ann, 0)["ref"], subject=1, text=1, realism=1))
    csv = client.get("/admin/pilot/export.csv", params={"token": made.admin_token})
    assert csv.status_code == 200 and len(csv.text.strip().splitlines()) == 2
    assert client.get("/admin/pilot/export.jsonl", headers={"X-Admin-Token": "bad"}).status_code == 403
    report = client.get("/admin/pilot/report", params={"token": made.admin_token})
    assert report.status_code == 200 and "Agreement" in report.text and "data:image/png;base64" in report.text


# Rater answers by system (subject, text, realism): gt is perfect, copy ignores the prompt, blur is degraded.
ANSWERS = {"gt": (1, 1, 1), "copy": (1, 0, 1), "blur": (0.5, 1, 0)}


def _rate_everything(db, careless: str | None = None, pairwise: bool = False):
    with db.read() as s:
        rows = [(r.name, r.token, a.position, a.ref, a.swap, t) for r in s.scalars(select(Rater))
                for a in s.scalars(select(Assignment).where(Assignment.rater_id == r.id))
                for t in [s.get(Task, a.task_id)]]  # fmt: skip
    for name, token, position, ref, swap, task in rows:
        if pairwise:  # prefers the earlier system in SYSTEMS, whichever side it is shown on
            best = min((task.system, task.system_b), key=lambda s: SYSTEMS.index(s) if s in SYSTEMS else -1)
            answer = {"choice": "A" if (best == task.system) != swap else "B"}
        elif task.expected:
            good = task.expected.get("subject") == 1.0
            answer = dict(zip(("subject", "text", "realism"), (1, 1, 1) if good != (name == careless) else (0, 0, 0)))
        else:
            answer = dict(zip(("subject", "text", "realism"), ANSWERS[task.system]))
        submit(db, token, position, Submission.parse(fresh(ref, **answer)))


def test_cli_create_rate_report(tmp_path, eval_dir, capsys):
    db_path = tmp_path / "cli.db"
    links = tmp_path / "links.csv"
    assert main(["create", "--from", str(eval_dir), "--db", str(db_path), "--name", "cli", "--raters", "3",
                 "--raters-per-item", "2", "--gold", "20%", "--links", str(links)]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "4 items x 3 systems -> 12 tasks" in out and out.count("rater r0") == 3
    admin = re.search(r"admin: \S+/admin/cli\?token=(\S+)", out).group(1)
    assert pd.read_csv(links)["rater"].tolist() == ["r01", "r02", "r03"]
    db = Database.open(db_path)
    with db.read() as s:
        from suti.human.db import Study

        assert s.scalar(select(Study.admin_token_hash)) != admin  # only a hash is stored
    _rate_everything(db, careless="r03")
    db.dispose()
    report_dir = tmp_path / "report"
    assert main(["report", "--db", str(db_path), "--out", str(report_dir), "--min-gold-accuracy", "0.75",
                 "--bootstrap", "200"]) == 0  # fmt: skip
    summary = json.loads((report_dir / "summary.json").read_text())
    assert summary["dropped_raters"] == ["r03"]
    by_system = {row["system"]: row for row in summary["by_system"]}
    assert by_system["gt"]["all_pass"] == 1.0 and by_system["copy"]["overall"] == 0.0
    assert by_system["blur"]["overall"] == pytest.approx(0.5**0.5) and by_system["blur"]["realism_hi"] == 0.0
    assert all(row["alpha"] == pytest.approx(1.0) for row in summary["agreement"])  # raters agree exactly
    frames = [pd.read_csv(report_dir / "ratings.csv"), pd.read_parquet(report_dir / "ratings.parquet"),
              pd.read_json(report_dir / "ratings.jsonl", lines=True)]  # fmt: skip
    assert len({len(f) for f in frames}) == 1 and len(frames[0]) == summary["ratings"]
    html = (report_dir / "report.html").read_text()
    assert html.count("data:image/png;base64") >= 4 * (3 + 3) and "r03" in html


def test_cli_pairwise_report_ranks_systems(tmp_path, eval_dir, capsys):
    db_path = tmp_path / "pw.db"
    assert main(["create", "--from", str(eval_dir), "--db", str(db_path), "--name", "pw", "--raters", "2",
                 "--raters-per-item", "2", "--pairwise", "--gold", "0"]) == 0  # fmt: skip
    assert capsys.readouterr().out.count("rater r0") == 2
    db = Database.open(db_path)
    _rate_everything(db, pairwise=True)
    db.dispose()
    assert main(["report", "--db", str(db_path), "--out", str(tmp_path / "r"), "--bootstrap", "100"]) == 0
    prefs = json.loads((tmp_path / "r" / "summary.json").read_text())["preferences"]
    assert [p["system"] for p in prefs] == list(SYSTEMS) and prefs[0]["win"] == 1.0
    assert prefs[0]["theta_lo"] > prefs[2]["theta_hi"]


def test_cli_errors_are_one_line(tmp_path, eval_dir, capsys):
    assert main(["create", "--from", str(tmp_path / "nowhere"), "--db", str(tmp_path / "a.db")]) == 2
    assert "items.jsonl is missing" in capsys.readouterr().err
    assert main(["create", "--from", str(eval_dir), "--db", str(tmp_path / "a.db"), "--systems", "gt,nope"]) == 2
    assert "system 'nope' has no output" in capsys.readouterr().err
    assert main(["create", "--from", str(eval_dir), "--db", str(tmp_path / "a.db"), "--gold", "lots"]) == 2
    assert main(["report", "--db", str(tmp_path / "none.db"), "--out", str(tmp_path / "r")]) == 2
    assert "does not exist" in capsys.readouterr().err
    Database.open(tmp_path / "empty.db").dispose()
    assert main(["serve", "--db", str(tmp_path / "empty.db")]) == 2
    assert "holds no study" in capsys.readouterr().err
