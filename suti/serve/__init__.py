"""The personalization HTTP API (`suti serve`): register a subject once, generate it many times.

Importing this package is cheap; FastAPI, uvicorn and torch load inside the modules that need them
(`app`, `server`, `service`, `model`). See docs/api.md.

    from suti.serve.config import ServeConfig
    from suti.serve.server import BackgroundServer, serve_forever
    from suti.serve.client import SutiClient
"""
