"""Run the app under uvicorn: in the foreground (`suti serve`) or in a background thread (tests, benchmarks).

    with BackgroundServer(ServeConfig(model="tiny", port=0)) as server:   # port 0 = a free port
        httpx.get(server.url + "/healthz")
        server.service.runner.stats.demo_encoder_calls                    # in-process counters
"""

from __future__ import annotations

import socket
import threading
import time

from suti.serve.config import ServeConfig
from suti.serve.errors import Unavailable
from suti.serve.gate import error_body


def build(cfg: ServeConfig):
    """(Service, FastAPI app) for a checked config: loads the model and the optional index."""
    from suti.serve.app import create_app
    from suti.serve.service import Service

    service = Service.create(cfg.check())
    return service, create_app(service)


def _json_h11_protocol():
    """uvicorn's h11 protocol, but requests too malformed to reach the app (bad Content-Length, broken
    request line) also get the JSON error shape instead of plain text. Falls back to stock h11 if
    uvicorn's internals change."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    if not callable(getattr(H11Protocol, "send_400_response", None)):
        return "h11"

    class JsonErrorH11Protocol(H11Protocol):
        def send_400_response(self, msg: str) -> None:
            body = error_body("bad_request", f"malformed HTTP request ({msg})")
            headers = [(b"content-type", b"application/json"), (b"connection", b"close"),
                       (b"content-length", str(len(body)).encode())]
            for event in (h11.Response(status_code=400, headers=headers, reason=b"Bad Request"), h11.Data(data=body),
                          h11.EndOfMessage()):
                self.transport.write(self.conn.send(event))
            self.transport.close()

    return JsonErrorH11Protocol


def _uvicorn_config(app, cfg: ServeConfig, quiet: bool):
    import uvicorn

    extra = {"log_config": None, "log_level": "warning"} if quiet else {"log_level": "info"}
    return uvicorn.Config(app, host=cfg.host, port=cfg.port, access_log=not quiet, timeout_keep_alive=5,
                          server_header=False, http=_json_h11_protocol(), **extra)


def serve_forever(cfg: ServeConfig) -> None:
    """Blocking: load, listen on cfg.host:cfg.port, serve until interrupted."""
    import uvicorn

    service, app = build(cfg)
    try:
        uvicorn.Server(_uvicorn_config(app, cfg, quiet=False)).run()
    finally:
        service.close()


class BackgroundServer:
    """The real server on a loopback socket, in a daemon thread; stops (and frees the model) on exit."""

    def __init__(self, cfg: ServeConfig, start_timeout_s: float = 60.0):
        self.cfg = cfg
        self.start_timeout_s = start_timeout_s
        self.service = None
        self._server = None
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None

    @property
    def url(self) -> str:
        host = self.cfg.host if ":" not in self.cfg.host else f"[{self.cfg.host}]"
        return f"http://{host}:{self.port}"

    @property
    def port(self) -> int:
        return self._sock.getsockname()[1]

    def start(self) -> BackgroundServer:
        import uvicorn

        self.service, app = build(self.cfg)
        family = socket.AF_INET6 if ":" in self.cfg.host else socket.AF_INET
        self._sock = socket.socket(family, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((self.cfg.host, self.cfg.port))
        self._server = uvicorn.Server(_uvicorn_config(app, self.cfg, quiet=True))
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]},
                                        name="suti-serve", daemon=True)
        self._thread.start()
        until = time.monotonic() + self.start_timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > until:
                self.stop()
                raise Unavailable("the server did not start", code="not_started")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)
        if self.service is not None:
            self.service.close()
        if self._sock is not None:
            self._sock.close()

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
