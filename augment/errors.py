"""The errors a build stops with; the CLI turns them into one line and an exit code."""

from __future__ import annotations


class BuildError(Exception):
    """A build that cannot go on; the message names the sample or file and the fix."""


class OutFolderError(BuildError):
    """``--out`` cannot be used as it is (a usage error: exit code 2)."""
