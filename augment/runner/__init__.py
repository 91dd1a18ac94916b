"""The build runner: everything around the per-sample pipeline (``augment.pipeline``) that makes a build fast,
resumable and verifiable.

- ``build``: ``augment build`` and ``augment merge``, start to manifest;
- ``plan``: what is fixed before the first pixel (the manifest header, one task per shard, each split's order);
- ``journal``: ``<out>/.build/``, what makes a build resumable, sliceable and mergeable;
- ``resume``: start, resume or refuse the ``--out`` folder;
- ``task``: the task a worker runs, one shard; ``cache``: the dataset a worker opens once;
- ``executors`` and ``orphans``: where tasks run (this process, local workers, dask) and the watchdog of workers
  whose build is gone;
- ``provenance``: the tool's commit and the model weights; ``diff``: how two builds differ.
"""
