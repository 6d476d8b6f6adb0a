"""Human evaluation: blinded multi-rater studies in the browser, agreement statistics, reports.

    suti eval human create --from EVAL_DIR --db study.db --raters 6 --raters-per-item 3 --gold 10%
    suti eval human serve --db study.db              # raters open http://HOST:PORT/r/<token>
    suti eval human report --db study.db --out report/

One file per job: `db` (SQLAlchemy models and engine), `evaldir` (reads an EVAL_DIR), `gold`
(attention-check images), `study` (items, tasks, raters, blinded assignments), `ratings` (one
validated, idempotent transaction per rating), `pages` + `app` (the FastAPI web app), `agreement`
(Krippendorff's alpha, Fleiss' kappa), `bradley_terry`, `stats` (bootstrap CIs, gold accuracy,
summaries) and `report` (HTML with image grids, CSV / JSONL / parquet exports).

Modules here import SQLAlchemy / FastAPI at the top: only `suti eval human` imports them.
"""
