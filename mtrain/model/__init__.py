"""The Transformer of the paper (section 3) and its label-smoothed loss."""
