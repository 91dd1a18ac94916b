"""``sam``: placeholder, written by the SAM work of issue #16."""
