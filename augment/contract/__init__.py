"""The contract between ``augment`` and ``train``: what a build is, for whoever writes or reads one.

- ``schema``: the manifest (``manifest.json``: its keys, its ``evaluation`` section, the format versions read) and
  the record (its fields, its json), with ``RecordCheck``, the one validator of ``augment verify`` and the trainer;
- ``shards``: the tar shard I/O (the deterministic writer, the bounded reader of local files, URLs and pipes);
- ``encode``: the codecs (the fixed JPEG/PNG encoder settings, the header checks and the bounded decoders);
- ``verify``: the check of a whole build (checksums, records, counts), run by ``augment verify`` and ``train fit
  --verify``;
- ``cli_errors``: the exit codes and the one-line error types both command lines share.
- ``files``: the one temp-file-then-rename writer (shards, manifest, journal, checkpoints, weights);
- ``zoo``: the classifiers ``train fit`` builds and writes checkpoints of, and ``--masks-from cam`` reads them into
  (their names, normalisations, weight files, and ``--device``): the checkpoint is the other file the stages share.

It imports nothing else of the project (tests/test_layout.py checks it), and it is the only part of ``augment``
that ``train`` imports: a record's fields come from the manifest, never from augment's method registry.
"""
