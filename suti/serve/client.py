"""A small Python client for the SuTI personalization API (httpx).

    from suti.serve.client import SutiClient
    with SutiClient("http://127.0.0.1:8000", api_key=None) as client:
        subject = client.create_subject(["a.png", "b.png", "c.png"], captions=[...])
        result = client.generate("the subject on the beach", subject_id=subject["subject_id"], seed=0)
        result.images[0].save("out.png")

Errors come back as `ApiClientError` (status, code, message), a `SutiError`, so the CLI prints one line.
A 429 is retried after its Retry-After when `retries` > 0.
"""

from __future__ import annotations

import base64
import io
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import PIL.Image

from suti.errors import InputError, SutiError

ImageLike = str | os.PathLike | bytes | PIL.Image.Image


class ApiClientError(SutiError):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message


@dataclass
class Generation:
    images: list[PIL.Image.Image]
    seeds: list[int]
    info: dict[str, Any] = field(default_factory=dict)  # the response without the image data


def image_bytes(image: ImageLike, where: str = "image") -> bytes:
    """PNG/JPEG/WebP file bytes from a path, raw bytes or a PIL image (saved as PNG)."""
    if isinstance(image, (bytes, bytearray)):
        return bytes(image)
    if isinstance(image, PIL.Image.Image):
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        return buf.getvalue()
    path = Path(image)
    if not path.is_file():
        raise InputError(f"{where}: {str(path)!r} is not a file")
    return path.read_bytes()


class SutiClient:
    def __init__(self, base_url: str = "http://127.0.0.1:8000", api_key: str | None = None, timeout_s: float = 300.0,
                 retries: int = 0):
        import httpx

        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.retries = int(retries)
        self._http = httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout_s)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> SutiClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- transport -------------------------------------------------------------------------------------------
    def request(self, method: str, path: str, **kwargs):
        import httpx

        for attempt in range(self.retries + 1):
            try:
                response = self._http.request(method, path, **kwargs)
            except httpx.HTTPError as e:
                raise ApiClientError(0, "connection_error", f"{method} {path}: {e}") from None
            if response.status_code == 429 and attempt < self.retries:
                time.sleep(float(response.headers.get("retry-after", "1")))
                continue
            break
        if response.status_code >= 400:
            raise _error_of(response)
        return response

    # -- subjects ----------------------------------------------------------------------------------------
    def create_subject(self, images: list[ImageLike], captions: list[str] | None = None) -> dict:
        files = [("images", (f"image{i}", image_bytes(im, f"images[{i}]"), "application/octet-stream"))
                 for i, im in enumerate(images)]
        data = {"captions": list(captions)} if captions else None
        return self.request("POST", "/v1/subjects", files=files, data=data).json()

    def get_subject(self, subject_id: str) -> dict:
        return self.request("GET", f"/v1/subjects/{_segment(subject_id)}").json()

    def delete_subject(self, subject_id: str) -> dict:
        return self.request("DELETE", f"/v1/subjects/{_segment(subject_id)}").json()

    # -- generation ------------------------------------------------------------------------------------
    def generate(self, prompt: str, subject_id: str | None = None, images: list[ImageLike] | None = None,
                 captions: list[str] | None = None, **sampling: Any) -> Generation:
        """`sampling`: n, steps, seed, guidance_scale, subject_guidance_scale, size (None = server default)."""
        body: dict[str, Any] = {"prompt": prompt, **{k: v for k, v in sampling.items() if v is not None}}
        if subject_id is not None:
            body["subject_id"] = subject_id
        if images is not None:
            body["images"] = [base64.b64encode(image_bytes(im, f"images[{i}]")).decode() for i, im in enumerate(images)]
        if captions is not None:
            body["captions"] = list(captions)
        return _generation(self.request("POST", "/v1/generations", json=body).json())

    def generate_png(self, prompt: str, subject_id: str, **sampling: Any) -> tuple[bytes, dict[str, str]]:
        """One image as raw PNG bytes + the response headers (seed, Server-Timing)."""
        body = {"prompt": prompt, "subject_id": subject_id, "response_format": "png",
                **{k: v for k, v in sampling.items() if v is not None}}
        response = self.request("POST", "/v1/generations", json=body)
        return response.content, dict(response.headers)

    def catalog_generate(self, prompt: str, k: int = 4, **sampling: Any) -> Generation:
        body = {"prompt": prompt, "k": k, **{key: v for key, v in sampling.items() if v is not None}}
        return _generation(self.request("POST", "/v1/catalog/generations", json=body).json())

    # -- ops -------------------------------------------------------------------------------------------
    def health(self) -> dict:
        return self.request("GET", "/healthz").json()

    def ready(self) -> dict:
        return self.request("GET", "/readyz").json()

    def stats(self) -> dict:
        return self.request("GET", "/v1/stats").json()

    def limits(self) -> dict:
        return self.request("GET", "/v1/limits").json()


def _segment(subject_id: str) -> str:
    from urllib.parse import quote

    return quote(str(subject_id), safe="")


def _error_of(response) -> ApiClientError:
    try:
        err = response.json()["error"]
        return ApiClientError(response.status_code, str(err["code"]), str(err["message"]))
    except Exception:  # not our error shape (e.g. a proxy in between)
        return ApiClientError(response.status_code, "http_error", response.text[:200] or response.reason_phrase)


def _generation(data: dict) -> Generation:
    images = [PIL.Image.open(io.BytesIO(base64.b64decode(im["png_base64"]))).convert("RGB") for im in data["images"]]
    seeds = [int(im["seed"]) for im in data["images"]]
    info = {k: v for k, v in data.items() if k != "images"}
    return Generation(images, seeds, info)
