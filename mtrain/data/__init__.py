"""Text in, ids and batches out: sources, cleaning, sentencepiece, the prepare pipeline, the on-disk
format, batching."""
