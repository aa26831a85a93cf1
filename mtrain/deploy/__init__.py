"""Models that leave mtrain (CTranslate2, Hugging Face) and the HTTP service."""
