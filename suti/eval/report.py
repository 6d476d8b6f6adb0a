"""Aggregate graded items into results.json (means with bootstrap 95% CIs) and a scannable report.html.

Means are per system and per (system, skill); per system also per graded field ("fields": P(the
prompted value is shown) for shape, pattern, colour, scene, style, ...: which part of the prompt or of
the subject a system gets wrong) and per asked change ("asked": the field that reads each change a
prompt asks for, e.g. a rotation read by the pose, a hat by the accessory). A failed item (the system raised or returned a bad
image) scores 0 on subject, text, realism, overall and traits, and is counted under "failures"; the
paper-style cosines (dino, clip_i, clip_t) are means over the successful images only.
CIs: percentile bootstrap over SUBJECTS (1000 resamples, seeded), because images of one subject are
not independent; the interval says how the mean would move on another draw of held-out subjects.
"""

from __future__ import annotations

import html
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from suti.eval.graders import SCORE_KEYS
from suti.world.context import SKILLS

UNIT_KEYS = ("subject", "text", "realism", "overall", "traits")  # in [0, 1]; failures count as 0
N_BOOT = 1000


def bootstrap_mean(values: np.ndarray, clusters: np.ndarray, n_boot: int = N_BOOT, seed: int = 0) -> dict:
    """Mean with a 95% percentile CI from resampling clusters (subjects) with replacement."""
    ok = ~np.isnan(values)
    values, clusters = values[ok], clusters[ok]
    if len(values) == 0:
        return {"mean": None, "ci": [None, None], "n": 0}
    keys, inv = np.unique(clusters, return_inverse=True)
    sums, counts = np.bincount(inv, weights=values), np.bincount(inv).astype(np.float64)
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(keys), (n_boot, len(keys)))  # (B, n_subjects)
    boots = sums[pick].sum(1) / np.maximum(counts[pick].sum(1), 1)
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return {"mean": round(float(values.mean()), 4), "ci": [round(float(lo), 4), round(float(hi), 4)], "n": len(values)}


def system_names(rows: list[dict]) -> list[str]:
    names: dict[str, None] = {}
    for row in rows:
        for part in ("outputs", "failures"):
            names.update(dict.fromkeys(row.get(part, {})))
    return list(names)


def _values(rows: list[dict], name: str, key: str) -> np.ndarray:
    out = []
    for row in rows:
        if name in row.get("failures", {}):
            out.append(0.0 if key in UNIT_KEYS else np.nan)
        else:
            v = row.get("scores", {}).get(name, {}).get(key)
            out.append(np.nan if v is None else float(v))
    return np.asarray(out, np.float64)


def _summary(rows: list[dict], name: str) -> dict:
    clusters = np.asarray([r["subject"] for r in rows])
    return {k: bootstrap_mean(_values(rows, name, k), clusters) for k in SCORE_KEYS}


def _graded_summary(rows: list[dict], name: str, groups) -> dict:
    """{group: bootstrap mean of P(prompted value shown)}; `groups(row)` gives (group, graded field) pairs.

    Only items whose field was graded count (which fields are graded depends on the prompt, not on the
    system: the colour is not graded in colourless styles). A failed item shows nothing: it counts 0 on
    the fields graded for that item by any system."""
    graded: dict[str, list[tuple[str, float]]] = defaultdict(list)
    for r in rows:
        fields = r.get("fields", {})
        failed = name in r.get("failures", {})
        for group, field in groups(r):
            if failed and any(field in per_system for per_system in fields.values()):
                graded[group].append((r["subject"], 0.0))
            elif not failed and field in fields.get(name, {}):
                graded[group].append((r["subject"], float(fields[name][field])))
    return {g: bootstrap_mean(np.asarray([v for _, v in pairs]), np.asarray([s for s, _ in pairs]))
            for g, pairs in sorted(graded.items())}  # fmt: skip


def _graded_fields(row: dict) -> list[tuple[str, str]]:
    """(field, field) for every field any system was graded on for this item."""
    return [(f, f) for f in sorted({f for per_system in row.get("fields", {}).values() for f in per_system})]


def asked_changes(context: dict) -> list[tuple[str, str]]:
    """(change, graded field) for each way a prompt's context departs from the identity context.

    What the prompt asks for and the field that reads it: a scene, a style, a new colour ("recolor" →
    colour), a rotation or a mirror image (→ pose), a size, a position, and the accessory as
    "accessory:<kind>", or "accessory:none" when the prompt names none (then the field says none is drawn).
    """
    changes = [(name, field) for name, field, default in
               (("scene", "scene", "plain"), ("style", "style", "photo"), ("recolor", "color", ""),
                ("rotation", "pose", 0), ("flip", "pose", False), ("scale", "scale", "normal"),
                ("position", "position", "center")) if context.get(name, default) != default]  # fmt: skip
    return changes + [(f"accessory:{context.get('accessory') or 'none'}", "accessory")]


def asked_summary(rows: list[dict], name: str) -> dict:
    """{change: bootstrap mean of P(the asked field shows the prompted value)}, see `asked_changes`."""
    return _graded_summary(rows, name, lambda r: asked_changes(r.get("context", {})))


def rows_of(rows: list[dict], name: str) -> list[dict]:
    """The items system `name` ran (rendered or failed)."""
    return [r for r in rows if name in r.get("outputs", {}) or name in r.get("failures", {})]


def aggregate(rows: list[dict], runs: dict) -> dict:
    """{system: {run, failures, metrics..., skills: {skill: metrics}}}."""
    out = {}
    for name in system_names(rows):
        ran = rows_of(rows, name)
        by_skill = defaultdict(list)
        for r in ran:
            by_skill[r["skill"]].append(r)
        out[name] = {"run": runs.get(name, {}), "items": len(ran),
                     "failures": sum(name in r.get("failures", {}) for r in ran), **_summary(ran, name),
                     "skills": {s: _summary(by_skill[s], name) for s in SKILLS if by_skill[s]},
                     "fields": _graded_summary(ran, name, _graded_fields), "asked": asked_summary(ran, name)}  # fmt: skip
    return out


def per_image(rows: list[dict]) -> list[dict]:
    flat = []
    for r in rows:
        for name in system_names([r]):
            entry = {"item_id": r["item_id"], "system": name, "subject": r["subject"], "skill": r["skill"]}
            if name in r.get("failures", {}):
                entry["failure"] = r["failures"][name]
            else:
                entry.update({k: r["scores"].get(name, {}).get(k) for k in SCORE_KEYS})
            flat.append(entry)
    return flat


def write_report(out: Path, bench, rows: list[dict], runs: dict) -> dict:
    """Write results.json and report.html into EVAL_DIR; returns the results."""
    from dataclasses import asdict

    from suti.eval.runner import write_json_atomic

    results = {
        "benchmark": {"fingerprint": bench.config.fingerprint(), "config": asdict(bench.config),
                      "subjects": len(bench.subjects), "items": len(bench.items)},
        "protocol": {"ci": f"95% percentile bootstrap over subjects, {N_BOOT} resamples, seed 0",
                     "failures": "scored 0 on subject/text/realism/overall/traits; excluded from dino/clip_i/clip_t",
                     "overall": "sqrt(subject * text) per image"},
        "graders": _grader_provenance(),
        "systems": aggregate(rows, runs),
        "images": per_image(rows),
    }
    write_json_atomic(out / "results.json", results)
    (out / "report.html").write_text(render_html(results, rows))
    return results


def _grader_provenance() -> dict:
    from suti.eval.clip_world import WEIGHTS_DIR

    path = WEIGHTS_DIR / "manifest.json"
    return json.loads(path.read_text()).get("files", {}) if path.is_file() else {}


def _fmt(m: dict | None) -> str:
    if not m or m.get("mean") is None:
        return "–"
    return f"{m['mean']:.3f} <small>[{m['ci'][0]:.3f}, {m['ci'][1]:.3f}]</small>"


def _img(src: str, title: str = "") -> str:
    return f'<img src="{html.escape(src)}" title="{html.escape(title)}">'


def _keyed_rows(systems: dict, key: str) -> str:
    """HTML rows, one per entry of every system's `key` table (e.g. "fields"), one column per system."""
    entries = sorted({f for s in systems.values() for f in s.get(key, {})})
    return "".join(f"<tr><td>{html.escape(f)}</td>" + "".join(f"<td>{_fmt(s.get(key, {}).get(f))}</td>"
                                                            for s in systems.values()) + "</tr>" for f in entries)  # fmt: skip


def render_html(results: dict, rows: list[dict]) -> str:
    systems = results["systems"]
    names = list(systems)
    e = html.escape
    head = "".join(f"<th>{k}</th>" for k in ("system", "items", "failures", *SCORE_KEYS, "KID"))
    summary = "".join(
        f"<tr><td>{e(n)}</td><td>{s['items']}</td><td>{s['failures']}</td>"
        + "".join(f"<td>{_fmt(s[k])}</td>" for k in SCORE_KEYS)
        + f"<td>{s['run'].get('kid') if s['run'].get('kid') is None else round(s['run']['kid'], 4)}</td></tr>"
        for n, s in systems.items()
    )
    skill_rows = "".join(f"<tr><td>{sk}</td>" + "".join(f"<td>{_fmt(systems[n]['skills'].get(sk, {}).get('overall'))}</td>"
                                                         for n in names) + "</tr>" for sk in SKILLS)  # fmt: skip
    field_rows, asked_rows = (_keyed_rows(systems, key) for key in ("fields", "asked"))
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in rows:
        groups[(r["subject"], r["prompt"])].append(r)
    grid = []
    for (subject, prompt), rs in groups.items():
        demos = "".join(_img(d, c) for d, c in zip(rs[0]["demos"], rs[0]["demo_captions"]))
        cells = []
        for n in names:
            imgs = []
            for r in rs:
                if n in r.get("failures", {}):
                    imgs.append(f'<span class="fail" title="{e(r["failures"][n])}">failed</span>')
                elif n in r.get("outputs", {}):
                    sc = r["scores"].get(n, {})
                    tip = " ".join(f"{k}={sc[k]:.2f}" for k in UNIT_KEYS if isinstance(sc.get(k), float))
                    imgs.append(f'<figure>{_img(r["outputs"][n], tip)}<figcaption>{sc.get("overall", 0):.2f}'
                                "</figcaption></figure>")  # fmt: skip
            cells.append(f"<td>{''.join(imgs)}</td>")
        grid.append(f"<tr><td class=demos>{demos}</td><td class=prompt><b>{e(subject)}</b> · {e(rs[0]['skill'])}"
                    f"<br>{e(prompt)}</td>{''.join(cells)}</tr>")  # fmt: skip
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>world DreamBench report</title>
<style>body{{font:13px sans-serif;margin:16px}} table{{border-collapse:collapse}} td,th{{border:1px solid #ccc;
padding:3px 6px;vertical-align:top}} img{{width:64px;height:64px;image-rendering:pixelated;margin:1px}}
figure{{display:inline-block;margin:0 2px;text-align:center}} figcaption{{font-size:11px}}
.fail{{display:inline-block;width:64px;height:64px;background:#fdd;color:#900;text-align:center}}
.demos img{{width:48px;height:48px}} .prompt{{max-width:240px}} small{{color:#666}}</style></head><body>
<h1>World DreamBench</h1><p>{results['benchmark']['subjects']} subjects, {results['benchmark']['items']} items per
system. {e(results['protocol']['ci'])}. Failures: {e(results['protocol']['failures'])}.
Scores under each image: overall = sqrt(subject × text); hover for all scores.</p>
<h2>Summary</h2><table><tr>{head}</tr>{summary}</table>
<h2>Overall by skill</h2><table><tr><th>skill</th>{''.join(f'<th>{e(n)}</th>' for n in names)}</tr>{skill_rows}</table>
<h2>P(prompted value shown), by field</h2><table><tr><th>field</th>{''.join(f'<th>{e(n)}</th>' for n in names)}</tr>{field_rows}</table>
<h2>P(asked change shown), by what the prompt asks</h2><table><tr><th>change</th>{''.join(f'<th>{e(n)}</th>' for n in names)}</tr>{asked_rows}</table>
<h2>Images</h2><table><tr><th>demos</th><th>prompt</th>{''.join(f'<th>{e(n)}</th>' for n in names)}</tr>
{''.join(grid)}</table></body></html>
"""
