"""How two builds differ: ``augment info --diff A B``, and the refusal to resume a build of another command."""

from __future__ import annotations

import json
import shlex
from typing import Any

# Keys whose differences are listed shard by shard rather than value by value.
BULKY = {"splits"}


def short(value: Any, width: int = 72) -> str:
    """A value on one line; long strings (commands, paths) stay whole, since their difference may be at the end."""
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= width or isinstance(value, str) else text[: width - 3] + "..."


def without_out(command: str) -> str:
    """The canonical command without its ``--out`` folder: two builds in two folders can still be the same build."""
    words = shlex.split(command)
    if "--out" in words:
        i = words.index("--out")
        del words[i : i + 2]
    return shlex.join(words)


def diff_dicts(a: Any, b: Any, prefix: str = "") -> list[str]:
    """``key.path: A -> B`` for every leaf that differs (a key missing on one side shows as ``(absent)``)."""
    if isinstance(a, dict) and isinstance(b, dict):
        lines = []
        for key in [*a, *(k for k in b if k not in a)]:
            where = f"{prefix}{key}"
            if key not in b:
                lines.append(f"{where}: {short(a[key])} -> (absent)")
            elif key not in a:
                lines.append(f"{where}: (absent) -> {short(b[key])}")
            else:
                lines.extend(diff_dicts(a[key], b[key], where + "."))
        return lines
    return [] if a == b else [f"{prefix.rstrip('.')}: {short(a)} -> {short(b)}"]


def diff_builds(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """Differences of two manifests: provenance and options key by key, then counts and shards per split."""
    a, b = ({**m, "command": without_out(m.get("command", ""))} for m in (a, b))
    lines = diff_dicts({k: v for k, v in a.items() if k not in BULKY}, {k: v for k, v in b.items() if k not in BULKY})
    for split in [*a["splits"], *(s for s in b["splits"] if s not in a["splits"])]:
        if split not in b["splits"] or split not in a["splits"]:
            lines.append(f"splits.{split}: only in {'A' if split in a['splits'] else 'B'}")
            continue
        sa, sb = a["splits"][split], b["splits"][split]
        lines += diff_dicts(
            {k: v for k, v in sa.items() if k != "shards"},
            {k: v for k, v in sb.items() if k != "shards"},
            f"splits.{split}.",
        )
        shards_a = {s["path"]: s["sha256"] for s in sa["shards"]}
        shards_b = {s["path"]: s["sha256"] for s in sb["shards"]}
        same = sum(shards_a[p] == shards_b.get(p) for p in shards_a)
        if same != len(shards_a) or len(shards_a) != len(shards_b):
            lines.append(
                f"splits.{split}.shards: {same} identical, {len(shards_a) - same} of A's {len(shards_a)} "
                f"differ or are absent in B ({len(shards_b)} shards)"
            )
    return lines
