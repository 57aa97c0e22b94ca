"""One FastAPI router per resource, all under ``/api/v1``."""
