"""Pretrained inpainting networks from a local file, run batched on ``--device``: the code behind ``--infill lama``
(:mod:`augment.inpainters.lama`, a TorchScript file) and ``--infill migan`` (:mod:`augment.inpainters.migan`, an ONNX
file), with what they share in :mod:`augment.inpainters.common`. The methods in ``augment/infill/`` only plug these
into the registry (``ModelInfill``), as ``augment/infill/cagan.py`` does for CAGAN.

Each network gets the image with its hole, in the code base's convention (``hole == True``: replace this pixel),
converted to what the network expects, and its output is pasted into the hole only: every pixel outside the hole
is returned unchanged, bit for bit. Nothing is shipped and nothing is downloaded: the user names the file
(``--lama-weights``, ``--migan-weights``), and the manifest records its path, sha256, metadata and the device.

**Trust: these files are programs, and loading one trusts it.**

- A TorchScript file holds code as well as weights. ``torch.jit.load`` runs some of it while loading (a module's
  TorchScript ``__setstate__``), and calling the module runs its ``forward``. TorchScript cannot call Python, but it
  can call every registered operator, and some operators touch the file system: ``torch.from_file`` reads any file
  the process can read, and with ``shared=True`` creates or overwrites a file through a shared memory mapping.
  Both were checked on torch 2.14.1, at load time (from ``__setstate__``) and at run time. We know of no built-in
  operator that starts a process or opens a network connection, but operators registered by any other library
  loaded in the process (torchvision's, for one) are callable too, and a crafted archive may reach bugs in the
  deserializer. Checking a file (``augment build`` does it before any work) loads it, so the check trusts it too.
- An ONNX file is a graph of operators that ONNX Runtime implements itself; it can run other code only through
  custom-operator libraries registered on the session (``SessionOptions.register_custom_ops_library``), which this
  code never does. A graph may name external data files, which onnxruntime 1.32 reads only from the model's own
  folder (it refuses absolute paths and paths that leave the folder; checked). A crafted file may still reach bugs
  in the parser or in an operator.

So: load only files from a source you trust. The code loads only the files the user names, and the manifest
records each file's sha256, so a build says exactly which program made its images.
"""
