"""The stockcast HTTP service: FastAPI over the versioned model store."""
