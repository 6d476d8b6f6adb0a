"""`suti serve`: the personalization HTTP API (FastAPI + uvicorn) over one loaded model.

    suti serve --model default                        # the bundled world model, http://127.0.0.1:8000
    suti serve --model tiny --port 8080               # a preset with random weights (dev, tests)
    suti serve --model out/my-model --index out/index --host 0.0.0.0 --api-key "$SUTI_API_KEY"

Binds loopback by default; any other host requires an API key. API reference: docs/api.md.
"""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


@app.command()
def serve(
    model: str = typer.Option("default", "--model", help="Model dir, preset name (tiny: random weights) or 'default'."),
    index: Path = typer.Option(None, "--index", help="FAISS index dir: enables POST /v1/catalog/generations."),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to bind (non-loopback needs --api-key)."),
    port: int = typer.Option(8000, "--port", help="TCP port."),
    api_key: str = typer.Option(None, "--api-key", envvar="SUTI_API_KEY", help="Required API key (>= 16 chars)."),
    store: Path = typer.Option(None, "--store", help="Subject cache dir (kept across restarts); default: temporary."),
    max_batch: int = typer.Option(8, "--max-batch", help="Images per sampling call (1 = no micro-batching)."),
    max_wait_ms: float = typer.Option(25.0, "--max-wait-ms", help="Wait this long to fill a micro-batch."),
    queue_size: int = typer.Option(64, "--queue-size", help="Images waiting before requests get 429."),
    timeout: float = typer.Option(120.0, "--timeout", help="Per-request timeout in seconds."),
    min_images: int = typer.Option(3, "--min-images", help="Fewest reference images accepted (>= 1)."),
    max_images: int = typer.Option(5, "--max-images", help="Most reference images accepted (<= 8)."),
    max_steps: int = typer.Option(100, "--max-steps", help="Largest `steps` a request may ask for."),
    default_steps: int = typer.Option(25, "--default-steps", help="Steps when a request gives none."),
    threads: int = typer.Option(None, "--threads", help="torch threads (default: torch's choice)."),
) -> None:
    """Serve the personalization API: register subjects once, generate many times."""
    from suti.serve.config import ServeConfig
    from suti.serve.server import serve_forever

    cfg = ServeConfig(model=model, index=str(index) if index else None, store_dir=str(store) if store else None,
                      host=host, port=port, api_key=api_key or None, torch_threads=threads, max_batch=max_batch,
                      max_wait_ms=max_wait_ms, queue_size=queue_size, request_timeout_s=timeout,
                      min_images=min_images, max_images=max_images, max_steps=max_steps,
                      default_steps=default_steps).check()
    typer.echo(f"loading {model!r} ...", err=True)
    serve_forever(cfg)


def main(argv: list[str] | None = None) -> int:
    from tools.cli import run_app

    return run_app(app, argv, "suti serve")


if __name__ == "__main__":
    raise SystemExit(main())
