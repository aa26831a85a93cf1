"""mtrain serve: the batching worker and the FastAPI app."""
