"""What a rater can see and do, as database operations: one page view, one image, one rating.

Every call starts from the rater's token and reaches only that rater's own assignments.
A rating is one transaction. Submitting the same `submission_id` with the same answer again is
idempotent (the original acknowledgement comes back, nothing is written); any other second answer to
a page, or a reused submission id, is refused with 409. Rejections are `Rejected(status, message)`:
404 unknown token or page, 400 a page reference that does not match the page (tampered or stale),
422 a malformed or out-of-range answer, 409 a double submission.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy import exists, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from suti.errors import InputError
from suti.human.db import Asset, Assignment, Database, Item, Rater, Rating, Study, Task

AXES = ("subject", "text", "realism")
SCALE = (0.0, 0.5, 1.0)
CHOICES = ("A", "B", "tie", "both_bad")
MAX_DURATION_MS = 24 * 3600 * 1000
_TOKEN = re.compile(r"[A-Za-z0-9_-]{8,64}")


class Rejected(InputError):
    """A request the server refuses; `status` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Submission:
    ref: str
    submission_id: str
    subject: float | None = None
    text: float | None = None
    realism: float | None = None
    choice: str | None = None
    duration_ms: int | None = None
    user_agent: str | None = None

    @classmethod
    def parse(cls, form: Mapping[str, str], user_agent: str | None = None) -> Submission:
        """Check raw form fields; anything malformed or out of range is a 422."""
        ref, sid = str(form.get("ref", "")), str(form.get("submission_id", ""))
        if not _TOKEN.fullmatch(ref):
            raise Rejected(422, "field 'ref' (the page reference) is missing or malformed")
        if not _TOKEN.fullmatch(sid):
            raise Rejected(422, "field 'submission_id' must be 8-64 letters, digits, '-' or '_'")
        values = {axis: _scale(form[axis], axis) if form.get(axis) not in (None, "") else None for axis in AXES}
        choice = form.get("choice") or None
        if choice is not None and choice not in CHOICES:
            raise Rejected(422, f"choice must be one of {', '.join(CHOICES)}, got {choice!r}")
        duration = form.get("duration_ms") or None
        if duration is not None:
            try:
                duration = int(float(duration))
            except ValueError:
                raise Rejected(422, f"duration_ms must be a number, got {duration!r}") from None
            if not 0 <= duration <= MAX_DURATION_MS:
                raise Rejected(422, f"duration_ms must be in 0..{MAX_DURATION_MS}, got {duration}")
        return cls(ref, sid, **values, choice=choice, duration_ms=duration, user_agent=(user_agent or "")[:300] or None)

    def answer(self) -> tuple:
        return (self.subject, self.text, self.realism, self.choice)


def _scale(raw, axis: str) -> float:
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise Rejected(422, f"{axis} must be one of 0, 0.5, 1, got {raw!r}") from None
    if math.isnan(value) or value not in SCALE:
        raise Rejected(422, f"{axis} must be one of 0, 0.5, 1, got {raw!r}")
    return value


@dataclass(frozen=True)
class Ack:
    rating_id: int
    position: int
    replay: bool  # True: this submission was already stored; nothing new was written
    done: int
    total: int
    next_position: int | None


def rater_by_token(s: Session, token: str) -> Rater:
    rater = s.scalar(select(Rater).where(Rater.token == token)) if _TOKEN.fullmatch(token or "") else None
    if rater is None:
        raise Rejected(404, "unknown rater link")
    return rater


def assignment_at(s: Session, rater: Rater, position: int) -> Assignment:
    asg = s.scalar(select(Assignment).where(Assignment.rater_id == rater.id, Assignment.position == position))
    if asg is None:
        raise Rejected(404, f"page {position} is not in this rater's queue")
    return asg


def progress(s: Session, rater: Rater) -> tuple[int, int, int | None]:
    """(rated, total, first unrated position or None)."""
    total = s.scalar(select(func.count()).select_from(Assignment).where(Assignment.rater_id == rater.id))
    done = s.scalar(select(func.count()).select_from(Rating).where(Rating.rater_id == rater.id))
    rated = exists().where(Rating.assignment_id == Assignment.id)
    nxt = s.scalar(select(func.min(Assignment.position)).where(Assignment.rater_id == rater.id, ~rated))
    return done, total, nxt


def page_view(db: Database, token: str, position: int) -> dict:
    """Everything a page shows, without system names: prompt, image slots, progress, rated or not."""
    with db.read() as s:
        rater = rater_by_token(s, token)
        asg = assignment_at(s, rater, position)
        task = s.get(Task, asg.task_id)
        item = s.get(Item, task.item_id)
        study = s.get(Study, rater.study_id)
        done, total, nxt = progress(s, rater)
        rated = s.scalar(select(Rating.id).where(Rating.assignment_id == asg.id)) is not None
        slots = ["out"] if study.mode == "absolute" else ["a", "b"]
        return {"study": study.name, "mode": study.mode, "rater": rater.name, "position": position, "ref": asg.ref,
                "prompt": item.prompt, "demos": [f"demo{i}" for i in range(len(item.demos))], "outputs": slots,
                "rated": rated, "done": done, "total": total, "next_position": nxt}  # fmt: skip


def image_png(db: Database, token: str, position: int, slot: str) -> bytes:
    """PNG bytes of one image slot of one of the rater's own pages."""
    with db.read() as s:
        rater = rater_by_token(s, token)
        asg = assignment_at(s, rater, position)
        task = s.get(Task, asg.task_id)
        if slot.startswith("demo") and slot[4:].isdigit():
            demos = s.get(Item, task.item_id).demos
            sha = demos[int(slot[4:])] if int(slot[4:]) < len(demos) else None
        elif slot == "out" and task.system_b is None:
            sha = task.asset
        elif slot in ("a", "b") and task.system_b is not None:
            sha = task.asset if (slot == "a") != asg.swap else task.asset_b
        else:
            sha = None
        if sha is None:
            raise Rejected(404, f"page {position} has no image {slot!r}")
        return s.get(Asset, sha).png


def _check_answer(mode: str, sub: Submission) -> None:
    if mode == "absolute":
        missing = [axis for axis in AXES if getattr(sub, axis) is None]
        if missing or sub.choice is not None:
            raise Rejected(422, f"an absolute rating needs {', '.join(AXES)} and no choice (missing: "
                                f"{', '.join(missing) or 'none'})")  # fmt: skip
    elif sub.choice is None or any(getattr(sub, axis) is not None for axis in AXES):
        raise Rejected(422, f"a pairwise rating needs one choice of {', '.join(CHOICES)} and no axis values")


def _preferred(task: Task, asg: Assignment, choice: str | None) -> str | None:
    if choice in ("A", "B"):
        return task.system if (choice == "A") != asg.swap else task.system_b
    return choice


def _answer_of(r: Rating) -> tuple:
    return (r.subject, r.text, r.realism, r.choice)


def _replay(s: Session, rater: Rater, asg: Assignment, position: int, sub: Submission) -> Ack | None:
    """The stored acknowledgement if this exact submission is already in; 409 for any other clash.

    One statement reads both keys, so under READ COMMITTED (PostgreSQL) it sees one snapshot: a
    concurrent twin that commits in between cannot look like a different answer to the page.
    """
    clash = or_(Rating.submission_id == sub.submission_id, Rating.assignment_id == asg.id)
    rows = list(s.scalars(select(Rating).where(clash)))
    prior = next((r for r in rows if r.submission_id == sub.submission_id), None)
    if prior is not None:
        if prior.assignment_id != asg.id or _answer_of(prior) != sub.answer():
            raise Rejected(409, "this submission id was already used for a different answer")
        done, total, nxt = progress(s, rater)
        return Ack(prior.id, position, True, done, total, nxt)
    if rows:
        raise Rejected(409, f"page {position} is already rated")
    return None


def _submit(s: Session, token: str, position: int, sub: Submission) -> Ack:
    rater = rater_by_token(s, token)
    asg = assignment_at(s, rater, position)
    if sub.ref != asg.ref:
        raise Rejected(400, f"the submitted page reference does not match page {position}")
    task = s.get(Task, asg.task_id)
    _check_answer(s.get(Study, rater.study_id).mode, sub)
    replay = _replay(s, rater, asg, position, sub)
    if replay is not None:
        return replay
    rating = Rating(assignment_id=asg.id, rater_id=rater.id, submission_id=sub.submission_id, subject=sub.subject,
                    text=sub.text, realism=sub.realism, choice=sub.choice, preferred=_preferred(task, asg, sub.choice),
                    duration_ms=sub.duration_ms, user_agent=sub.user_agent)  # fmt: skip
    s.add(rating)
    s.flush()
    done, total, nxt = progress(s, rater)
    return Ack(rating.id, position, False, done, total, nxt)


def submit(db: Database, token: str, position: int, sub: Submission) -> Ack:
    """Store one rating in one transaction (see the module docstring for what is refused)."""
    try:
        with db.write() as s:
            return _submit(s, token, position, sub)
    except IntegrityError:
        # A concurrent request with the same key committed first (PostgreSQL; SQLite writers are
        # serialised): answer from what is stored now.
        with db.read() as s:
            rater = rater_by_token(s, token)
            asg = assignment_at(s, rater, position)
            ack = _replay(s, rater, asg, position, sub)
            if ack is None:  # the unique key that failed was not ours: should not happen
                raise Rejected(409, "the rating clashed with a concurrent write; reload the page") from None
            return ack
