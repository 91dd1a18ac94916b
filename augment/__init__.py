"""augment: precompute counterfactual (CF) and factual (F) images into WebDataset shards.

Stages: ``datasets`` (read) -> ``masks`` (mask) -> ``infill`` -> ``encode`` -> ``shards`` (write), driven by
``build``; ``schema`` declares the shard fields and the manifest; ``cli`` is the Typer front end.
"""

__version__ = "0.1.0"
