"""``ctrgraph serve``: an HTTP scoring service for a trained run (FastAPI + uvicorn; :mod:`.app`)."""
