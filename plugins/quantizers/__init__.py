"""Post-training quantizers."""
