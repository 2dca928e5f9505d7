"""REPORT.html from REPORT.md: the same report as one self-contained file for a browser.

Every image the markdown references is embedded as a base64 `data:` URI and the only styling
is an inline <style>, so the file can be mailed or archived alone: it loads nothing (no
script, no external stylesheet, font or image).

The converter handles exactly the markdown that harness.report.render writes (no dependency):
ATX headings, GitHub pipe tables (tabulate's "github" format, `<br>` inside cells), paragraphs,
`- ` bullet lists, `> ` block quotes, images on a line of their own, and inline `code`,
**bold**, *italic*, [links](url) and ![images](path). Lines that are only a <details>,
</details> or <summary>...</summary> tag pass through, so collapsible sections keep working.
All other text is HTML-escaped: a `<script>` in a skip reason shows as text.
"""

from __future__ import annotations

import base64
import html as _html
import re
from pathlib import Path

HTML_NAME = "REPORT.html"

MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg",
        ".gif": "image/gif", ".svg": "image/svg+xml", ".webp": "image/webp"}

CSS = """
:root { color-scheme: light; }
body { font: 15px/1.5 -apple-system, "Segoe UI", Roboto, "DejaVu Sans", Arial, sans-serif;
       color: #1f2328; background: #fff; margin: 0; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 28px 64px; }
h1 { font-size: 1.9em; border-bottom: 2px solid #d0d7de; padding-bottom: .3em; }
h2 { font-size: 1.45em; border-bottom: 1px solid #d0d7de; padding-bottom: .25em;
     margin-top: 2em; }
h3 { font-size: 1.15em; margin-top: 1.5em; }
a { color: #0969da; }
code { font: .86em/1.4 ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace;
       background: #f3f4f6; border-radius: 4px; padding: .1em .3em;
       overflow-wrap: anywhere; }
.table { overflow-x: auto; margin: 1em 0; }
table { border-collapse: collapse; font-size: .9em; }
th, td { border: 1px solid #d0d7de; padding: 5px 9px; text-align: left;
         vertical-align: top; }
th { background: #f6f8fa; font-weight: 600; }
tbody tr:nth-child(even) { background: #fafbfc; }
tbody tr:hover { background: #eef4ff; }
img { max-width: 100%; height: auto; display: block; margin: .5em 0 1.2em;
      border: 1px solid #eaeef2; }
blockquote { margin: 1em 0; padding: .6em 1em; border-left: 4px solid #d1242f;
             background: #fff5f5; }
ul { padding-left: 1.6em; }
li { margin: .25em 0; }
details { border: 1px solid #d0d7de; border-radius: 6px; padding: .4em .9em; margin: 1em 0; }
summary { cursor: pointer; font-weight: 600; }
.missing { color: #d1242f; font-style: italic; }
@media print { .table { overflow: visible; } tbody tr:hover { background: none; } }
""".strip()

_PASS_THROUGH = re.compile(r"\s*(<details(?: open)?>|</details>)\s*")
_SUMMARY = re.compile(r"\s*<summary>(.*)</summary>\s*")
_HEADING = re.compile(r"(#{1,6})\s+(.*?)\s*#*\s*")
_TABLE_RULE = re.compile(r"\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?\s*")
_INLINE = re.compile(
    r"(?P<code>`+)(?P<code_text>.+?)(?P=code)"
    r"|!\[(?P<img_alt>[^\]]*)\]\((?P<img_src>[^)\s]+)\)"
    r"|\[(?P<link_text>[^\]]+)\]\((?P<link_href>[^)\s]+)\)"
    r"|(?P<br><br\s*/?>)"
    r"|\*\*(?P<bold>.+?)\*\*"
    r"|\*(?P<em>[^*\s](?:[^*]*[^*\s])?)\*")


def html_path(md_path: str | Path) -> Path:
    """Where render_html puts the HTML version of `md_path` (REPORT.html beside it)."""
    return Path(md_path).with_name(HTML_NAME)


def render_html(md_path: str | Path, out_path: str | Path | None = None) -> Path:
    """Write the HTML version of the markdown report `md_path` (default: REPORT.html beside
    it); images are read relative to the markdown's directory. Returns the HTML path."""
    md_path = Path(md_path)
    out = Path(out_path) if out_path is not None else html_path(md_path)
    text = md_path.read_text(encoding="utf-8")
    out.write_text(markdown_to_html(text, md_path.parent), encoding="utf-8")
    return out


def markdown_to_html(text: str, base_dir: str | Path) -> str:
    """The whole HTML document for the markdown `text` (images resolved under base_dir)."""
    conv = _Converter(Path(base_dir))
    body = conv.blocks(text.splitlines())
    title = conv.title or "rarebench report"
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{_html.escape(title)}</title>\n<style>\n{CSS}\n</style>\n</head>\n"
            f"<body>\n<main>\n{body}\n</main>\n</body>\n</html>\n")


class _Converter:
    def __init__(self, base_dir: Path) -> None:
        self.base_dir = base_dir
        self.title: str | None = None
        self.slugs: dict[str, int] = {}

    # -- blocks ------------------------------------------------------------------------------
    def blocks(self, lines: list[str]) -> str:
        out: list[str] = []
        i = 0
        while i < len(lines):
            line = lines[i]
            if not line.strip():
                i += 1
                continue
            if m := _PASS_THROUGH.fullmatch(line):
                out.append(m.group(1))
                i += 1
            elif m := _SUMMARY.fullmatch(line):
                out.append(f"<summary>{self.inline(m.group(1))}</summary>")
                i += 1
            elif m := _HEADING.fullmatch(line):
                out.append(self.heading(len(m.group(1)), m.group(2)))
                i += 1
            elif (line.lstrip().startswith("|") and i + 1 < len(lines)
                  and _TABLE_RULE.fullmatch(lines[i + 1])):
                j = i + 2
                while j < len(lines) and lines[j].lstrip().startswith("|"):
                    j += 1
                out.append(self.table(lines[i], lines[i + 2:j]))
                i = j
            elif line.startswith(("- ", "* ")):
                items = []
                while i < len(lines) and lines[i].startswith(("- ", "* ")):
                    item = [lines[i][2:]]
                    i += 1
                    while i < len(lines) and lines[i].startswith("  ") and lines[i].strip():
                        item.append(lines[i].strip())  # a continuation line of the item
                        i += 1
                    items.append(f"<li>{self.inline(' '.join(item))}</li>")
                out.append("<ul>\n" + "\n".join(items) + "\n</ul>")
            elif line.startswith(">"):
                quoted = []
                while i < len(lines) and lines[i].startswith(">"):
                    quoted.append(lines[i][1:].removeprefix(" "))
                    i += 1
                out.append(f"<blockquote>\n{self.blocks(quoted)}\n</blockquote>")
            else:
                para = []
                while i < len(lines) and lines[i].strip() and not self._starts_block(lines, i):
                    para.append(lines[i].strip())
                    i += 1
                out.append(f"<p>{self.inline(chr(10).join(para))}</p>")
        return "\n".join(out)

    def _starts_block(self, lines: list[str], i: int) -> bool:
        line = lines[i]
        return bool(_PASS_THROUGH.fullmatch(line) or _SUMMARY.fullmatch(line)
                    or _HEADING.fullmatch(line) or line.startswith(("- ", "* ", ">"))
                    or (line.lstrip().startswith("|") and i + 1 < len(lines)
                        and _TABLE_RULE.fullmatch(lines[i + 1])))

    def heading(self, level: int, text: str) -> str:
        plain = _plain(text)
        if level == 1 and self.title is None:
            self.title = plain
        slug = re.sub(r"[^a-z0-9]+", "-", plain.lower()).strip("-") or "section"
        n = self.slugs.get(slug, 0)
        self.slugs[slug] = n + 1
        anchor = slug if n == 0 else f"{slug}-{n}"
        return f'<h{level} id="{anchor}">{self.inline(text)}</h{level}>'

    def table(self, header: str, rows: list[str]) -> str:
        head = "".join(f"<th>{self.inline(c)}</th>" for c in _cells(header))
        body = "\n".join("<tr>" + "".join(f"<td>{self.inline(c)}</td>" for c in _cells(r))
                         + "</tr>" for r in rows)
        return (f'<div class="table"><table>\n<thead><tr>{head}</tr></thead>\n'
                f"<tbody>\n{body}\n</tbody>\n</table></div>")

    # -- inline ------------------------------------------------------------------------------
    def inline(self, text: str) -> str:
        out, pos = [], 0
        for m in _INLINE.finditer(text):
            out.append(_html.escape(text[pos:m.start()]))
            pos = m.end()
            if m.group("code"):
                out.append(f"<code>{_html.escape(m.group('code_text').strip())}</code>")
            elif m.group("img_src") is not None:
                out.append(self.image(m.group("img_alt"), m.group("img_src")))
            elif m.group("link_href") is not None:
                out.append(self.link(m.group("link_text"), m.group("link_href")))
            elif m.group("br"):
                out.append("<br>")
            elif m.group("bold") is not None:
                out.append(f"<strong>{self.inline(m.group('bold'))}</strong>")
            else:
                out.append(f"<em>{self.inline(m.group('em'))}</em>")
        out.append(_html.escape(text[pos:]))
        return "".join(out)

    def image(self, alt: str, src: str) -> str:
        """The image as a data: URI. Only files under the report's directory are read; a
        missing or outside one is named in the text instead of a broken link."""
        path = (self.base_dir / src).resolve()
        base = self.base_dir.resolve()
        mime = MIME.get(path.suffix.lower())
        if mime is None or not path.is_relative_to(base) or not path.is_file():
            why = "not an image" if mime is None else "missing"
            return (f'<span class="missing">[figure {_html.escape(alt)}: '
                    f"{_html.escape(src)} {why}]</span>")
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        return (f'<img alt="{_html.escape(alt)}" title="{_html.escape(src)}" '
                f'src="data:{mime};base64,{data}">')

    def link(self, text: str, href: str) -> str:
        """Web and in-page links stay links; a link to a file beside the report (which the
        single HTML file does not carry) is shown as its text and path."""
        if href.startswith(("http://", "https://", "#")):
            return f'<a href="{_html.escape(href)}">{self.inline(text)}</a>'
        return f"{self.inline(text)} (<code>{_html.escape(href)}</code>)"


def _cells(row: str) -> list[str]:
    row = row.strip()
    if row.startswith("|"):
        row = row[1:]
    if row.endswith("|"):
        row = row[:-1]
    return [c.strip() for c in row.split("|")]


def _plain(text: str) -> str:
    """Heading text without markup (the document title, anchor ids)."""
    return re.sub(r"[`*]", "", text).strip()
