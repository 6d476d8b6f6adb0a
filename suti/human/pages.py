"""Server-rendered HTML for raters and admins (plain strings, every value escaped; light JS only).

The rating form works without JavaScript (radio buttons, `required`); the script adds keyboard
shortcuts, the time spent on the page, and a guard against double submission.
"""

from __future__ import annotations

import json
import uuid
from html import escape

STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5rem auto;max-width:60rem;padding:0 1rem;color:#222}
.demos img{width:128px;height:128px;margin:0 .4rem .4rem 0;border:1px solid #ccc}
.outputs{display:flex;gap:1.5rem}.outputs figure{margin:0}.outputs img{width:288px;height:288px;border:2px solid #444}
.prompt{font-size:1.25rem;background:#f3f3f3;padding:.6rem .8rem;border-radius:.3rem}
fieldset{border:1px solid #ccc;margin:.6rem 0;padding:.4rem .8rem}label{margin-right:1.2rem;cursor:pointer}
kbd{border:1px solid #aaa;border-radius:3px;padding:0 .3rem;font-size:.8rem;background:#fafafa}
progress{width:100%}button{font-size:1.1rem;padding:.4rem 1.4rem}table{border-collapse:collapse}
td,th{border:1px solid #ccc;padding:.2rem .5rem;text-align:left}.muted{color:#777}
"""

AXIS_QUESTIONS = (
    ("subject", "Subject fidelity", "Is the subject in the image the same one as in the reference photos?",
     (("0", "no", "q"), ("0.5", "partly", "w"), ("1", "yes", "e"))),
    ("text", "Text fidelity", "Does the image show what the prompt asks for?",
     (("0", "no", "a"), ("0.5", "partly", "s"), ("1", "yes", "d"))),
    ("realism", "Photorealism", "Does the image look like a real, artifact-free picture?",
     (("0", "no", "z"), ("0.5", "partly", "x"), ("1", "yes", "c"))),
)  # fmt: skip
CHOICE_OPTIONS = (("A", "A is better", "1"), ("B", "B is better", "2"), ("tie", "Tie: equally good", "3"),
                  ("both_bad", "Both bad", "4"))  # fmt: skip

SCRIPT = """
const form = document.getElementById("rate"), t0 = performance.now();
const keys = %s;
document.addEventListener("keydown", (e) => {
  if (e.ctrlKey || e.metaKey || e.altKey) return;
  if (e.key === "Enter") { e.preventDefault(); form.requestSubmit(); return; }
  const hit = keys[e.key.toLowerCase()];
  if (!hit) return;
  const box = form.querySelector(`input[name="${hit[0]}"][value="${hit[1]}"]`);
  if (box) { box.checked = true; e.preventDefault(); }
});
form.addEventListener("submit", (e) => {
  if (form.dataset.sent) { e.preventDefault(); return; }
  form.dataset.sent = "1";
  form.elements.duration_ms.value = Math.round(performance.now() - t0);
  form.querySelector("button").disabled = true;
});
"""


def document(title: str, body: str, script: str = "") -> str:
    js = f"<script>{script}</script>" if script else ""
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="referrer" content="no-referrer">'
            f"<title>{escape(title)}</title><style>{STYLE}</style></head><body>{body}{js}</body></html>")  # fmt: skip


def _progress(view: dict) -> str:
    return (f'<p>Item {view["position"] + 1} of {view["total"]} &middot; {view["done"]} rated'
            f'<progress id="progress" max="{view["total"]}" value="{view["done"]}"></progress></p>')  # fmt: skip


def _images(view: dict, base: str) -> str:
    demos = "".join(f'<img src="{base}/img/{d}" alt="reference photo {i + 1}">' for i, d in enumerate(view["demos"]))
    labels = {"out": "Generated image", "a": "A", "b": "B"}
    outs = "".join(f'<figure><figcaption><b>{labels[o]}</b></figcaption><img id="img-{o}" src="{base}/img/{o}" '
                   f'alt="{labels[o]}"></figure>' for o in view["outputs"])  # fmt: skip
    return (f'<h3>Reference photos of the subject</h3><div class="demos">{demos}</div>'
            f'<h3>Prompt</h3><p class="prompt" id="prompt">{escape(view["prompt"])}</p>'
            f'<div class="outputs">{outs}</div>')  # fmt: skip


def _radio(name: str, value: str, label: str, key: str) -> str:
    return (
        f'<label><input type="radio" name="{name}" value="{value}" required> {escape(label)} <kbd>{key}</kbd></label>'
    )


def rate_page(view: dict, token: str) -> str:
    """One item: demos, prompt, one output (or A and B), the rating form."""
    base = f"/r/{escape(token)}/{view['position']}"
    if view["mode"] == "absolute":
        questions = "".join(
            f'<fieldset id="q-{axis}"><legend><b>{title}</b>: {question}</legend>'
            + "".join(_radio(axis, v, f"{v} {word}", k) for v, word, k in options) + "</fieldset>"
            for axis, title, question, options in AXIS_QUESTIONS)  # fmt: skip
        keys = {k: [axis, v] for axis, _, _, options in AXIS_QUESTIONS for v, _, k in options}
        hint = "Keys: <kbd>q w e</kbd> subject, <kbd>a s d</kbd> text, <kbd>z x c</kbd> photorealism (0, 0.5, 1)"
    else:
        questions = ('<fieldset id="q-choice"><legend><b>Which image shows this subject in the prompted context '
                     "better?</b></legend>" + "".join(_radio("choice", v, label, k) for v, label, k in CHOICE_OPTIONS)
                     + "</fieldset>")  # fmt: skip
        keys = {k: ["choice", v] for v, _, k in CHOICE_OPTIONS}
        hint = "Keys: <kbd>1</kbd> A, <kbd>2</kbd> B, <kbd>3</kbd> tie, <kbd>4</kbd> both bad"
    form = (f'<form id="rate" method="post" action="{base}">'
            f'<input type="hidden" name="ref" value="{escape(view["ref"])}">'
            f'<input type="hidden" name="submission_id" value="{uuid.uuid4().hex}">'
            f'<input type="hidden" name="duration_ms" value="">{questions}'
            f'<p class="muted">{hint}; <kbd>Enter</kbd> submits.</p><button type="submit">Submit</button></form>')  # fmt: skip
    body = f"<h2>{escape(view['study'])}</h2>{_progress(view)}{_images(view, base)}{form}"
    return document(f"Item {view['position'] + 1}", body, SCRIPT % json.dumps(keys))


def rated_page(view: dict, token: str) -> str:
    nxt = f'<a id="next" href="/r/{escape(token)}">Continue</a>'
    return document("Already rated", f"<h2>{escape(view['study'])}</h2>{_progress(view)}"
                                     f"<p>You have already rated this item. {nxt}</p>")  # fmt: skip


def done_page(study: str, done: int, total: int) -> str:
    return document("Thank you", f'<h2>{escape(study)}</h2><p id="done">All {total} items rated '
                                 f"({done} of {total}). Thank you! You can close this page.</p>")  # fmt: skip


def error_page(status: int, message: str) -> str:
    return document(f"Error {status}", f'<h2>Error {status}</h2><p id="error">{escape(message)}</p>')


def index_page() -> str:
    return document("Human evaluation", "<h2>Human evaluation</h2><p>Open the personal link you were given.</p>")


def admin_page(study: dict, raters: list[dict], token: str) -> str:
    """Progress per rater, rater links, report and export links (the admin token travels in the URL)."""
    q = f"?token={escape(token)}"
    rows = "".join(f"<tr><td>{escape(r['name'])}</td><td>{r['done']} / {r['total']}</td>"
                   f"<td><a href=\"/r/{escape(r['token'])}\">/r/{escape(r['token'])}</a></td></tr>" for r in raters)  # fmt: skip
    done, total = sum(r["done"] for r in raters), sum(r["total"] for r in raters)
    name = escape(study["name"])
    body = (f"<h2>Study {name} <span class='muted'>({escape(study['mode'])})</span></h2>"
            f"<p>Systems: {escape(', '.join(study['systems']))}. Ratings: {done} of {total}.</p>"
            f"<table><tr><th>rater</th><th>progress</th><th>personal link</th></tr>{rows}</table>"
            f'<p><a href="/admin/{name}/report{q}">report</a> &middot; '
            f'<a href="/admin/{name}/export.csv{q}">ratings.csv</a> &middot; '
            f'<a href="/admin/{name}/export.jsonl{q}">ratings.jsonl</a></p>')  # fmt: skip
    return document(f"Study {study['name']}", body)
