"""Block layouts: how a layer wires its norms, attention and MLP around the residual stream."""
