"""Attention cores: scores, causal mask, softmax, weighted sum."""
