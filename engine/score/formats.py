"""Reading score files of every supported format into a `ScoreDocument`, safely.

The format comes from the file name's extension and must agree with the content: a MIDI file named
`.musicxml` is refused with a message that says so, rather than guessed at. XML is parsed with
defusedxml first (no entity expansion, no external fetch), and compressed MusicXML is read in
memory with bounds on its size, so a hostile upload cannot exhaust memory or touch the disk.
"""
from __future__ import annotations

import codecs
import io
import re
import zipfile
from pathlib import Path, PurePosixPath

import defusedxml.ElementTree as SafeET
import music21
from defusedxml import DefusedXmlException

from engine.errors import ScoreError, describe
from engine.score.document import ScoreDocument
from engine.score.limits import MAX_MEASURES, MAX_PARTS, check_abc, check_humdrum, check_midi, check_musicxml

MAX_FILE_BYTES = 20 * 1024 * 1024
"""Largest score file accepted (20 MiB: an orchestral MusicXML score is a few MiB)."""
MAX_UNPACKED_BYTES = 64 * 1024 * 1024
"""Largest MusicXML accepted inside an .mxl archive."""
MAX_ARCHIVE_MEMBERS = 256

INPUT_FORMATS = {
    ".musicxml": "musicxml",
    ".xml": "musicxml",
    ".mxl": "mxl",
    ".abc": "abc",
    ".krn": "humdrum",
    ".mid": "midi",
    ".midi": "midi",
}


def read_score_file(path: str | Path) -> ScoreDocument:
    """Read a score file from disk; the extension chooses the reader."""
    path = Path(path)
    return read_score(read_file_bytes(path), path.name)


def read_file_bytes(path: Path) -> bytes:
    """A score file's bytes, refused by its size before it is read."""
    if not path.is_file():
        raise ScoreError(f"{path.name}: no such file")
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise ScoreError(f"{path.name} is {size / 2**20:.1f} MiB; the limit is {MAX_FILE_BYTES // 2**20} MiB")
    return path.read_bytes()


def read_score(data: bytes, filename: str) -> ScoreDocument:
    """Read score bytes named `filename` into a document, or raise `ScoreError` naming the problem."""
    document = ScoreDocument(musicxml=musicxml_of(data, filename), title=Path(filename).stem)
    _validate(document, Path(filename).name)
    return document


def musicxml_of(data: bytes, filename: str) -> str:
    """The MusicXML text `read_score` reads score bytes named `filename` as, before music21 parses it: a
    MusicXML file's own text (made UTF-8), or the conversion of another format."""
    name = Path(filename).name
    fmt = INPUT_FORMATS.get(Path(filename).suffix.lower())
    if fmt is None:
        known = ", ".join(sorted(INPUT_FORMATS))
        raise ScoreError(f"{name}: unsupported file type (use one of {known})")
    if len(data) > MAX_FILE_BYTES:
        raise ScoreError(f"{name} is {len(data) / 2**20:.1f} MiB; the limit is {MAX_FILE_BYTES // 2**20} MiB")
    if not data.strip():
        raise ScoreError(f"{name} is empty")
    found = _sniff(data)
    if found is not None and _family(found) != _family(fmt):
        raise ScoreError(f"{name} is named as {_FORMAT_NAMES[fmt]} but holds {_FORMAT_NAMES[found]}")
    if found == "mxl":
        content, member = _archive_content(data, name)
        musicxml = _checked_musicxml(content, f"{name} ({member})")
    elif fmt == "mxl" and found is None:
        raise ScoreError(f"{name} is not an .mxl (zip) archive (and not well-formed XML either)")
    elif fmt in ("musicxml", "mxl"):
        musicxml = _checked_musicxml(data, name)
    elif fmt == "abc":
        musicxml = _musicxml_from_abc(_decode_text(data, name), name)
    else:
        musicxml = _musicxml_from_music21(data, fmt, name)
    return musicxml


def score_to_musicxml(score: music21.stream.Score, in_place: bool = False) -> str:
    """MusicXML text of a music21 score (music21 writes MusicXML well, unlike ABC).

    music21's exporter first deep-copies the score to add rests and notation to the copy. With
    `in_place=True` it does the same steps on `score` itself, for a score the caller built and will
    throw away: the copy was a third of the inpainting round trip (`bench/measure_speed.py`).
    """
    exporter = music21.musicxml.m21ToXml.GeneralObjectExporter(score)
    if not in_place:
        return exporter.parse().decode("utf-8")
    # The exporter's own steps without its copy; `makeNotation` stays on, so each part's complex
    # durations are still split and its notation fixed up (turning it off skips those too).
    score.makeRests(refStreamOrTimeRange=[0.0, score.highestTime], fillGaps=True, inPlace=True, hideRests=True,
                    timeRangeFromBarDuration=True)
    return exporter.parseWellformedObject(exporter.fromScore(score)).decode("utf-8")


_FORMAT_NAMES = {
    "musicxml": "MusicXML",
    "mxl": "compressed MusicXML (.mxl)",
    "abc": "ABC notation",
    "humdrum": "Humdrum **kern",
    "midi": "MIDI",
}


def _family(fmt: str) -> str:
    """Plain and compressed MusicXML are one family: either extension may hold either."""
    return "musicxml" if fmt == "mxl" else fmt


def _sniff(data: bytes) -> str | None:
    """What the bytes look like, from their first characters; None when unsure (then the reader decides)."""
    head = data[:4096].lstrip(b"\xef\xbb\xbf \t\r\n")
    if head.startswith(b"MThd"):
        return "midi"
    if head.startswith(b"PK\x03\x04"):
        return "mxl"
    if head.startswith(b"<") or head.startswith(b"\xff\xfe<") or head.startswith(b"\xfe\xff\x00<"):
        return "musicxml"
    if head.startswith(b"**") or b"\n**kern" in head or head.startswith(b"!!"):
        return "humdrum"
    if head[:2] in (b"X:", b"T:", b"M:", b"L:", b"K:", b"%%", b"%a") or b"\nK:" in head:
        return "abc"
    return None


def _decode_text(data: bytes, name: str) -> str:
    """Text of a text format; binary data is refused here, since latin-1 would decode it and the
    lenient ABC and Humdrum readers would find "notes" in it."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError as exc:
            raise ScoreError(f"{name} is not valid UTF-16 text (byte {exc.start})") from None
    if _BINARY_BYTES.search(data[:65536]):
        raise ScoreError(f"{name} holds binary data, not text")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        try:
            return data.decode("latin-1")
        except UnicodeDecodeError as exc:  # pragma: no cover - latin-1 decodes every byte
            raise ScoreError(f"{name} is not a text file") from exc


_BINARY_BYTES = re.compile(rb"[\x00-\x08\x0e-\x1a\x1c-\x1f]")
"""Control characters no score text holds (tab, line breaks, form feed and escape are allowed)."""
_ABC_KEY_LINE = re.compile(r"^[ \t]*K:", re.MULTILINE)
_ABC_MUSIC_LINE = re.compile(r"^(?![A-Za-z]:|%)[^\n]*[A-Ga-g]", re.MULTILINE)
"""A line of notes after the header: neither a field nor a comment, with a note letter."""
_ABC_UNKNOWN_FIELD = re.compile(r"^[JYhijklnopqt]:[^\n]*\n?", re.MULTILINE)
"""Field letters ABC 2.1 does not define (and no note or music symbol starts a line with): the standard says
to ignore them, while abc2xml refuses the whole tune."""


def _checked_musicxml(data: bytes, name: str) -> str:
    """Parse with defusedxml (refusing entities and external references), check the root element and the
    sizes (`engine.score.limits`). The text comes back with a UTF-8 declaration, whatever the file's
    encoding was, since exports write it as UTF-8."""
    text = _xml_text(data, name)
    try:
        root = SafeET.fromstring(text.encode("utf-8"))
    except DefusedXmlException as exc:
        raise ScoreError(f"{name} declares XML entities or external references, which are refused") from exc
    except SafeET.ParseError as exc:
        raise ScoreError(f"{name} is not well-formed XML ({describe(exc)}); the file may be truncated") from exc
    if root.tag not in ("score-partwise", "score-timewise"):
        raise ScoreError(f"{name} is XML but not a MusicXML score (root element <{root.tag}>)")
    check_musicxml(root, name)
    return _METRONOME_WITHOUT_BEAT_UNIT.sub("", text)


_METRONOME_WITHOUT_BEAT_UNIT = re.compile(
    r"<direction-type>\s*<metronome\b[^>]*>(?:(?!</metronome>).)*?<beat-unit\s*(?:/>|>\s*</beat-unit>)"
    r"(?:(?!</metronome>).)*</metronome>\s*</direction-type>", re.DOTALL)
"""A metronome mark with an empty beat unit ("= 96" of nothing) is left out on reading; its `<sound tempo>`
still sets the tempo. music21 refused the whole score ("unknown MusicXML type: None": OpenScore Quartets,
Janacek, No. 2, violin 1, bar 88 of the finale)."""


_XML_ENCODING = re.compile(rb"""^\s*<\?xml[^>]*?encoding\s*=\s*["']([^"']*)["']""")
_XML_ENCODING_TEXT = re.compile(r"""^(\s*<\?xml[^>]*?encoding\s*=\s*["'])[^"']*(["'])""")


def _xml_text(data: bytes, name: str) -> str:
    """XML bytes decoded as their byte order mark or declaration says, the declaration then made UTF-8."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")) or data[:2] in (b"<\x00", b"\x00<"):
        encoding = "utf-16" if data[:1] in (b"\xff", b"\xfe") else ("utf-16-le" if data[:1] == b"<" else "utf-16-be")
    else:
        declared = _XML_ENCODING.match(data[:1024])
        encoding = declared.group(1).decode("ascii", "replace") if declared else "utf-8"
    try:
        codec = codecs.lookup(encoding).name
    except LookupError:
        raise ScoreError(f"{name} declares the text encoding {encoding[:40]!r}, which is unknown") from None
    try:
        text = data.decode("utf-8-sig" if codec == "utf-8" else codec)
    except UnicodeDecodeError as exc:
        raise ScoreError(f"{name} is not well-formed XML (not valid {encoding} text at byte {exc.start}); "
                         "the file may be damaged") from None
    return _XML_ENCODING_TEXT.sub(r"\g<1>UTF-8\g<2>", text.lstrip("\ufeff"), count=1)


def stored_musicxml(data: bytes, filename: str) -> str | None:
    """A MusicXML or .mxl file's score text as stored (decoded, its declaration made UTF-8), before what
    reading it repairs (`musicxml_of`); None for other formats. `training.roundtrip` compares the two."""
    if INPUT_FORMATS.get(Path(filename).suffix.lower()) not in ("musicxml", "mxl"):
        return None
    if _sniff(data) == "mxl":
        data = _archive_content(data, filename)[0]
    return _xml_text(data, filename)


def _archive_content(data: bytes, name: str) -> tuple[bytes, str]:
    """(the score file's bytes, its name) inside an .mxl zip, read in memory with bounds (no extraction,
    no path use)."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        members = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise ScoreError(f"{name} is not a readable .mxl archive ({describe(exc)})") from exc
    if len(members) > MAX_ARCHIVE_MEMBERS:
        raise ScoreError(f"{name} holds {len(members)} files; an .mxl archive holds a few")
    target = _archive_rootfile(archive, name)
    info = archive.getinfo(target)
    if info.flag_bits & 0x1:
        raise ScoreError(f"{name} is encrypted (password-protected); save it again without a password")
    if info.compress_type not in _ZIP_METHODS:
        raise ScoreError(f"{name} uses a compression method this app cannot unpack (method {info.compress_type}); "
                         "save it again as a standard .mxl")
    if info.file_size > MAX_UNPACKED_BYTES:
        raise ScoreError(f"{name} unpacks to {info.file_size / 2**20:.0f} MiB; the limit is {MAX_UNPACKED_BYTES // 2**20} MiB")
    try:
        with archive.open(info) as member:
            content = member.read(MAX_UNPACKED_BYTES + 1)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, RuntimeError, NotImplementedError) as exc:
        raise ScoreError(f"{name} is a damaged .mxl archive ({describe(exc)})") from exc
    if len(content) > MAX_UNPACKED_BYTES:
        raise ScoreError(f"{name} unpacks to more than {MAX_UNPACKED_BYTES // 2**20} MiB")
    return content, target


_ZIP_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA)


def _archive_rootfile(archive: zipfile.ZipFile, name: str) -> str:
    names = archive.namelist()
    if "META-INF/container.xml" in names:
        info = archive.getinfo("META-INF/container.xml")
        if info.file_size < 1_000_000:
            try:
                container = SafeET.fromstring(archive.read(info))
                for element in container.iter():
                    if element.tag.endswith("rootfile") and element.get("full-path") in names:
                        return _safe_member(element.get("full-path"), name)
            except (DefusedXmlException, SafeET.ParseError, zipfile.BadZipFile, RuntimeError, NotImplementedError,
                    LookupError, ValueError):
                pass  # an unreadable container: look for the score by its name instead
    for member in names:
        if member.lower().endswith((".xml", ".musicxml")) and not member.startswith("META-INF/"):
            return _safe_member(member, name)
    raise ScoreError(f"{name} holds no MusicXML file")


def _safe_member(member: str, name: str) -> str:
    path = PurePosixPath(member)
    if path.is_absolute() or ".." in path.parts or "\\" in member:
        raise ScoreError(f"{name} contains an unsafe path ({member!r}) and is refused")
    return member


def _musicxml_from_abc(text: str, name: str) -> str:
    """ABC through abc2xml, the converter NotaGen's pipeline uses (it reads multi-voice ABC properly)."""
    from engine.score.notagen_abc import abc_to_musicxml

    if not _ABC_KEY_LINE.search(text):
        raise ScoreError(f"{name} holds no ABC tune (an ABC tune header ends with a K: key line)")
    check_abc(text, name)
    try:
        musicxml = abc_to_musicxml(_ABC_UNKNOWN_FIELD.sub("", text))
    except ScoreError as exc:
        raise ScoreError(f"{name}: {exc}") from exc
    body = text.find("\n", _ABC_KEY_LINE.search(text).end())
    if body >= 0 and _ABC_MUSIC_LINE.search(text, body) and "<note" not in musicxml:
        raise ScoreError(f"{name}: no notes could be read from its music lines (is it ABC notation, saved as "
                         "UTF-8 text?)")
    return musicxml


def _musicxml_from_music21(data: bytes, fmt: str, name: str) -> str:
    if fmt == "midi":
        check_midi(data, name)
    else:
        text = _decode_text(data, name)
        check_humdrum(text, name)
    try:
        if fmt == "midi":
            parsed = music21.converter.parseData(data, format="midi", forceSource=True)
        else:
            parsed = music21.converter.parseData(text, format=fmt, forceSource=True)
    except Exception as exc:  # music21 raises many exception types for bad input
        raise ScoreError(f"{name} could not be read as {_FORMAT_NAMES[fmt]} ({describe(exc)})") from exc
    if isinstance(parsed, music21.stream.Opus):
        parsed = parsed.scores[0] if parsed.scores else None
    if fmt == "midi" and (parsed is None or not parsed.recurse().notes):
        raise ScoreError(f"{name} has no notes")
    if not isinstance(parsed, music21.stream.Score) or not parsed.parts:
        raise ScoreError(f"{name} holds no parts")
    try:
        return score_to_musicxml(parsed, in_place=True)
    except Exception as exc:  # music21 export of odd input
        raise ScoreError(f"{name} could not be converted to MusicXML ({describe(exc)})") from exc


def _validate(document: ScoreDocument, name: str) -> None:
    """Fail at import, not later: the document must parse and have at least one part and measure."""
    try:
        grid = document.grid
    except ScoreError as exc:
        raise ScoreError(f"{name}: {exc}") from exc
    except Exception as exc:  # music21 on unusual but well-formed input
        raise ScoreError(f"{name} could not be read ({describe(exc)})") from exc
    if not grid.parts or not grid.columns:
        raise ScoreError(f"{name} has no measures")
    if len(grid.parts) > MAX_PARTS or len(grid.columns) > MAX_MEASURES:
        raise ScoreError(f"{name} has {len(grid.parts):,} parts of {len(grid.columns):,} measures; the limits are "
                         f"{MAX_PARTS} parts and {MAX_MEASURES:,} measures")
