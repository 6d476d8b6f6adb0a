"""The FastAPI app: routes over `Service`, typed request/response models, one error shape.

    app = create_app(Service.create(ServeConfig(model="tiny")))

Routes: POST/GET/DELETE /v1/subjects, POST /v1/generations, POST /v1/catalog/generations (only when an
index is loaded), GET /v1/limits, GET /v1/stats, /healthz, /readyz, /openapi.json, /docs.
Every error is `{"error": {"code": "...", "message": "..."}}` with a 4xx/5xx status, never a traceback.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Literal

from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from suti import __version__
from suti.errors import InputError, SutiError
from suti.serve.errors import ApiError, PayloadTooLarge, Unavailable
from suti.serve.gate import RequestGate
from suti.serve.service import Generated, Service, png_base64, png_bytes
from suti.serve.subjects import check_subject_id

log = logging.getLogger("suti.serve")
_STATUS_CODES = {400: "bad_request", 401: "unauthorized", 404: "not_found", 405: "method_not_allowed",
                 413: "payload_too_large", 415: "unsupported_media_type", 422: "invalid_request"}
_NUMBER = dict(strict=True, allow_inf_nan=False)


# -- schemas --------------------------------------------------------------------------------------------------
class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class Sampling(_Strict):
    prompt: str = Field(description="What to render; the subject is referred to in words ('the subject ...').")
    n: int = Field(1, ge=1, description="Images to generate (see /v1/limits for the maximum).")
    steps: int | None = Field(None, ge=1, description="Denoising steps (server default if omitted).")
    seed: int | None = Field(None, ge=0, description="Seed of image 0; image i uses seed + i. Random if omitted.")
    guidance_scale: float | None = Field(None, ge=0, **_NUMBER, description="Text guidance s_text.")
    subject_guidance_scale: float | None = Field(None, ge=0, **_NUMBER, description="Subject guidance s_subj.")
    size: int | None = Field(None, ge=1, description="Output side in px (native size if omitted; larger is upsampled).")
    response_format: Literal["json", "png"] = Field("json", description="'png' returns image/png (n must be 1).")


class GenerationRequest(Sampling):
    subject_id: str | None = Field(None, description="A registered subject; or give `images` inline.")
    images: list[str] | None = Field(None, description="Inline reference images, base64 (PNG/JPEG/WebP).")
    captions: list[str] | None = Field(None, description="One caption per inline image (optional).")


class CatalogRequest(Sampling):
    k: int = Field(4, ge=1, description="Catalog neighbours used as demonstrations.")


class SubjectOut(BaseModel):
    subject_id: str
    n_images: int
    captions: list[str]
    created_at: float
    tokens: int
    warnings: list[str] = []
    timings_ms: dict[str, float] | None = None


class ImageOut(BaseModel):
    seed: int
    png_base64: str


class GenerationOut(BaseModel):
    images: list[ImageOut]
    prompt: str
    subject_id: str | None = None
    seed: int
    steps: int
    guidance_scale: float
    subject_guidance_scale: float
    size: int
    batch_images: int = Field(description="Images in the sampling call this request shared.")
    timings_ms: dict[str, float]
    warnings: list[str] = []
    neighbors: dict | None = None


class Deleted(BaseModel):
    subject_id: str
    deleted: bool


# -- errors ---------------------------------------------------------------------------------------------------
def _error(status: int, code: str, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api(request: Request, e: ApiError):
        return _error(e.status, e.code, e.message, e.headers)

    @app.exception_handler(SutiError)
    async def _suti(request: Request, e: SutiError):
        if isinstance(e, InputError):
            return _error(422, "invalid_input", str(e))
        log.error("server-side error on %s: %s", request.url.path, e)
        return _error(500, "server_error", str(e))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, e: RequestValidationError):
        errors = e.errors()
        if any(err.get("type") == "json_invalid" for err in errors):
            return _error(400, "invalid_json", "the request body is not valid JSON")
        parts = []
        for err in errors[:3]:
            loc = ".".join(str(x) for x in err.get("loc", ()) if x != "body") or "body"
            parts.append(f"{loc}: {err.get('msg', 'invalid')}")
        more = f" (+{len(errors) - 3} more)" if len(errors) > 3 else ""
        return _error(422, "invalid_request", "; ".join(parts) + more)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, e: StarletteHTTPException):
        code = _STATUS_CODES.get(e.status_code, "error")
        message = e.detail if isinstance(e.detail, str) else code
        if e.status_code == 404 and message == "Not Found":
            message = f"no route {request.method} {request.url.path}"
        return _error(e.status_code, code, message, getattr(e, "headers", None))

    @app.exception_handler(Exception)
    async def _bug(request: Request, e: Exception):
        log.exception("unhandled error on %s", request.url.path)
        return _error(500, "internal_error", "internal server error")


# -- helpers --------------------------------------------------------------------------------------------------
async def _wait(service: Service, job):
    left = max(0.001, job.deadline - time.monotonic())
    try:
        return await asyncio.wait_for(asyncio.wrap_future(job.future), timeout=left)
    except asyncio.TimeoutError:
        raise service.expire(job) from None


async def _read_uploads(service: Service, images: list[UploadFile]) -> list[bytes]:
    blobs = []
    for i, f in enumerate(images):
        data = await f.read(service.cfg.max_image_bytes + 1)
        if len(data) > service.cfg.max_image_bytes:
            raise PayloadTooLarge(f"images[{i}]: over the limit of {service.cfg.max_image_bytes} bytes per image")
        blobs.append(data)
    return blobs


def _check_format(req: Sampling) -> None:
    if req.response_format == "png" and req.n != 1:
        raise ApiError(f"response_format 'png' returns one image; n is {req.n} (use 'json')", status=422,
                       code="invalid_request")


def _respond(req: Sampling, spec, out: Generated, t0: float, extra: dict, subject_id: str | None = None,
             neighbors: dict | None = None):
    timings = {**extra, **out.timings_ms, "total": round((time.monotonic() - t0) * 1000, 2)}
    if req.response_format == "png":
        server_timing = ", ".join(f"{k};dur={v}" for k, v in timings.items())
        return Response(png_bytes(out.images[0]), media_type="image/png",
                        headers={"X-Suti-Seed": str(out.seeds[0]), "X-Suti-Batch-Images": str(out.batch_images),
                                 "Server-Timing": server_timing})
    return GenerationOut(images=[ImageOut(seed=s, png_base64=png_base64(im)) for s, im in zip(out.seeds, out.images)],
                         prompt=spec.prompt, subject_id=subject_id, seed=spec.seed, steps=spec.steps,
                         guidance_scale=spec.guidance_scale, subject_guidance_scale=spec.subject_guidance_scale,
                         size=spec.size, batch_images=out.batch_images, timings_ms=timings, warnings=out.warnings,
                         neighbors=neighbors)


def _spec(service: Service, req: Sampling):
    _check_format(req)
    return service.check_generation(req.prompt, req.n, req.steps, req.seed, req.guidance_scale,
                                    req.subject_guidance_scale, req.size)


# -- the app --------------------------------------------------------------------------------------------------
def create_app(service: Service) -> FastAPI:
    cfg = service.cfg
    app = FastAPI(title="SuTI personalization API", version=__version__, docs_url="/docs", redoc_url=None,
                  description="Register a subject from 3-5 photos once, then generate it in new contexts. "
                              "Limits: GET /v1/limits. Errors: {error: {code, message}}.")
    app.state.service = service
    _install_error_handlers(app)
    types = {("POST", "/v1/subjects"): "multipart/form-data", ("POST", "/v1/generations"): "application/json",
             ("POST", "/v1/catalog/generations"): "application/json"}
    app.add_middleware(RequestGate, api_key=cfg.api_key, max_body_bytes=cfg.max_body_bytes, content_types=types,
                       max_large_bodies=cfg.max_concurrent_uploads)

    @app.get("/healthz", tags=["ops"])
    async def healthz() -> dict:
        """Alive (the process answers)."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["ops"])
    async def readyz():
        """Ready: the model is loaded and the queue has room."""
        if service.batcher.saturated:
            raise Unavailable(f"queue saturated ({service.batcher.pending}/{cfg.queue_size} images waiting)",
                              code="not_ready", headers={"Retry-After": str(service.batcher.retry_after_s())})
        return {"ready": True, "model": service.runner.describe(), "catalog": service.retriever is not None,
                "pending_images": service.batcher.pending}

    @app.get("/v1/limits", tags=["ops"])
    async def limits() -> dict:
        """Every hard limit the server enforces, and the model's native image size."""
        return {**cfg.public_limits(), "native_size": service.runner.image_size}

    @app.get("/v1/stats", tags=["ops"])
    async def stats() -> dict:
        """Counters: demo-encoder calls, cache hits, batches, queue."""
        return service.stats()

    @app.post("/v1/subjects", status_code=201, response_model=SubjectOut, tags=["subjects"])
    async def create_subject(images: list[UploadFile] = File(..., description="3-5 reference photos"),
                             captions: list[str] | None = Form(None, description="One caption per photo")):
        """Register a subject: its demo features are computed once and cached (memory + disk)."""
        t0 = time.monotonic()
        warnings = service.check_image_count(len(images))
        caps = service.check_captions(captions, len(images))
        blobs = await _read_uploads(service, images)
        decoded = await run_in_threadpool(service.decode_images, blobs)
        t1 = time.monotonic()
        job = service.submit_encode(decoded, caps, t0)
        ctx = await _wait(service, job)
        record = await run_in_threadpool(service.add_subject, ctx, len(decoded), caps, warnings)
        timings = {"decode": round((t1 - t0) * 1000, 2), **{f"encode_{k}": v for k, v in job.timings_ms().items()}}
        return SubjectOut(**record.to_dict(), timings_ms=timings)

    @app.get("/v1/subjects/{subject_id}", response_model=SubjectOut, tags=["subjects"])
    async def get_subject(subject_id: str):
        """A registered subject's record."""
        return SubjectOut(**(await run_in_threadpool(service.store.record, check_subject_id(subject_id))).to_dict())

    @app.delete("/v1/subjects/{subject_id}", response_model=Deleted, tags=["subjects"])
    async def delete_subject(subject_id: str):
        """Forget a subject (memory and disk)."""
        await run_in_threadpool(service.store.delete, check_subject_id(subject_id))
        return Deleted(subject_id=subject_id, deleted=True)

    @app.post("/v1/generations", response_model=GenerationOut, tags=["generations"],
              responses={200: {"content": {"image/png": {}}}})
    async def generate(req: GenerationRequest):
        """Generate images of a registered subject (or of inline reference images) in a new context."""
        t0 = time.monotonic()
        spec = _spec(service, req)
        extra: dict[str, float] = {}
        warnings: list[str] = []
        if (req.subject_id is None) == (req.images is None):
            raise ApiError("give exactly one of subject_id or images", status=422, code="invalid_request")
        if req.subject_id is not None:
            if req.captions is not None:
                raise ApiError("captions go with inline images, not with subject_id", status=422,
                               code="invalid_request")
            ctx, _ = await run_in_threadpool(service.store.get, check_subject_id(req.subject_id))
        else:
            warnings = service.check_image_count(len(req.images))
            caps = service.check_captions(req.captions, len(req.images))
            decoded = await run_in_threadpool(service.decode_base64_images, req.images)
            extra["decode"] = round((time.monotonic() - t0) * 1000, 2)
            enc = service.submit_encode(decoded, caps, t0)
            ctx = await _wait(service, enc)
            extra["encode"] = enc.timings_ms()["run"]
        job = service.submit_generation(ctx, spec, t0)
        images = await _wait(service, job)
        out = await run_in_threadpool(service.finish, job, images)
        out.warnings = warnings
        return await run_in_threadpool(_respond, req, spec, out, t0, extra, req.subject_id)

    if service.retriever is not None:
        @app.post("/v1/catalog/generations", response_model=GenerationOut, tags=["generations"],
                  responses={200: {"content": {"image/png": {}}}})
        async def catalog_generate(req: CatalogRequest):
            """Re-Imagen mode: the demonstrations are the best catalog cluster's members for the prompt."""
            t0 = time.monotonic()
            spec = _spec(service, req)
            images, captions, used = await run_in_threadpool(service.search_catalog, req.prompt, req.k)
            extra = {"search": round((time.monotonic() - t0) * 1000, 2)}
            key = tuple(used.ids)
            ctx = service.catalog_context(key)
            if ctx is None:
                enc = service.submit_encode(images, captions, t0)
                ctx = await _wait(service, enc)
                service.remember_catalog(key, ctx)
                extra["encode"] = enc.timings_ms()["run"]
            job = service.submit_generation(ctx, spec, t0)
            out = await run_in_threadpool(service.finish, job, await _wait(service, job))
            return await run_in_threadpool(_respond, req, spec, out, t0, extra, None, used.to_dict())

    return app
