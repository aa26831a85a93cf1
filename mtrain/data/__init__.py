"""Text in, token ids and batches out: sources -> clean -> tokenizer -> prepare -> batching."""

from mtrain.data.binarize import PreparedData, prepare

__all__ = ["PreparedData", "prepare"]
