"""CAGAN (DeepFill v1): generator, weight import, training."""
