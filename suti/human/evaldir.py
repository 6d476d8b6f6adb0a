"""Read an evaluation output folder (EVAL_DIR, as written by `suti eval auto`) into checked records.

    EVAL_DIR/items.jsonl   {"item_id", "subject", "skill", "prompt", "seed", "demos": [...],
                            "demo_captions": [...], "outputs": {"<system>": "outputs/<system>/<id>.png"}}
    EVAL_DIR/results.json  optional here: a "world_seed" in it (or in benchmark.json) seeds ground-truth renders

Every path must be relative and stay inside EVAL_DIR. Errors name the line and the field.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from suti.errors import InputError


@dataclass(frozen=True)
class EvalItem:
    item_id: str
    subject: str
    skill: str
    prompt: str
    demos: tuple[Path, ...]  # absolute paths
    demo_captions: tuple[str, ...]
    outputs: dict[str, Path]  # system -> absolute path
    context: dict | None = None  # optional: the world Context the prompt describes (suti eval auto writes it)


@dataclass(frozen=True)
class EvalDir:
    root: Path
    items: tuple[EvalItem, ...]
    systems: tuple[str, ...]  # systems present for every item, in first-seen order
    world_seed: int | None


def _inside(root: Path, rel, where: str) -> Path:
    if not isinstance(rel, str) or not rel:
        raise InputError(f"{where}: expected a relative file path, got {rel!r}")
    if Path(rel).is_absolute():
        raise InputError(f"{where}: path {rel!r} must be relative to the EVAL_DIR")
    path = (root / rel).resolve()
    if not path.is_relative_to(root):
        raise InputError(f"{where}: path {rel!r} leaves the EVAL_DIR")
    if not path.is_file():
        raise InputError(f"{where}: file {rel!r} does not exist in {root}")
    return path


def _text(record: dict, key: str, where: str) -> str:
    value = record.get(key)
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"{where}: field {key!r} must be a non-empty string, got {value!r}")
    return value


def _item(root: Path, record, where: str) -> EvalItem:
    if not isinstance(record, dict):
        raise InputError(f"{where}: expected a JSON object, got {type(record).__name__}")
    demos = record.get("demos")
    if not isinstance(demos, list) or not demos:
        raise InputError(f"{where}: field 'demos' must be a non-empty list of image paths")
    captions = record.get("demo_captions", [""] * len(demos))
    if not isinstance(captions, list) or len(captions) != len(demos) or not all(isinstance(c, str) for c in captions):
        raise InputError(f"{where}: 'demo_captions' must be a list of {len(demos)} strings")
    outputs = record.get("outputs")
    if not isinstance(outputs, dict) or not outputs:
        raise InputError(f"{where}: field 'outputs' must map system names to image paths")
    return EvalItem(
        item_id=_text(record, "item_id", where),
        subject=str(record.get("subject", "")).strip() or "unknown",
        skill=str(record.get("skill", "")).strip() or "unknown",
        prompt=_text(record, "prompt", where),
        demos=tuple(_inside(root, d, f"{where} demos[{i}]") for i, d in enumerate(demos)),
        demo_captions=tuple(captions),
        outputs={str(s): _inside(root, p, f"{where} outputs[{s!r}]") for s, p in outputs.items()},
        context=record["context"] if isinstance(record.get("context"), dict) else None,
    )


def _world_seed(root: Path) -> int | None:
    """The world seed recorded by `suti eval auto` (results.json or benchmark.json), if any."""
    for name in ("results.json", "benchmark.json"):
        path = root / name
        if not path.is_file():
            continue
        try:
            doc = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise InputError(f"{path}: not valid JSON ({e})") from None
        bench = doc.get("benchmark", {}) if isinstance(doc, dict) else {}
        for where in (
            doc,
            doc.get("config") if isinstance(doc, dict) else None,
            bench.get("config") if isinstance(bench, dict) else None,
        ):
            value = where.get("world_seed") if isinstance(where, dict) else None
            if isinstance(value, int) and not isinstance(value, bool):
                return value
    return None


def read_eval_dir(root: str | Path) -> EvalDir:
    """Parse and check EVAL_DIR/items.jsonl (every referenced image must exist)."""
    root = Path(root).expanduser().resolve()
    listing = root / "items.jsonl"
    if not listing.is_file():
        raise InputError(f"{root} is not an evaluation folder: items.jsonl is missing")
    items: list[EvalItem] = []
    seen: set[str] = set()
    for n, line in enumerate(listing.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        where = f"items.jsonl line {n}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(f"{where}: not valid JSON ({e})") from None
        item = _item(root, record, where)
        if item.item_id in seen:
            raise InputError(f"{where}: item_id {item.item_id!r} appears twice")
        seen.add(item.item_id)
        items.append(item)
    if not items:
        raise InputError(f"{listing} holds no items")
    order = list(dict.fromkeys(s for it in items for s in it.outputs))
    common = tuple(s for s in order if all(s in it.outputs for it in items))
    return EvalDir(root, tuple(items), common, _world_seed(root))


def choose_systems(evaldir: EvalDir, wanted: list[str] | None) -> tuple[str, ...]:
    """The systems to rate: the requested ones (each must have an output for every item) or all common ones."""
    if not wanted:
        if not evaldir.systems:
            raise InputError("no system has an output for every item; name the systems with --systems")
        return evaldir.systems
    if len(set(wanted)) != len(wanted):
        raise InputError(f"--systems names a system twice: {', '.join(wanted)}")
    for system in wanted:
        missing = [it.item_id for it in evaldir.items if system not in it.outputs]
        if missing:
            raise InputError(f"system {system!r} has no output for item(s) {', '.join(missing[:5])}"
                             f"{' ...' if len(missing) > 5 else ''}")  # fmt: skip
    return tuple(wanted)
