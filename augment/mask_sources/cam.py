"""``cam``: placeholder, written by the CAM work of issue #16."""
