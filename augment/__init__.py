"""augment: precompute counterfactual (CF) and factual (F) images into WebDataset shards.

Stages: ``datasets`` (read) -> ``masks`` and ``mask_sources`` (mask) -> ``infill`` -> ``contract.encode`` ->
``contract.shards`` (write). ``pipeline`` takes one sample through them, top to bottom; ``runner`` runs the pipeline
over a build's shards (plan, resume, workers, journal, manifest); ``contract`` is the shard format the trainer reads;
``config`` holds a build's options and ``options`` what they mean; ``cli`` is the Typer front end.
"""

__version__ = "0.1.0"
