"""The rating web app (FastAPI): personal rater links, one item per page, admin pages behind a token.

    /r/{token}                      resume: redirects to the first unrated page (or says "done")
    /r/{token}/{position}           GET the page, POST its rating (form or JSON)
    /r/{token}/{position}/img/{s}   the page's images: demo0.., out (absolute) or a, b (pairwise)
    /admin/{study}?token=ADMIN      progress and rater links; /report, /export.csv, /export.jsonl
    /healthz                        liveness for scripts

A client that sends `Accept: application/json` gets JSON instead of HTML (same routes, same checks).
Rejections keep their status (404 unknown link, 400 tampered page reference, 409 double submission,
422 bad answer; 401/403 admin token missing/wrong) and never change the database.
"""

from __future__ import annotations

import hmac
from dataclasses import asdict

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from suti.human import pages
from suti.human.db import Database, Rater, Study
from suti.human.ratings import Rejected, Submission, image_png, page_view, progress, rater_by_token, submit
from suti.human.study import hash_token

NO_STORE = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer", "X-Content-Type-Options": "nosniff"}


def _wants_json(request: Request) -> bool:
    return "application/json" in request.headers.get("accept", "")


def _html(body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(body, status_code=status, headers=NO_STORE)


def make_app(db: Database) -> FastAPI:
    """The app over one database (which may hold several studies)."""
    app = FastAPI(title="SuTI human evaluation", docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(Rejected)
    async def _rejected(request: Request, exc: Rejected):
        if _wants_json(request) or request.headers.get("content-type", "").startswith("application/json"):
            return JSONResponse({"error": str(exc)}, status_code=exc.status, headers=NO_STORE)
        return _html(pages.error_page(exc.status, str(exc)), exc.status)

    @app.get("/", response_class=HTMLResponse)
    def index():
        return _html(pages.index_page())

    @app.get("/healthz")
    def healthz():
        return {"ok": True}

    @app.get("/r/{token}")
    def resume(token: str, request: Request):
        with db.read() as s:
            rater = rater_by_token(s, token)
            done, total, nxt = progress(s, rater)
            study = s.get(Study, rater.study_id).name
        if _wants_json(request):
            return JSONResponse({"study": study, "done": done, "total": total, "next_position": nxt}, headers=NO_STORE)
        if nxt is None:
            return _html(pages.done_page(study, done, total))
        return RedirectResponse(f"/r/{token}/{nxt}", status_code=303, headers=NO_STORE)

    @app.get("/r/{token}/{position}")
    def show(token: str, position: int, request: Request):
        view = page_view(db, token, position)
        if _wants_json(request):
            return JSONResponse(view, headers=NO_STORE)
        return _html(pages.rated_page(view, token) if view["rated"] else pages.rate_page(view, token))

    @app.post("/r/{token}/{position}")
    async def rate(token: str, position: int, request: Request):
        is_json = request.headers.get("content-type", "").startswith("application/json")
        try:
            fields = await request.json() if is_json else dict(await request.form())
        except ValueError:
            raise Rejected(422, "the request body is not valid JSON or form data") from None
        if not isinstance(fields, dict):
            raise Rejected(422, "the request body must be an object of fields")
        fields = {k: (v if isinstance(v, str) or v is None else str(v)) for k, v in fields.items()}
        sub = Submission.parse(fields, request.headers.get("user-agent"))
        ack = await run_in_threadpool(submit, db, token, position, sub)
        if is_json or _wants_json(request):
            return JSONResponse(asdict(ack), headers=NO_STORE)
        return RedirectResponse(f"/r/{token}", status_code=303, headers=NO_STORE)

    @app.get("/r/{token}/{position}/img/{slot}")
    def image(token: str, position: int, slot: str):
        png = image_png(db, token, position, slot)
        return Response(png, media_type="image/png",
                        headers={"Cache-Control": "private, max-age=3600", "Referrer-Policy": "no-referrer"})  # fmt: skip

    def admin(study_name: str, request: Request) -> dict:
        token = request.query_params.get("token") or request.headers.get("x-admin-token")
        if not token:
            raise Rejected(401, "admin pages need the study's admin token (?token=... or X-Admin-Token)")
        with db.read() as s:
            study = s.scalar(select(Study).where(Study.name == study_name))
            if study is None or not hmac.compare_digest(study.admin_token_hash, hash_token(token)):
                raise Rejected(403, "the admin token does not match this study")
            raters = []
            for r in s.scalars(select(Rater).where(Rater.study_id == study.id).order_by(Rater.name)):
                done, total, _ = progress(s, r)
                raters.append({"name": r.name, "token": r.token, "done": done, "total": total})
            return {"name": study.name, "mode": study.mode, "systems": study.systems, "raters": raters,
                    "token": token}  # fmt: skip

    @app.get("/admin/{study_name}")
    def admin_home(study_name: str, request: Request):
        info = admin(study_name, request)
        if _wants_json(request):
            return JSONResponse({k: v for k, v in info.items() if k != "token"}, headers=NO_STORE)
        return _html(pages.admin_page(info, info["raters"], info["token"]))

    @app.get("/admin/{study_name}/report")
    def admin_report(study_name: str, request: Request):
        from suti.human.report import build_report

        admin(study_name, request)
        return _html(build_report(db, study_name).html)

    @app.get("/admin/{study_name}/export.{fmt}")
    def admin_export(study_name: str, fmt: str, request: Request):
        from suti.human.report import load_ratings, to_jsonl

        admin(study_name, request)
        if fmt not in ("csv", "jsonl"):
            raise Rejected(404, f"no export format {fmt!r} (csv, jsonl; parquet via `suti eval human report`)")
        frame = load_ratings(db, study_name)
        body = frame.to_csv(index=False) if fmt == "csv" else to_jsonl(frame)
        kind = "text/csv" if fmt == "csv" else "application/x-ndjson"
        headers = {**NO_STORE, "Content-Disposition": f'attachment; filename="{study_name}-ratings.{fmt}"'}
        return Response(body, media_type=kind, headers=headers)

    return app


def serve(db_target: str, host: str = "127.0.0.1", port: int = 8000, log_level: str = "warning") -> None:
    """Run the app with uvicorn until interrupted (one process; the database serialises writes)."""
    import uvicorn

    db = Database.open(db_target)
    uvicorn.run(make_app(db), host=host, port=port, log_level=log_level, access_log=False,
                timeout_graceful_shutdown=5)  # fmt: skip
