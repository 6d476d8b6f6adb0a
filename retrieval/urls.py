"""Source-URL normalisation: every spelling of one web page maps to one key.

    HTTP://WWW.Example.com:80/a/b/?utm=1#top  ->  https://example.com/a/b

Rules: scheme and host lowercased, http and https merged (the same page is served over both), a
leading `www.` and a trailing dot of the host dropped, default ports (80, 443) dropped, user info,
query string and fragment dropped, trailing slashes of the path dropped (the root stays "/").
The path keeps its case (paths are case-sensitive on the web).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from suti.errors import InputError

DEFAULT_PORTS = {"http": 80, "https": 443}


def normalize_url(url: str) -> str:
    """The page key of an absolute http(s) URL; InputError for anything else."""
    if not isinstance(url, str):
        raise InputError(f"URL must be a string, got {type(url).__name__}")
    text = url.strip()
    if "://" not in text and text.startswith("//"):
        text = "https:" + text  # protocol-relative
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as e:
        raise InputError(f"malformed URL {url!r} ({e})") from e
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise InputError(f"not an absolute http(s) URL: {url!r}")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise InputError(f"URL has no host: {url!r}")
    if host.startswith("www."):
        host = host[4:]
    if ":" in host:
        host = f"[{host}]"  # IPv6 literal
    if port is not None and port != DEFAULT_PORTS[scheme]:
        host = f"{host}:{port}"
    path = parts.path.rstrip("/") or "/"
    return f"https://{host}{path}"


def url_keys(urls) -> tuple[list[str | None], list[str]]:
    """(key per URL or None when it cannot be normalised, the error message per bad URL)."""
    keys: list[str | None] = []
    errors: list[str] = []
    for u in urls:
        try:
            keys.append(normalize_url(u))
        except InputError as e:
            keys.append(None)
            errors.append(str(e))
    return keys, errors
