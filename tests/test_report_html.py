"""REPORT.html: the same report as one self-contained file, checked as parsed HTML and as a
headless Chromium renders it (skipped, with the install line, where no Chromium is found)."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from harness.report.html import markdown_to_html, render_html
from harness.report.render import SUMMARY_FIGURE, render_report
from harness.report.schema import empty_results
from harness.stats.result import TestResult

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "reports" / "default-run"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
EVIL = "<script>alert('x')</script> & <b>not bold</b>"
CLAIM_TITLES = ["Claim 1: Dual regimes", "Claim 2: No clustering", "Claim 3: No routing"]
BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def _record(claim, model, p, effect, verdict="supported", figures=None, **details):
    res = TestResult(f"{claim} test", 2.0, p, effect, effect - 0.5, effect + 0.5, verdict,
                     effect_name="d", details=details)
    return {"nodeid": f"claims/test_{claim}.py::test[{model}]", "claim": claim, "model": model,
            "revision": None, "seed": 0, "settings": {"rarity": {"which": "target", "q": 15.0}},
            "result": res.to_dict(), "calibration": {"power": 0.85, "fpr": 0.05},
            "figures": figures or {}, "wall_time_s": 1.5, "test_outcome": "passed"}


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """A rendered report with a figure per claim-1 record, a caveat and a skip reason that
    carry HTML, and REPORT.html beside REPORT.md."""
    import matplotlib.pyplot as plt

    run = tmp_path_factory.mktemp("run")
    figures = {}
    for i, model in enumerate(["tiny-gpt2", "tiny-pythia"]):
        rel = f"figures/t{i}/curve.png"
        (run / rel).parent.mkdir(parents=True)
        plt.imsave(run / rel, np.linspace(0, 1, 40 * 60).reshape(40, 60) * (i + 1) % 1)
        figures[model] = {"curve": rel}
    results = empty_results("run-h", {"models": ["tiny-gpt2", "tiny-pythia"]},
                            {"packages": {"torch": "2.13.0"}})
    results["claims"] = [
        _record("dual-regimes", "tiny-gpt2", 0.01, 2.0, figures=figures["tiny-gpt2"]),
        _record("dual-regimes", "tiny-pythia", 0.04, 1.0, figures=figures["tiny-pythia"]),
        _record("no-clustering", "tiny-gpt2", None, 0.1, "untestable", message=EVIL),
        _record("no-routing", "tiny-gpt2", 0.3, 0.0, "inconclusive"),
    ]
    results["skipped"] = [{"nodeid": "claims/test_no_routing.py::test[gpt2-xl]",
                           "claim": "no-routing", "model": "gpt2-xl", "seed": 0,
                           "reason": f"weights absent {EVIL}"}]
    out = run / "out"
    md = render_report(results, out, source_dir=run)
    return md, md.with_name("REPORT.html")


class _Tree(HTMLParser):
    """Start tags with their attributes, the text inside each element kind, the headings and
    the tables (rows of cell texts)."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.stack: list[str] = []
        self.text_in: dict[str, list[str]] = {}
        self.heads: list[tuple[int, str]] = []
        self.tables: list[list[list[str]]] = []
        self.all_text: list[str] = []
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag in ("img", "br", "meta"):
            return
        self.stack.append(tag)
        if re.fullmatch(r"h[1-6]", tag):
            self.heads.append((int(tag[1]), ""))
        elif tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self.tables[-1][-1].append("")

    def handle_endtag(self, tag):
        if tag in self.stack:
            while self.stack.pop() != tag:
                pass

    def handle_data(self, data):
        self.all_text.append(data)
        for tag in set(self.stack):
            self.text_in.setdefault(tag, []).append(data)
        if any(re.fullmatch(r"h[1-6]", t) for t in self.stack):
            level, text = self.heads[-1]
            self.heads[-1] = (level, text + data)
        if "td" in self.stack or "th" in self.stack:
            self.tables[-1][-1][-1] += data

    def headings(self, level: int) -> list[str]:
        return [text.strip() for n, text in self.heads if n == level]

    def images(self) -> list[dict]:
        return [a for t, a in self.tags if t == "img"]


def _tree(text: str) -> _Tree:
    return _Tree(text)


def _md_images(md: Path) -> list[str]:
    return re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", md.read_text(encoding="utf-8"))


def _decode(src: str) -> bytes:
    head, _, data = src.partition(",")
    assert head == "data:image/png;base64", head[:40]
    return base64.b64decode(data, validate=True)


def _glance(tree: _Tree) -> list[list[str]]:
    return tree.tables[0]  # the first table of the report is the glance (checked below)


# -- parsed HTML ------------------------------------------------------------------------------
def test_render_report_writes_html_beside_markdown(report):
    md, html = report
    assert html.is_file() and html.parent == md.parent
    assert render_html(md, md.parent / "again.html").read_text() == html.read_text()


@pytest.mark.parametrize("which", ["fixture", "committed example"])
def test_html_is_self_contained(report, which):
    html = report[1] if which == "fixture" else EXAMPLE / "REPORT.html"
    text = html.read_text(encoding="utf-8")
    tree = _tree(text)
    tags = {t for t, _ in tree.tags}
    assert not tags & {"script", "link", "iframe", "object", "embed", "base", "frame",
                       "audio", "video", "source"}
    for tag, attrs in tree.tags:
        assert not any(k.startswith("on") for k in attrs), (tag, attrs)  # no inline handlers
        if "src" in attrs:
            assert attrs["src"].startswith("data:"), (tag, attrs["src"][:80])
        if "href" in attrs:
            assert tag == "a" and attrs["href"].startswith(("#", "http://", "https://")), \
                (tag, attrs["href"])
        for key in ("srcset", "poster", "data", "action", "background"):
            assert key not in attrs, (tag, key)
    style = "".join(tree.text_in.get("style", []))
    assert style and "url(" not in style and "@import" not in style
    assert "style" not in {k for _, a in tree.tags for k in a}  # the CSS is the one <style>


@pytest.mark.parametrize("which", ["fixture", "committed example"])
def test_every_markdown_image_is_embedded_as_png(report, which):
    md = report[0] if which == "fixture" else EXAMPLE / "REPORT.md"
    refs = _md_images(md)
    if which == "fixture":
        assert SUMMARY_FIGURE in refs and len(refs) == 3
    else:  # the forest plot plus every figure the run's results.json lists
        results = json.loads((EXAMPLE / "results.json").read_text())
        n_figures = sum(len(r.get("figures") or {}) for r in results["claims"])
        assert SUMMARY_FIGURE in refs and len(refs) == 1 + n_figures > 10
    imgs = _tree(md.with_name("REPORT.html").read_text(encoding="utf-8")).images()
    assert [i["title"] for i in imgs] == refs  # each in the markdown's order
    for ref, img in zip(refs, imgs):
        data = _decode(img["src"])
        assert data.startswith(PNG_SIGNATURE)
        assert data == (md.parent / ref).read_bytes()


def test_claim_sections_and_glance_table(report):
    md, html = report
    tree = _tree(html.read_text(encoding="utf-8"))
    assert tree.headings(1) == ["rarebench results: run run-h"]
    h2 = tree.headings(2)
    assert h2[0] == "At a glance" and h2[-1] == "Manifest"
    assert [h for h in h2 if h.startswith("Claim")] == CLAIM_TITLES
    assert "Summary" in h2 and "Run settings" in h2
    assert 'id="claim-1-dual-regimes"' in html.read_text()  # in-page anchors
    glance = _glance(tree)
    assert glance[0] == ["claim", "tiny-gpt2", "tiny-pythia"]
    assert [row[0] for row in glance[1:]] == CLAIM_TITLES
    assert glance[1][1].startswith("supported 2 [1.5, 2.5], power")
    assert glance[2][2] == "-"  # no claim-2 record of tiny-pythia
    # every table row of the markdown is a row of an HTML table (header + body rows)
    md_rows = [line for line in md.read_text().splitlines()
               if line.startswith("|") and not set(line) <= set("|-: ")]
    assert sum(len(t) for t in tree.tables) == len(md_rows)


def test_markup_is_converted_and_other_text_escaped(report):
    text = report[1].read_text(encoding="utf-8")
    tree = _tree(text)
    assert not any(t in ("script", "b") for t, _ in tree.tags)
    shown = "".join(tree.all_text)
    assert f"tiny-gpt2, seed 0, target q15: {EVIL}" in shown  # the caveat, as text
    assert f"weights absent {EVIL}" in shown  # the skip reason, as text
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in text
    tags = [t for t, _ in tree.tags]
    assert {"strong", "em", "code", "ul", "li", "table", "thead", "tbody"} <= set(tags)
    assert "**" not in shown and "![" not in shown  # no markdown left over


def test_details_blocks_pass_through_and_their_content_is_converted(tmp_path):
    md = ("# r\n\n<details>\n<summary>More <b>x</b> `code`</summary>\n\n"
          "| a | b |\n|---|---|\n| 1 | **2**<br>3 |\n\n- item <i>\n\n</details>\n\n"
          "> **INTERRUPTED.** stopped\n\ntext [site](https://example.org) [file](results.json)\n"
          "![gone](figures/none.png) ![out](../outside.png)\n")
    tree = _tree(markdown_to_html(md, tmp_path))
    tags = [t for t, _ in tree.tags]
    assert tags.count("details") == 1 and tags.count("summary") == 1 and "b" not in tags
    assert tree.tables == [[["a", "b"], ["1", "23"]]] and "br" in tags and "strong" in tags
    assert "".join(tree.text_in["li"]) == "item <i>"
    assert "blockquote" in tags
    assert [a["href"] for t, a in tree.tags if t == "a"] == ["https://example.org"]
    assert not tree.images()  # missing / outside images are named, not linked
    shown = "".join(tree.all_text)
    assert "[figure gone: figures/none.png missing]" in shown
    assert "[figure out: ../outside.png missing]" in shown
    assert "file (results.json)" in shown


def test_committed_example_html_is_current():
    """reports/default-run/REPORT.html is what render_html makes of its REPORT.md today
    (re-make it with `rarebench report reports/default-run/results.json`)."""
    expected = markdown_to_html((EXAMPLE / "REPORT.md").read_text(encoding="utf-8"), EXAMPLE)
    assert (EXAMPLE / "REPORT.html").read_text(encoding="utf-8") == expected


# -- headless browser -------------------------------------------------------------------------
def _browser() -> str:
    for name in BROWSERS:
        if path := shutil.which(name):
            return path
    pytest.skip("no headless Chromium on PATH (looked for " + ", ".join(BROWSERS) + "); "
                "install it to render REPORT.html in this test: apt-get install -y chromium")


def _chromium(browser: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp_path / "profile"
    return subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu",
                           "--hide-scrollbars", "--no-first-run", "--disable-extensions",
                           f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=180, check=False)


def test_html_renders_in_headless_chromium(report, tmp_path):
    browser = _browser()
    md, html = report
    # the DOM as the browser built it, after load; a copy of the page gets a probe script
    # that writes each <img>'s decoded width into the DOM (REPORT.html itself has no script)
    probe = tmp_path / "probe.html"
    probe.write_text(html.read_text(encoding="utf-8").replace(
        "</body>", "<script>window.addEventListener('load', function () {"
        "document.body.setAttribute('data-widths', Array.prototype.map.call("
        "document.images, function (i) { return i.complete ? i.naturalWidth : -1; })"
        ".join(','));});</script></body>"), encoding="utf-8")
    proc = _chromium(browser, tmp_path, "--virtual-time-budget=5000", "--dump-dom",
                     probe.as_uri())
    assert proc.returncode == 0, proc.stderr[-2000:]
    tree = _tree(proc.stdout)
    assert [row[0] for row in _glance(tree)[1:]] == CLAIM_TITLES
    assert _glance(tree) == _glance(_tree(html.read_text(encoding="utf-8")))
    [body] = [a for t, a in tree.tags if t == "body"]
    widths = [int(w) for w in body["data-widths"].split(",")]
    assert len(widths) == len(_md_images(md)) == len(tree.images())
    assert all(w > 0 for w in widths), widths  # every image decoded
    assert all(i["src"].startswith("data:image/png;base64,") for i in tree.images())

    from PIL import Image

    shot = tmp_path / "shot.png"
    proc = _chromium(browser, tmp_path, f"--screenshot={shot}", "--window-size=1200,3000",
                     html.as_uri())
    assert proc.returncode == 0 and shot.is_file(), proc.stderr[-2000:]
    with Image.open(shot) as im:
        assert im.size == (1200, 3000)
        pixels = np.asarray(im.convert("RGB"))
    colours = np.unique(pixels.reshape(-1, 3), axis=0)
    assert len(colours) > 50  # text, tables and figures, not a blank page
    dark = (pixels.sum(axis=2) < 200).mean()
    assert 0.001 < dark < 0.5  # some dark text on a light page
