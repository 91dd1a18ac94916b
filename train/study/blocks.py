"""The report as a list of blocks (heading, paragraph, table, image, code), rendered twice: as Markdown with the
figures beside it, and as one self-contained HTML file with the figures embedded."""

from __future__ import annotations

import base64
import html
from pathlib import Path


class Blocks(list):
    """The report's content, renderable as Markdown and HTML."""

    def h(self, text: str, level: int = 2) -> None:
        self.append(("h", level, text))

    def p(self, text: str) -> None:
        self.append(("p", text))

    def table(self, header: list[str], rows: list[list[str]]) -> None:
        self.append(("table", header, rows))

    def img(self, path: Path, alt: str) -> None:
        self.append(("img", path, alt))

    def code(self, text: str) -> None:
        self.append(("code", text))

    def markdown(self) -> str:
        out = []
        for block in self:
            kind = block[0]
            if kind == "h":
                out.append("#" * block[1] + " " + block[2])
            elif kind == "p":
                out.append(block[1])
            elif kind == "table":
                out += ["| " + " | ".join(block[1]) + " |", "|" + "---|" * len(block[1])]
                out += ["| " + " | ".join(r) + " |" for r in block[2]]
            elif kind == "img":
                out.append(f"![{block[2]}]({block[1].name})")
            elif kind == "code":
                out.append("```\n" + block[1] + "\n```")
            out.append("")
        return "\n".join(out)

    def html(self, title: str) -> str:
        def inline(text: str) -> str:  # `code` and **bold**, the only Markdown the blocks use
            parts = html.escape(text).split("`")
            text = "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))
            parts = text.split("**")
            return "".join(f"<b>{p}</b>" if i % 2 else p for i, p in enumerate(parts))

        body = []
        for block in self:
            kind = block[0]
            if kind == "h":
                body.append(f"<h{block[1]}>{inline(block[2])}</h{block[1]}>")
            elif kind == "p":
                body.append(f"<p>{inline(block[1])}</p>")
            elif kind == "table":
                head = "".join(f"<th>{inline(c)}</th>" for c in block[1])
                rows = "".join("<tr>" + "".join(f"<td>{inline(c)}</td>" for c in r) + "</tr>" for r in block[2])
                body.append(f"<table><tr>{head}</tr>{rows}</table>")
            elif kind == "img":
                data = base64.b64encode(block[1].read_bytes()).decode()
                body.append(f'<p><img alt="{html.escape(block[2])}" src="data:image/png;base64,{data}"></p>')
            elif kind == "code":
                body.append(f"<pre>{html.escape(block[1])}</pre>")
        style = (
            "body{font-family:sans-serif;max-width:70em;margin:2em auto}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}img{max-width:100%}"
        )
        return (
            f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n"
        )
