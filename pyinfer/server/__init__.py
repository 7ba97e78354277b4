"""`pyinfer serve`: an OpenAI-compatible HTTP server over one model (the optional extra `pyinfer[server]`:
Starlette, uvicorn, pydantic). Layers, top down: app.py (routes, response shapes, SSE) -> slots.py (N sessions,
the queue, worker threads) -> schema.py (request models, errors). Everything below (Model, Session, generate)
knows nothing of it. Batched decoding of several slots in one forward pass is not done: slots run side by side.
"""
from .app import create_app

__all__ = ["create_app"]
