"""Run systems through the benchmark and write EVAL_DIR (the contract read by `suti eval human`).

    EVAL_DIR/benchmark.json     the config, its fingerprint, the subjects and their demos
    EVAL_DIR/demos/<subject>/<i>.png
    EVAL_DIR/outputs/<system>/<item_id>.png
    EVAL_DIR/items.jsonl        one line per (subject, prompt, seed): demos, outputs, scores, failures
    EVAL_DIR/runs.json          per system: spec, images, failures, seconds, KID
    EVAL_DIR/results.json, report.html   (report.py)

A system that raises, or returns something that is not a finite square image, fails that item: the
error is recorded under "failures", the item gets no output for that system, and the run goes on.
A system with a `batch` method (the pipeline systems) gets up to `batch_size` items of one subject per
call; a batch call that fails is retried item by item, so each failure stays with its own item.
Running again into the same EVAL_DIR adds (or replaces) systems; other systems' results are kept.
`resume=True` keeps a system's output PNGs that already exist (e.g. from a run that was killed) and
generates only the missing ones. `shard=(k, n)` generates only the k-th of n contiguous blocks of
subjects (1-based) and grades nothing: run the shards into separate EVAL_DIRs (or processes), copy
their `outputs/<system>/` together, and grade the whole with `resume=True`.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from suti.errors import InputError
from suti.eval.benchmark import Benchmark, item_context
from suti.eval.images import GRADER_SIZE, check_output
from suti.eval.systems import NamedSystem
from suti.world.render import render

OWN_FILES = ("benchmark.json", "items.jsonl", "runs.json", "results.json", "report.html")
OWN_DIRS = ("demos", "outputs")


def write_json_atomic(path: Path, obj: Any, jsonl: bool = False) -> None:
    """JSON (or one JSON line per element) written atomically, keys in insertion order."""
    from retrieval.atomic import atomic_write

    text = "".join(json.dumps(row) + "\n" for row in obj) if jsonl else json.dumps(obj, indent=2) + "\n"
    atomic_write(path, lambda f: f.write(text.encode()))


def prepare_dir(out: Path, bench: Benchmark, overwrite: bool) -> None:
    """Create EVAL_DIR, or check that an existing one holds this very benchmark (or clear it)."""
    manifest = out / "benchmark.json"
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} exists and is not a directory")
    if manifest.is_file() and not overwrite:
        old = json.loads(manifest.read_text()).get("fingerprint")
        if old != bench.config.fingerprint():
            raise InputError(f"{out} holds another benchmark ({old}); use --overwrite or a new directory")
    elif out.is_dir() and any(out.iterdir()) and not overwrite and not manifest.is_file():
        raise InputError(f"{out} is not empty and is not an evaluation folder; use --overwrite or a new directory")
    if overwrite:
        for name in OWN_FILES:
            (out / name).unlink(missing_ok=True)
        for name in OWN_DIRS:
            shutil.rmtree(out / name, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    from dataclasses import asdict

    write_json_atomic(manifest, {"fingerprint": bench.config.fingerprint(), "config": asdict(bench.config),
                                 "subjects": [{"key": s.key, "subject_id": s.subject_id,
                                               "demo_captions": list(s.demo_captions)} for s in bench.subjects]})  # fmt: skip


def write_demos(out: Path, bench: Benchmark) -> dict[str, list]:
    """Save every subject's demos; returns {subject key: [PIL demos]}."""
    demos = {}
    for s in bench.subjects:
        imgs = bench.demo_images(s.key)
        folder = out / "demos" / s.key
        folder.mkdir(parents=True, exist_ok=True)
        for i, im in enumerate(imgs):
            im.save(folder / f"{i}.png")
        demos[s.key] = imgs
    return demos


def load_items(out: Path) -> dict[str, dict]:
    path = out / "items.jsonl"
    if not path.is_file():
        return {}
    return {row["item_id"]: row for row in map(json.loads, path.read_text().splitlines()) if row}


def base_row(bench: Benchmark, item) -> dict:
    n_demos = len(bench.by_key[item.subject].demo_contexts)
    return {"item_id": item.item_id, "subject": item.subject, "skill": item.skill, "prompt": item.prompt,
            "seed": item.seed, "demos": [f"demos/{item.subject}/{i}.png" for i in range(n_demos)],
            "demo_captions": list(bench.by_key[item.subject].demo_captions),
            "context": item.context.to_dict(), "outputs": {}, "scores": {}, "failures": {}}  # fmt: skip


def shard_subjects(bench: Benchmark, shard: tuple[int, int]) -> set[str]:
    """Keys of the k-th (1-based) of n contiguous, nearly equal blocks of the benchmark's subjects."""
    k, n = shard
    if not 1 <= k <= n or n > len(bench.subjects):
        raise InputError(f"shard {k}/{n}: need 1 <= k <= n <= {len(bench.subjects)} (the number of subjects)")
    blocks = np.array_split(np.arange(len(bench.subjects)), n)
    return {bench.subjects[i].key for i in blocks[k - 1]}


def _existing_output(path: Path) -> bool:
    """A PNG that opens and decodes (a file cut short by a killed run does not count)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
        return True
    except (OSError, ValueError):
        return False


def _generate(system: NamedSystem, chunk: list, demos: dict[str, list], bench: Benchmark) -> list:
    """One output or one exception per item of `chunk` (items of one subject). A system with `batch` gets
    them in one call; if that call fails, each item is tried alone so a failure stays with its item."""
    requests = [(list(demos[it.subject]), list(bench.by_key[it.subject].demo_captions), it.prompt, it.seed)
                for it in chunk]  # fmt: skip
    batch = getattr(system.fn, "batch", None)
    if batch is not None and len(chunk) > 1:
        try:
            images = list(batch(requests))
            if len(images) == len(chunk):
                return [_checked(system, it, im) for it, im in zip(chunk, images)]
        except Exception:  # noqa: BLE001  (retried item by item below, where the failure is recorded)
            pass
    results: list = []
    for it, req in zip(chunk, requests):
        try:
            results.append(_checked(system, it, system.fn(*req)))
        except Exception as e:  # noqa: BLE001  (a system under test may fail in any way; the run goes on)
            results.append(e)
    return results


def _checked(system: NamedSystem, item, image):
    try:
        return check_output(image, f"system {system.name!r} on {item.item_id}")
    except Exception as e:  # noqa: BLE001
        return e


def _subject_chunks(items: list, size: int) -> list[list]:
    """Consecutive runs of items of one subject, at most `size` long."""
    chunks: list[list] = []
    for it in items:
        if chunks and len(chunks[-1]) < size and chunks[-1][0].subject == it.subject:
            chunks[-1].append(it)
        else:
            chunks.append([it])
    return chunks


def run_system(system: NamedSystem, bench: Benchmark, demos: dict[str, list], out: Path,
               rows: dict[str, dict], progress: bool = True, resume: bool = False,
               subjects: set[str] | None = None, batch_size: int = 25) -> dict:  # fmt: skip
    """Generate the items (of `subjects`, default all) with one system; returns its run record. Outputs
    land in `rows`. With `resume`, an item whose output PNG exists is kept, not generated again. A system
    with a `batch` method gets up to `batch_size` items of one subject per call."""
    from tqdm import tqdm

    folder = out / "outputs" / system.name
    if not resume:
        shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    items = [it for it in bench.items if subjects is None or it.subject in subjects]
    todo, start = [], time.perf_counter()
    for item in items:
        row = rows[item.item_id]
        for part in ("outputs", "scores", "failures"):
            row[part].pop(system.name, None)
        rel = f"outputs/{system.name}/{item.item_id}.png"
        if resume and _existing_output(out / rel):
            row["outputs"][system.name] = rel
        else:
            todo.append(item)
    failures, reused = 0, len(items) - len(todo)
    bar = tqdm(total=len(items), initial=reused, desc=f"generate {system.name}", disable=not progress)
    for chunk in _subject_chunks(todo, batch_size):
        for item, result in zip(chunk, _generate(system, chunk, demos, bench)):
            row = rows[item.item_id]
            if isinstance(result, Exception):
                first_line = str(result).splitlines()[0] if str(result) else ""
                row["failures"][system.name] = f"{type(result).__name__}: {first_line}"[:300]
                failures += 1
                continue
            rel = f"outputs/{system.name}/{item.item_id}.png"
            result.save(out / rel)
            row["outputs"][system.name] = rel
        bar.update(len(chunk))
    bar.close()
    seconds = time.perf_counter() - start
    made = len(todo)
    return {"spec": system.spec, "images": len(items), "failures": failures, "reused": reused,
            "seconds": round(seconds, 2), "seconds_per_image": round(seconds / made, 4) if made else None,
            "batch_size": batch_size}  # fmt: skip


def score_system(name: str, bench: Benchmark, demos: dict[str, list], out: Path, rows: dict[str, dict],
                 graders, gt_embeddings: np.ndarray | None = None) -> dict:  # fmt: skip
    """Grade every output of one system (in place in `rows`); returns {'kid': ...}."""
    from PIL import Image

    from suti.eval.realism import kid

    done = [it for it in bench.items if name in rows[it.item_id]["outputs"]]
    scores, embs = [], []
    for a in range(0, len(done), 256):
        chunk = done[a : a + 256]
        images = [Image.open(out / rows[it.item_id]["outputs"][name]).convert("RGB") for it in chunk]
        scores += graders.score(images, [bench.subject(it.subject) for it in chunk], [it.prompt for it in chunk],
                                demos=[demos[it.subject] for it in chunk], contexts=[it.context for it in chunk])  # fmt: skip
        embs.append(graders.perceive(images).embedding)
    for it, s in zip(done, scores):
        rows[it.item_id]["scores"][name] = {k: (round(v, 5) if isinstance(v, float) else v) for k, v in s.items()
                                            if k != "fields"}  # fmt: skip
        rows[it.item_id].setdefault("fields", {})[name] = {k: round(v, 5) for k, v in s["fields"].items()}
    out_emb = np.concatenate(embs) if embs else np.zeros((0, 1))
    return {"kid": kid(out_emb, gt_embeddings) if gt_embeddings is not None and len(out_emb) > 1 else None}


def ground_truth_embeddings(bench: Benchmark, graders) -> np.ndarray:
    """Identity embeddings of ground-truth renders of every item (the KID reference set)."""
    imgs = [render(bench.subject(it.subject), item_context(it), GRADER_SIZE) for it in bench.items]
    return graders.perceive(imgs).embedding


def run_benchmark(bench: Benchmark, systems: list[NamedSystem], out_dir: str | Path, graders=None,
                  overwrite: bool = False, progress: bool = True, resume: bool = False,
                  shard: tuple[int, int] | None = None, batch_size: int = 25) -> dict:  # fmt: skip
    """Generate, grade, and write EVAL_DIR; returns results.json's content. `batch_size`: items of one
    subject per call of a system that batches (the pipeline systems, default 25); 1 = one image per call."""
    from suti.eval.report import write_report

    if len({s.name for s in systems}) != len(systems):
        raise InputError("two systems share a name; rename one with NAME=SPEC")
    if shard is not None and graders is not None:
        raise InputError("a shard only generates (no grading): grade the merged EVAL_DIR with resume")
    if resume and overwrite:
        raise InputError("resume keeps existing outputs and overwrite clears them: choose one")
    if batch_size < 1:
        raise InputError(f"batch size must be >= 1, got {batch_size}")
    subjects = shard_subjects(bench, shard) if shard is not None else None
    out = Path(out_dir)
    prepare_dir(out, bench, overwrite)
    demos = write_demos(out, bench)
    old = load_items(out)
    rows = {it.item_id: {**base_row(bench, it), **{k: old.get(it.item_id, {}).get(k, {}) for k in
                                                   ("outputs", "scores", "failures", "fields")}}
            for it in bench.items}  # fmt: skip
    runs_path = out / "runs.json"
    runs = json.loads(runs_path.read_text()) if runs_path.is_file() else {}
    gt_emb = ground_truth_embeddings(bench, graders) if graders is not None else None
    for system in systems:
        record = run_system(system, bench, demos, out, rows, progress, resume, subjects, batch_size)
        if graders is not None:
            record.update(score_system(system.name, bench, demos, out, rows, graders, gt_emb))
        runs[system.name] = record
        write_json_atomic(out / "items.jsonl", [rows[it.item_id] for it in bench.items], jsonl=True)
        write_json_atomic(runs_path, runs)
    return write_report(out, bench, [rows[it.item_id] for it in bench.items], runs)
