"""Positional encodings: how the model knows where each token is."""
