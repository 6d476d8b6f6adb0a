"""The study report: ratings table, statistics, a self-contained HTML page with image grids, exports.

report = build_report(db, "pilot", StatsConfig(min_gold_accuracy=0.75))
write_report(report, "report/")   # report.html, ratings.csv / .jsonl / .parquet, summary.json
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from html import escape
from pathlib import Path

import pandas as pd
from sqlalchemy import select

from suti.human.db import Asset, Assignment, Database, Item, Rater, Rating, Task, find_study
from suti.human.pages import document
from suti.human.stats import METRICS, StatsConfig, agreement, drop_failing, gold_accuracy, preferences, system_means

COLUMNS = ["rating_id", "rater", "item", "subject_id", "skill", "prompt", "task", "system", "system_b", "is_gold",
           "gold_kind", "expected", "subject", "text", "realism", "choice", "preferred", "created_at", "duration_ms",
           "submission_id"]  # fmt: skip


def load_ratings(db: Database, study_name: str | None) -> pd.DataFrame:
    """One row per rating of the study (gold rows included, `is_gold` marks them)."""
    with db.read() as s:
        study = find_study(s, study_name)
        rows = s.execute(
            select(Rating.id, Rater.name, Item.key, Item.subject, Item.skill, Item.prompt, Task.id, Task.system,
                   Task.system_b, Item.gold_kind, Task.expected, Rating.subject, Rating.text, Rating.realism,
                   Rating.choice, Rating.preferred, Rating.created_at, Rating.duration_ms, Rating.submission_id)
            .join(Assignment, Rating.assignment_id == Assignment.id).join(Task, Assignment.task_id == Task.id)
            .join(Item, Task.item_id == Item.id).join(Rater, Rating.rater_id == Rater.id)
            .where(Rater.study_id == study.id).order_by(Rating.id)
        ).all()  # fmt: skip
    frame = pd.DataFrame([(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9] is not None, r[9], *r[10:])
                          for r in rows], columns=COLUMNS)  # fmt: skip
    frame["is_gold"] = frame["is_gold"].astype(bool)
    for axis in ("subject", "text", "realism"):
        frame[axis] = frame[axis].astype(float)
    return frame


def to_jsonl(frame: pd.DataFrame) -> str:
    return frame.to_json(orient="records", lines=True, date_format="iso")


@dataclass
class Report:
    study: dict
    ratings: pd.DataFrame  # every rating, gold included
    gold: pd.DataFrame
    dropped: list[str]
    by_system: pd.DataFrame
    by_skill: pd.DataFrame
    agreement: pd.DataFrame
    preferences: pd.DataFrame
    config: StatsConfig
    html: str = field(default="", repr=False)

    def summary(self) -> dict:
        tables = {k: json.loads(getattr(self, k).to_json(orient="records"))
                  for k in ("by_system", "by_skill", "agreement", "preferences", "gold")}  # fmt: skip
        return {"study": self.study, "ratings": len(self.ratings), "dropped_raters": self.dropped,
                "config": self.config.__dict__, **tables}  # fmt: skip


def build_report(
    db: Database, study_name: str | None, config: StatsConfig | None = None, grid_items: int = 12
) -> Report:
    config = (config or StatsConfig()).check()
    ratings = load_ratings(db, study_name)
    with db.read() as s:
        study = find_study(s, study_name)
        info = {"name": study.name, "mode": study.mode, "systems": list(study.systems)}
    gold = gold_accuracy(ratings, config.gold_tolerance)
    used, dropped = ratings, []
    if config.min_gold_accuracy is not None:
        used, dropped = drop_failing(ratings, gold, config.min_gold_accuracy)
    empty = used[~used["is_gold"]].empty
    if info["mode"] == "absolute":
        by_system = pd.DataFrame() if empty else system_means(used, ("system",), config)
        by_skill = pd.DataFrame() if empty else system_means(used, ("system", "skill"), config)
        prefs = pd.DataFrame()
    else:
        by_system = by_skill = pd.DataFrame()
        prefs = preferences(used, info["systems"], config)
    report = Report(info, ratings, gold, dropped, by_system, by_skill, agreement(used, info["mode"]), prefs, config)
    report.html = render_html(db, report, grid_items)
    return report


def write_report(report: Report, out: str | Path) -> dict[str, Path]:
    """Writes report.html, ratings.{csv,jsonl,parquet} and summary.json into `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    flat = report.ratings.assign(expected=report.ratings["expected"].map(lambda e: json.dumps(e) if e else None))
    paths = {name: out / name for name in ("report.html", "ratings.csv", "ratings.jsonl", "ratings.parquet",
                                           "summary.json")}  # fmt: skip
    paths["report.html"].write_text(report.html)
    flat.to_csv(paths["ratings.csv"], index=False)
    paths["ratings.jsonl"].write_text(to_jsonl(flat))
    flat.to_parquet(paths["ratings.parquet"], index=False)
    paths["summary.json"].write_text(json.dumps(report.summary(), indent=2, default=str))
    return paths


def _ci_table(frame: pd.DataFrame, keys: list[str], metrics) -> str:
    if frame.empty:
        return "<p class='muted'>no ratings yet</p>"
    head = "".join(f"<th>{escape(k)}</th>" for k in keys + ["items"] + list(metrics))
    body = ""
    for row in frame.to_dict("records"):
        cells = [escape(str(row[k])) for k in keys] + [str(row["items"])]
        cells += [
            f"{row[m]:.3f} <span class='muted'>[{row[m + '_lo']:.3f}, {row[m + '_hi']:.3f}]</span>" for m in metrics
        ]
        body += "<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"
    return f"<table><tr>{head}</tr>{body}</table>"


def _plain_table(frame: pd.DataFrame) -> str:
    if frame.empty:
        return "<p class='muted'>none</p>"
    fmt = {c: (lambda v: f"{v:.3f}") for c in frame.columns if frame[c].dtype.kind == "f"}
    return frame.to_html(index=False, escape=True, formatters=fmt, na_rep="n/a", border=0)


def _grid(db: Database, report: Report, limit: int) -> str:
    """Up to `limit` real items: demos, prompt, each system's output with its mean ratings on that item."""
    with db.read() as s:
        study = find_study(s, report.study["name"])
        items = list(s.scalars(select(Item).where(Item.study_id == study.id, Item.gold_kind.is_(None))
                               .order_by(Item.key).limit(limit)))  # fmt: skip
        shown: dict[tuple[str, str], str] = {}
        for t in s.scalars(select(Task).where(Task.item_id.in_([i.id for i in items]))):
            key = next(i.key for i in items if i.id == t.item_id)
            shown[(key, t.system)] = t.asset
            if t.system_b is not None:
                shown[(key, t.system_b)] = t.asset_b
        needed = set(shown.values()) | {d for i in items for d in i.demos}
        png = {a.sha256: a.png for a in s.scalars(select(Asset).where(Asset.sha256.in_(needed)))}
    img = lambda sha, w: f'<img width="{w}" src="data:image/png;base64,{base64.b64encode(png[sha]).decode()}">'
    real = report.ratings[~report.ratings["is_gold"]]
    rows = ""
    for item in items:
        cells = ""
        for system in report.study["systems"]:
            mine = real[(real["item"] == item.key) & (real["system"] == system)]
            if report.study["mode"] == "absolute":
                note = (
                    " ".join(f"{a[0]}={mine[a].mean():.2f}" for a in ("subject", "text", "realism"))
                    if len(mine)
                    else "unrated"
                )
            else:
                both = real[(real["item"] == item.key) & ((real["system"] == system) | (real["system_b"] == system))]
                note = f"won {(both['preferred'] == system).sum()}/{len(both)}"
            cells += f"<td>{img(shown[(item.key, system)], 128)}<br><small>{escape(note)}</small></td>"
        demos = "".join(img(d, 56) for d in item.demos)
        rows += f"<tr><td>{demos}<br><small>{escape(item.prompt)}</small></td>{cells}</tr>"
    head = "".join(f"<th>{escape(s)}</th>" for s in report.study["systems"])
    return f"<table><tr><th>demos and prompt</th>{head}</tr>{rows}</table>"


def render_html(db: Database, report: Report, grid_items: int = 12) -> str:
    st, cfg = report.study, report.config
    n_real = int((~report.ratings["is_gold"]).sum())
    level = f"{round(cfg.level * 100)}%"
    intro = (f"<p>Mode: {escape(st['mode'])}. Systems: {escape(', '.join(st['systems']))}. Ratings: {n_real} on real "
             f"items, {len(report.ratings) - n_real} on gold items, from {report.ratings['rater'].nunique()} raters."
             f" Dropped raters (gold accuracy below {cfg.min_gold_accuracy}): "
             f"{escape(', '.join(report.dropped) or 'none')}.</p>")  # fmt: skip
    parts = [f"<h1>Human evaluation: {escape(st['name'])}</h1>", intro]
    if st["mode"] == "absolute":
        parts += [f"<h2>Per system (mean, {level} bootstrap CI over items)</h2>",
                  _ci_table(report.by_system, ["system"], METRICS),
                  "<h2>Per system and skill</h2>", _ci_table(report.by_skill, ["system", "skill"], METRICS)]  # fmt: skip
    else:
        parts += [f"<h2>Bradley-Terry strengths (theta, {level} bootstrap CI over items)</h2>",
                  _plain_table(report.preferences)]  # fmt: skip
    method = (f"<p class='muted'>overall = sqrt(subject x text) per rating; all_pass = all three axes rated 1. "
              f"Scores average each item's ratings first; CIs resample items ({cfg.n_boot} resamples, seed "
              f"{cfg.seed}). Gold pass: every checked axis within {cfg.gold_tolerance} of the known answer.</p>")  # fmt: skip
    parts += ["<h2>Agreement</h2>", _plain_table(report.agreement), "<h2>Gold accuracy per rater</h2>",
              _plain_table(report.gold), "<h2>Examples</h2>", _grid(db, report, grid_items), method]  # fmt: skip
    return document(f"Human evaluation: {st['name']}", "".join(parts))
