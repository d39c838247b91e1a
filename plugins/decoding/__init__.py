"""Decoding constraints applied at every generation step."""
