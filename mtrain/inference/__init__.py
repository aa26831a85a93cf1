"""Decoding: greedy, beam and sampling search, the Translator, ensembles, and the TranslationEngine protocol."""
