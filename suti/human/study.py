"""Create a study from an EVAL_DIR: items, tasks, gold checks, raters and their blinded queues.

    created = create_study(db, "eval_out/", StudyConfig(name="pilot", raters=("ann", "bob", "cy")))
    created.admin_token, created.rater_tokens        # shown once; only a hash of the admin token is kept

Absolute mode: one task per (item, system), rated on subject / text / photorealism.
Pairwise mode: one task per (item, pair of systems); each assignment randomly shows either side as "A".
Each real item goes to `raters_per_item` raters (all of its tasks to the same raters, so one rater
sees every system on an item), balanced by load; every rater also gets every gold task.
Each rater's queue is shuffled with their own random order; system names never reach a rater.
Everything is written in one transaction: a study exists completely or not at all.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import math
import re
import secrets
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from sqlalchemy import select
from sqlalchemy.orm import Session

from suti.errors import ConfigError, InputError
from suti.human.db import Asset, Assignment, Database, Item, Rater, Study, Task
from suti.human.evaldir import EvalDir, EvalItem, choose_systems, read_eval_dir
from suti.human.gold import EXPECTED, count_gold, make_gold

MODES = ("absolute", "pairwise")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


@dataclass(frozen=True)
class StudyConfig:
    name: str
    mode: str = "absolute"
    systems: tuple[str, ...] = ()  # empty: every system with an output for every item
    raters: tuple[str, ...] = ("r01", "r02", "r03")
    raters_per_item: int = 3
    gold_fraction: float = 0.1
    gold_good: str = "truth"  # "truth" (world render, else a demo photo) or "photo"
    world_seed: int | None = None  # None: results.json's seed, else 0
    seed: int = 0

    def check(self) -> StudyConfig:
        if not isinstance(self.name, str) or not _NAME.fullmatch(self.name):
            raise ConfigError(f"study name must be 1-100 letters, digits, '_', '.', '-', got {self.name!r}")
        if self.mode not in MODES:
            raise ConfigError(f"unknown study mode {self.mode!r}; choose from {', '.join(MODES)}")
        if not self.raters or len(set(self.raters)) != len(self.raters):
            raise ConfigError("give at least one rater, each name once")
        for rater in self.raters:
            if not isinstance(rater, str) or not _NAME.fullmatch(rater):
                raise ConfigError(f"rater name must be letters, digits, '_', '.', '-', got {rater!r}")
        if isinstance(self.raters_per_item, bool) or not 1 <= self.raters_per_item <= len(self.raters):
            raise ConfigError(f"raters per item must be in 1..{len(self.raters)} (the number of raters), "
                              f"got {self.raters_per_item}")  # fmt: skip
        if not 0.0 <= self.gold_fraction < 1.0:
            raise ConfigError(f"gold fraction must be in [0, 1), got {self.gold_fraction}")
        return self


@dataclass
class CreatedStudy:
    name: str
    admin_token: str
    rater_tokens: dict[str, str]
    counts: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def parse_fraction(text: str) -> float:
    """'10%' or '0.1' -> 0.1."""
    t = text.strip()
    try:
        value = float(t[:-1]) / 100.0 if t.endswith("%") else float(t)
    except ValueError:
        raise InputError(f"gold share must look like 10% or 0.1, got {text!r}") from None
    if not 0.0 <= value < 1.0:
        raise InputError(f"gold share must be in [0%, 100%), got {text!r}")
    return value


class _Assets:
    """Re-encodes images as PNG (dropping metadata) and stores each distinct one once."""

    def __init__(self, session: Session):
        self.session = session
        self.by_path: dict[Path, str] = {}
        self.seen: set[str] = set(session.scalars(select(Asset.sha256)))

    def image(self, image: Image.Image) -> str:
        buf = io.BytesIO()
        image.convert("RGB").save(buf, format="PNG")
        data = buf.getvalue()
        sha = hashlib.sha256(data).hexdigest()
        if sha not in self.seen:
            self.session.add(Asset(sha256=sha, png=data, width=image.width, height=image.height))
            self.seen.add(sha)
        return sha

    def path(self, path: Path) -> str:
        if path not in self.by_path:
            try:
                with Image.open(path) as im:
                    self.by_path[path] = self.image(im)
            except OSError as e:
                raise InputError(f"cannot read image {path}: {e}") from None
        return self.by_path[path]


def _balanced(n_items: int, raters: int, k: int, rng: np.random.Generator) -> list[list[int]]:
    """For each item, k distinct raters; each goes to the least-loaded raters (random tie-break)."""
    load = np.zeros(raters)
    chosen = []
    for _ in range(n_items):
        order = np.lexsort((rng.random(raters), load))  # by load, then random
        picks = sorted(int(r) for r in order[:k])
        load[picks] += 1
        chosen.append(picks)
    return chosen


def _item_row(study: Study, key: str, item: EvalItem, assets: _Assets, gold_kind: str | None = None) -> Item:
    return Item(study_id=study.id, key=key, subject=item.subject, skill=item.skill, prompt=item.prompt,
                demos=[assets.path(p) for p in item.demos], gold_kind=gold_kind)  # fmt: skip


def _real_tasks(s: Session, study: Study, evaldir: EvalDir, systems, assets: _Assets) -> list[list[Task]]:
    from tqdm.auto import tqdm

    per_item = []
    for item in tqdm(evaldir.items, desc="storing images", unit="item", leave=False):
        row = _item_row(study, item.item_id, item, assets)
        s.add(row)
        s.flush()
        if study.mode == "absolute":
            tasks = [Task(study_id=study.id, item_id=row.id, system=sys, asset=assets.path(item.outputs[sys]))
                     for sys in systems]  # fmt: skip
        else:
            tasks = [Task(study_id=study.id, item_id=row.id, system=a, asset=assets.path(item.outputs[a]),
                          system_b=b, asset_b=assets.path(item.outputs[b]))
                     for a, b in itertools.combinations(systems, 2)]  # fmt: skip
        s.add_all(tasks)
        per_item.append(tasks)
    return per_item


def _gold_tasks(s: Session, study: Study, evaldir: EvalDir, pages: int, config: StudyConfig, world_seed: int,
                assets: _Assets, rng: np.random.Generator) -> list[Task]:  # fmt: skip
    first = evaldir.systems[0] if evaldir.systems else None

    def output_size(item: EvalItem) -> tuple[int, int]:
        with Image.open(item.outputs.get(first) or next(iter(item.outputs.values()))) as im:
            return im.size

    n_cases = math.ceil(pages / 2) if study.mode == "absolute" else pages
    cases = make_gold(evaldir.items, n_cases, config.gold_good, world_seed, rng, output_size)
    tasks = []
    for i, case in enumerate(cases):
        row = _item_row(study, f"gold-{i:03d}", case.source, assets, gold_kind=f"{case.good_kind}/{case.bad_kind}")
        s.add(row)
        s.flush()
        good, bad = f"gold:{case.good_kind}", f"gold:{case.bad_kind}"
        if study.mode == "absolute":
            tasks += [Task(study_id=study.id, item_id=row.id, system=good, asset=assets.image(case.good),
                           expected=EXPECTED[case.good_kind]),
                      Task(study_id=study.id, item_id=row.id, system=bad, asset=assets.image(case.bad),
                           expected=EXPECTED[case.bad_kind])]  # fmt: skip
        else:
            tasks.append(Task(study_id=study.id, item_id=row.id, system=good, asset=assets.image(case.good),
                              system_b=bad, asset_b=assets.image(case.bad), expected={"preferred": good}))  # fmt: skip
    s.add_all(tasks)
    return tasks


def create_study(db: Database, eval_dir: str | Path | EvalDir, config: StudyConfig) -> CreatedStudy:
    """Build the whole study in one transaction and return its tokens (shown to the caller once)."""
    config = config.check()
    evaldir = eval_dir if isinstance(eval_dir, EvalDir) else read_eval_dir(eval_dir)
    systems = choose_systems(evaldir, list(config.systems))
    if config.mode == "pairwise" and len(systems) < 2:
        raise ConfigError(f"pairwise mode needs at least two systems, got {', '.join(systems)}")
    world_seed = config.world_seed if config.world_seed is not None else (evaldir.world_seed or 0)
    rng = np.random.default_rng(config.seed)
    admin_token = secrets.token_urlsafe(24)
    with db.write() as s:
        if s.scalar(select(Study.id).where(Study.name == config.name)) is not None:
            raise InputError(f"a study named {config.name!r} already exists in this database")
        source = {"eval_dir": str(evaldir.root), "world_seed": world_seed}
        study = Study(name=config.name, mode=config.mode, systems=list(systems),
                      config={**asdict(config), **source}, admin_token_hash=hash_token(admin_token))  # fmt: skip
        s.add(study)
        s.flush()
        assets = _Assets(s)
        per_item = _real_tasks(s, study, evaldir, systems, assets)
        real_per_rater = sum(len(t) for t in per_item) * config.raters_per_item / len(config.raters)
        gold = _gold_tasks(s, study, evaldir, count_gold(config.gold_fraction, real_per_rater), config,
                           world_seed, assets, rng)  # fmt: skip
        raters = [Rater(study_id=study.id, name=name, token=secrets.token_urlsafe(18)) for name in config.raters]
        s.add_all(raters)
        s.flush()
        queues: list[list[Task]] = [list(gold) for _ in raters]
        for tasks, picks in zip(per_item, _balanced(len(per_item), len(raters), config.raters_per_item, rng)):
            for r in picks:
                queues[r].extend(tasks)
        n_assignments = 0
        for rater, queue in zip(raters, queues):
            for position, t in enumerate(rng.permutation(len(queue))):
                s.add(Assignment(rater_id=rater.id, task_id=queue[int(t)].id, position=position,
                                 ref=secrets.token_urlsafe(12), swap=bool(rng.random() < 0.5)))  # fmt: skip
            n_assignments += len(queue)
        notes = []
        kinds = sorted({t.system for t in gold})
        if config.gold_good == "truth" and gold and "gold:truth" not in kinds:
            notes.append(f"no item is a world item for world seed {world_seed}: gold known-good images are demo photos")
        counts = {"items": len(per_item), "systems": len(systems), "tasks": sum(len(t) for t in per_item),
                  "gold_tasks": len(gold), "raters": len(raters), "assignments": n_assignments}  # fmt: skip
        return CreatedStudy(config.name, admin_token, {r.name: r.token for r in raters}, counts, notes)
