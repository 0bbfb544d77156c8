"""NotaGen's notation pipeline: MusicXML -> standard ABC -> interleaved / rest-reduced ABC, and back.

The official NotaGen checkpoints were trained on text made by `data/1_batch_xml2abc.py` (xml2abc with
`-d 8 -c 6 -x`) and `data/2_data_preprocess.py::abc_preprocess_pipeline` (thin glue around the
`abctoolkit` package). This module reproduces that text byte for byte (checked against the reference
fixtures in shared/fixtures/notagen_reference/preprocess/), quirks included, by calling abctoolkit's own
functions; `engine.score.notagen_repairs` changes it only where the official text is wrong. The reverse
path mirrors the official `inference.py::rest_unreduce` followed by abc2xml.

abctoolkit prints warnings to stdout/stderr and xml2abc/abc2xml keep module-level state; see
`abctoolkit_output` and the two locks below. Every failure is a `ScoreError` with a one-line message.
"""
from __future__ import annotations

import builtins
import io
import re
import threading
import warnings
import zipfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from fractions import Fraction
from types import MappingProxyType, SimpleNamespace

# abc2xml calls pyparsing's deprecated camelCase names (also while importing): that noise is not ours.
warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"abctoolkit\.")

import defusedxml.ElementTree as SafeET  # noqa: E402
from abctoolkit import abc2xml as _abc2xml  # noqa: E402
from abctoolkit import check as _check  # noqa: E402
from abctoolkit import duration as _duration  # noqa: E402
from abctoolkit import rotate as _rotate  # noqa: E402
from abctoolkit import transpose as _transpose  # noqa: E402
from abctoolkit import utils as _utils  # noqa: E402
from abctoolkit import xml2abc as _xml2abc  # noqa: E402
from abctoolkit.check import check_alignment_unrotated  # noqa: E402
from abctoolkit.duration import calculate_bartext_duration  # noqa: E402
from abctoolkit.rotate import rotate_abc  # noqa: E402
from abctoolkit.transpose import Key2index, Mode2Key, transpose_an_abc_text  # noqa: E402
from abctoolkit.utils import (  # noqa: E402
    Barline_regexPattern,
    Barlines,
    Quote_re,
    extract_barline_and_bartext_dict,
    extract_global_and_local_metadata,
    extract_metadata_and_parts,
    remove_bar_no_annotations,
    remove_information_field,
)
from defusedxml import DefusedXmlException  # noqa: E402
from unidecode import unidecode  # noqa: E402

from engine.errors import ScoreError  # noqa: E402
from engine.score.notagen_repairs import (  # noqa: E402 - also installs the xml2abc repairs
    escaped_line_breaks, plain_whitespace, tree_repairs,
)

#: The 15 keys the official pipeline writes a rest-reduced file for, in its order (`Key2index.keys()`).
KEYS: tuple[str, ...] = tuple(Key2index)

#: Information fields the official pipeline drops (`remove_information_field`).
DROPPED_FIELDS: tuple[str, ...] = ("X:", "T:", "C:", "W:", "w:", "Z:", "%%MIDI")

_MAX_MXL_MEMBER_BYTES = 64 * 1024 * 1024
_R_ANNOTATION = re.compile(r"^\[r:[^\]]*\]")
_VOICE_SEGMENT = re.compile(r"\[V:(\d+)\](.*?)(?=\[V:|$)")
_XML_ENCODING = re.compile(r"""^(\s*<\?xml[^>]*?\bencoding\s*=\s*)(["'])[^"']*\2""")

# ---------------------------------------------------------------------------------------------
# abctoolkit's output and global state
# ---------------------------------------------------------------------------------------------

_sinks = threading.local()
# (`getattr` keeps the real functions when this module is reloaded after the shims were installed.)
_original_xml2abc_info = getattr(_xml2abc.info, "original", _xml2abc.info)
_original_abc2xml_info = getattr(_abc2xml.info, "original", _abc2xml.info)
#: xml2abc keeps its output object in the module global `abcOut`; abc2xml keeps a module-level
#: `MusicXml` instance and a `prevloc` global. One conversion at a time per converter.
_XML2ABC_LOCK = threading.Lock()
_ABC2XML_LOCK = threading.Lock()


def _active_sink() -> list[str] | None:
    return getattr(_sinks, "sink", None)


def _print_shim(*args: object, sep: str | None = " ", end: str | None = "\n", file=None, flush: bool = False) -> None:
    sink = _active_sink()
    if sink is not None and file is None:
        sink.append((" " if sep is None else sep).join(map(str, args)))
        return
    builtins.print(*args, sep=sep, end=end, file=file, flush=flush)


def _xml2abc_info(s: str, warn: int = 1) -> None:
    sink = _active_sink()
    if sink is None:
        _original_xml2abc_info(s, warn)
    else:
        sink.append(str(s))


def _abc2xml_info(s: str, warn: int = 1) -> None:
    sink = _active_sink()
    if sink is None:
        _original_abc2xml_info(s, warn)
    else:
        sink.append(str(s))


# abctoolkit reports problems with bare print() (stdout) and xml2abc/abc2xml with info() (stderr).
# Shadowing those names in its modules lets a thread collect its own messages without touching
# sys.stdout/sys.stderr (redirecting those is process-wide, hence unsafe in a server). Outside
# `abctoolkit_output` the shims pass through unchanged.
for _module in (_utils, _check, _duration, _rotate, _transpose):
    _module.print = _print_shim  # type: ignore[attr-defined]
_xml2abc_info.original = _original_xml2abc_info  # type: ignore[attr-defined]
_abc2xml_info.original = _original_abc2xml_info  # type: ignore[attr-defined]
_xml2abc.info = _xml2abc_info
_abc2xml.info = _abc2xml_info


@contextmanager
def abctoolkit_output() -> Iterator[list[str]]:
    """Collect, for this thread only, what abctoolkit prints, so it never reaches the console.

    Nested uses each get their own messages, which are also passed on to the enclosing one.
    """
    previous = _active_sink()
    sink: list[str] = []
    _sinks.sink = sink
    try:
        yield sink
    finally:
        _sinks.sink = previous
        if previous is not None:
            previous.extend(sink)


def _one_line(text: object, limit: int = 200) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _readlines(text: str) -> list[str]:
    """Lines as `open(path, encoding='utf-8').readlines()` gives them (universal newlines)."""
    return io.StringIO(text, newline=None).readlines()


def _split_lines(text: str) -> list[str]:
    """`text.split('\\n')`, empty strings dropped, `'\\n'` put back: the official way to re-split text."""
    return [line + "\n" for line in text.split("\n") if line]


# ---------------------------------------------------------------------------------------------
# MusicXML -> ABC (xml2abc -d 8 -c 6 -x)
# ---------------------------------------------------------------------------------------------


def _xml2abc_options() -> SimpleNamespace:
    """The `options` xml2abc's command line builds for `-d 8 -c 6 -x` (every other option at its default)."""
    return SimpleNamespace(
        u=None, m=0, c=6, d=8, n=0, b=0, o="", v=0, x=True, p=[], j=None, t=None, s=None,
        v1=None, ped=True, stm=False, i=None,
    )


def _musicxml_bytes(musicxml: str | bytes) -> bytes:
    """The MusicXML document as bytes; a compressed .mxl (zip) is opened as xml2abc's command line does."""
    if isinstance(musicxml, str):
        # ElementTree mis-decodes a str whose declaration names another encoding: make them agree.
        return _XML_ENCODING.sub(r"\1\2utf-8\2", musicxml, count=1).encode("utf-8")
    if not musicxml.startswith(b"PK"):
        return musicxml
    try:
        with zipfile.ZipFile(io.BytesIO(musicxml)) as archive:
            names = archive.namelist()
            # xml2abc: the first member outside META-INF that ends in .xml; else the container's rootfile.
            member = next((n for n in names if n[:4] != "META" and n[-4:].lower() == ".xml"), None)
            if member is None and "META-INF/container.xml" in names:
                if archive.getinfo("META-INF/container.xml").file_size > _MAX_MXL_MEMBER_BYTES:
                    raise ScoreError("the .mxl archive's container.xml is too large")
                container = SafeET.fromstring(archive.read("META-INF/container.xml"))
                rootfile = container.find(".//{*}rootfile")
                member = rootfile.get("full-path") if rootfile is not None else None
            if member is None or member not in names:
                raise ScoreError("the .mxl archive holds no MusicXML file")
            if archive.getinfo(member).file_size > _MAX_MXL_MEMBER_BYTES:
                raise ScoreError("the MusicXML file inside the .mxl archive is too large")
            return archive.read(member)
    except (zipfile.BadZipFile, KeyError, ValueError, SafeET.ParseError, DefusedXmlException) as exc:
        raise ScoreError(f"cannot open the .mxl archive: {_one_line(exc)}") from exc


def xml_to_abc(musicxml: str | bytes) -> str:
    """Standard ABC as `xml2abc.py -d 8 -c 6 -x <file>` prints it (the official step 1), with the repairs
    of `engine.score.notagen_repairs`.

    Runs abctoolkit's xml2abc in-process (its `Parser` and `ABCoutput`, as its `__main__` does) and
    returns what the command line writes to stdout, trailing blank line included.
    """
    data = _musicxml_bytes(musicxml)
    try:  # refuse entity bombs and external entities before xml2abc's plain ElementTree sees the file
        SafeET.fromstring(data)
    except DefusedXmlException as exc:
        raise ScoreError(f"the MusicXML file is refused: {_one_line(exc)}") from exc
    except SafeET.ParseError as exc:
        raise ScoreError(f"the MusicXML file is not well-formed XML: {_one_line(exc)}") from exc
    options = _xml2abc_options()
    with _XML2ABC_LOCK, abctoolkit_output() as messages:
        out = io.StringIO()
        _xml2abc.abcOut = _xml2abc.ABCoutput("score.abc", "", 0, options)
        _xml2abc.abcOut.outfile = out
        try:
            _xml2abc.Parser(options).parse(io.BytesIO(data))
        except Exception as exc:  # xml2abc fails with arbitrary exceptions on odd MusicXML
            raise ScoreError(f"xml2abc cannot convert this MusicXML: {type(exc).__name__}: {_one_line(exc)}") from exc
        finally:
            _xml2abc.abcOut = None
    text = plain_whitespace(out.getvalue())
    if not text:
        reason = next((m for m in messages if "nothing written" in m), "it wrote nothing")
        raise ScoreError(f"xml2abc cannot convert this MusicXML: {_one_line(reason)}")
    return text


# ---------------------------------------------------------------------------------------------
# ABC -> cleaned lines (official abc_preprocess_pipeline, up to rotate_abc)
# ---------------------------------------------------------------------------------------------


def clean_abc(abc: str) -> list[str]:
    """The lines the official pipeline hands to `rotate_abc` and `transpose_an_abc_text`.

    Raises `ScoreError` where the official pipeline rejects the piece (voices with unequal bar counts,
    or ABC that abctoolkit cannot split into voices and bars).
    """
    lines = [line for line in _readlines(abc) if line.strip() != ""]
    # abctoolkit.convert.unidecode_abc_lines is exactly this; importing abctoolkit.convert would run a
    # shell (`os.popen('cd ' + os.getcwd())`) as an import side effect, so it is not imported.
    lines = [unidecode(line) for line in lines]
    lines = remove_information_field(abc_lines=lines, info_fields=list(DROPPED_FIELDS))
    try:
        lines = remove_bar_no_annotations(lines)
    except Exception as exc:  # abctoolkit raises a bare Exception when there is no `V:1` line
        raise ScoreError(f"the ABC has no voice `V:1` ({_one_line(exc)})") from exc

    # Escaped quotes inside annotations would break the quote regex: drop `\"` from body lines.
    for i, line in enumerate(lines):
        if re.search(r"^[A-Za-z]:", line) or line.startswith("%"):
            continue
        if r"\"" in line:
            lines[i] = lines[i].replace(r"\"", "")

    # A quoted text that contains a barline would split a bar: drop it.
    for i, line in enumerate(lines):
        for quote_content in re.findall(Quote_re, line):
            for barline in Barlines:
                if barline in quote_content:
                    line = line.replace(quote_content, "")
                    lines[i] = line

    # The official check: `check_alignment_unrotated` must succeed and report equal bar counts.
    with abctoolkit_output():
        try:
            bar_texts = extract_barline_and_bartext_dict(lines)[3]
        except Exception as exc:
            raise ScoreError(f"the ABC cannot be split into bars: {_one_line(exc) or type(exc).__name__}") from exc
        counts = {symbol: len(bars) for symbol, bars in bar_texts.items()}
        if len(set(counts.values())) > 1:  # the official check rejects this too (flag or IndexError)
            detail = ", ".join(f"{symbol} has {n}" for symbol, n in counts.items())
            raise ScoreError(f"the voices have unequal numbers of bars ({detail}); NotaGen's pipeline rejects the piece")
        try:
            _, bar_no_equal, _ = check_alignment_unrotated(lines)
        except Exception as exc:
            raise ScoreError(f"NotaGen's bar check fails on this ABC: {_one_line(exc) or type(exc).__name__}") from exc
    if not bar_no_equal:
        raise ScoreError("the voices have unequal numbers of bars; NotaGen's pipeline rejects the piece")

    # Text annotations: drop empty ones, squeeze repeated punctuation, drop those still over 40 chars.
    for i, line in enumerate(lines):
        for match in re.findall(r'"[^"]*"', line):
            if match == '""':
                line = line.replace(match, "")
            if match[1] in ["^", "_"]:
                sub_string = re.sub(r"([^a-zA-Z0-9])\1+", r"\1", match)
                line = line.replace(match, sub_string if len(sub_string) <= 40 else "")
        lines[i] = line
    return lines


def _abctoolkit_call(what: str, function, *args):
    with abctoolkit_output():
        try:
            return function(*args)
        except ScoreError:
            raise
        except Exception as exc:
            raise ScoreError(f"{what}: {type(exc).__name__}: {_one_line(exc)}") from exc


def interleave(lines: list[str]) -> str:
    """Interleaved ABC (one bar per line, `[V:n]` voices in turn): the CLaMP 2 format (`rotate_abc`)."""
    return "".join(_abctoolkit_call("cannot interleave the ABC", rotate_abc, list(lines)))


def original_key(lines: list[str]) -> str:
    """The global `K:` of cleaned lines as the official index records it (a key/mode such as `F#min`)."""

    def key() -> str:
        metadata_lines, _ = extract_metadata_and_parts(list(lines))
        global_metadata, _ = extract_global_and_local_metadata(metadata_lines)
        if "K" not in global_metadata:
            raise ScoreError("the ABC has no K: (key) line")
        value = global_metadata["K"][0]
        return "C" if value == "none" else value

    return _abctoolkit_call("cannot read the key", key)


def tonic_key(key_mode: str) -> str:
    """The key signature name of a key/mode (`F#min` -> `A`), as the official training loader maps it."""
    try:
        return Mode2Key[key_mode]
    except KeyError:
        raise ScoreError(f"unknown key {key_mode!r} (not in abctoolkit's Mode2Key)") from None


def _check_key(key: str) -> None:
    if key not in Key2index:
        raise ScoreError(f"unknown key {key!r}; NotaGen's keys are {', '.join(KEYS)}")


def transpose(lines: list[str], key: str) -> list[str]:
    """Cleaned lines transposed to `key` (`transpose_an_abc_text`), re-split into non-empty lines."""
    _check_key(key)
    text = _abctoolkit_call(f"cannot transpose to {key}", transpose_an_abc_text, list(lines), key)
    return _split_lines(text)


def reduce_rests(lines: list[str]) -> str:
    """NotaGen's training text: interleaved, and a voice whose bar holds only rests is left out.

    A voice counts as present in a bar when its text has a letter other than z/Z/x/X (so a rest with a
    `!p!` decoration stays). A bar where every voice rests becomes an empty line, as in the official data.
    """

    def reduce() -> str:
        metadata_lines, prefix, left_barlines, bar_texts, right_barlines = extract_barline_and_bartext_dict(list(lines))
        if "V:1" not in bar_texts:
            raise ScoreError("the ABC has no voice `V:1`")
        reduced = list(metadata_lines)
        for i in range(len(bar_texts["V:1"])):
            line = ""
            for symbol in prefix:
                if any(char.isalpha() and char not in "ZzXx" for char in bar_texts[symbol][i]):
                    if i == 0:
                        line += "[" + symbol + "]" + prefix[symbol] + left_barlines[symbol][0] + bar_texts[symbol][0] + right_barlines[symbol][0]
                    else:
                        line += "[" + symbol + "]" + bar_texts[symbol][i] + right_barlines[symbol][i]
            reduced.append(line + "\n")
        return "".join(reduced)

    return _abctoolkit_call("cannot reduce rests", reduce)


@dataclass(frozen=True)
class NotagenText:
    """One piece in NotaGen's formats: interleaved (CLaMP 2) text and rest-reduced text per key."""

    interleaved: str
    original_key: str
    cleaned: tuple[str, ...] = field(repr=False)
    reduced: Mapping[str, str] = field(default_factory=dict, repr=False)

    def reduced_in(self, key: str) -> str:
        """The rest-reduced text in `key`: precomputed when `preprocess` was asked for it, else made now."""
        if key in self.reduced:
            return self.reduced[key]
        return reduce_rests(transpose(list(self.cleaned), key))


def preprocess(musicxml: str | bytes, keys: tuple[str, ...] | list[str] = KEYS) -> NotagenText:
    """The whole official preprocessing of one MusicXML file (xml2abc, cleaning, rotation, 15 keys)."""
    for key in keys:
        _check_key(key)
    cleaned = clean_abc(xml_to_abc(musicxml))
    reduced = {key: reduce_rests(transpose(cleaned, key)) for key in keys}
    return NotagenText(
        interleaved=interleave(cleaned),
        original_key=original_key(cleaned),
        cleaned=tuple(cleaned),
        reduced=MappingProxyType(reduced),
    )


# ---------------------------------------------------------------------------------------------
# [r:i/j] bar annotations (the Patchilizer's stream mode)
# ---------------------------------------------------------------------------------------------


def annotate_bars(text: str) -> str:
    """Prefix body line i of m with `[r:i/(m-1-i)]`, as the official `encode_train` does (quirk 4).

    Like the official code, empty lines are dropped and the body starts at the first line containing
    `[V:` (with none, only the last line counts as body).
    """
    lines = _split_lines(text)
    body_start = next((i for i, line in enumerate(lines) if "[V:" in line), -1)
    metadata, body = lines[:body_start], lines[body_start:]
    m = len(body)
    return "".join(metadata + [f"[r:{i}/{m - 1 - i}]{line}" for i, line in enumerate(body)])


def strip_bar_annotations(text: str) -> str:
    """Remove the `[r:i/j]` prefix from every line (the regex the official inference uses)."""
    return "".join(_R_ANNOTATION.sub("", line) for line in text.splitlines(keepends=True))


# ---------------------------------------------------------------------------------------------
# Rest-reduced / generated text -> full interleaved ABC -> MusicXML
# ---------------------------------------------------------------------------------------------


def split_right_barline(voice_text: str) -> tuple[str, str]:
    """(bar text, right barline) of one voice's part of a bar line, split as the official inference does.

    The right barline is the last barline plus whatever follows it (a volta number such as `|1`).
    A text without any barline comes back as ('', text), as in the official code.
    """
    right_barline = "".join(re.split(Barline_regexPattern, voice_text)[-2:])
    return voice_text[: -len(right_barline)] if right_barline else voice_text[:0], right_barline


def voice_bar_duration(voice_text: str) -> Fraction | None:
    """Duration, in L: units, of one voice's part of a bar line (`calculate_bartext_duration`); None if unknown."""
    bar_text, _ = split_right_barline(voice_text)
    with abctoolkit_output():
        try:
            duration = calculate_bartext_duration(bar_text)
        except Exception:
            return None
    return None if duration is None else Fraction(duration)


def _meter_bar_duration(metadata_lines: list[str]) -> Fraction | None:
    """Bar length in L: units from the M: and L: header fields (only used when no voice gives one)."""
    meter, unit = None, Fraction(1, 8)
    for line in metadata_lines:
        if line.startswith("M:"):
            value = line[2:].strip()
            meter = {"C": Fraction(1), "C|": Fraction(1)}.get(value)
            if meter is None:
                try:
                    meter = Fraction(value)
                except (ValueError, ZeroDivisionError):
                    meter = None
        elif line.startswith("L:"):
            try:
                unit = Fraction(line[2:].strip())
            except (ValueError, ZeroDivisionError):
                return None
    return meter / unit if meter and unit else None


def _voice_groups(metadata_lines: list[str]) -> tuple[list[str], set[str]]:
    """Declared voices (sorted by number) and those that rest with `x` (not first in a `( )` group)."""
    groups: list[list[str]] = []
    grouped: list[str] = []
    symbols: list[str] = []
    for line in metadata_lines:
        if line.startswith("%%score"):
            for inner in re.findall(r"\((.*?)\)", line):
                groups.append(inner.split())
            grouped = [voice for group in groups for voice in group]
        if line.startswith("V:"):
            symbol = line.split()[0]
            if symbol in symbols:
                # A generated header may declare a voice twice; the official code then writes that
                # voice twice per bar, and abc2xml gives it twice as many measures as the others.
                continue
            symbols.append(symbol)
            if symbol[2:] not in grouped:
                groups.append([symbol[2:]])
    x_symbols = {"V:" + voice for group in groups for voice in group[1:]}
    try:
        symbols.sort(key=lambda s: int(s[2:]))
    except ValueError:
        raise ScoreError("voice names must be numbers (V:1, V:2, ...)") from None
    return symbols, x_symbols


def restore_rests(text: str) -> str:
    """Full interleaved ABC from rest-reduced or generated text: the official `rest_unreduce`.

    `[r:i/j]` prefixes are removed. Every voice declared by a `V:` line that a bar line lacks gets a rest
    as long as the bar (the most common duration of the voices present, else the previous bar's) with
    the right barline of the last voice present: `z` for the first voice of a `%%score` round-bracket
    group (or an ungrouped voice), `x` for the others. Voices not declared in the header are dropped,
    as in the official code. Where the official code would crash (no `%%score` line; a first bar with
    no measurable voice) this falls back to treating every voice as its own group and to the M:/L: bar.
    """
    lines = _split_lines(text)
    body_start = next((i for i, line in enumerate(lines) if "[V:" in line), None)
    if body_start is None:
        raise ScoreError("the text has no bar lines (no `[V:` voice)")
    metadata_lines, body_lines = lines[:body_start], lines[body_start:]
    symbols, x_symbols = _voice_groups(metadata_lines)
    if not symbols:
        raise ScoreError("the header declares no voices (no `V:` lines)")

    ref_duration: Fraction | int | None = None
    right_barline = "|"
    restored: list[str] = []
    for i, line in enumerate(body_lines):
        line = _R_ANNOTATION.sub("", line)
        bar_texts = {f"V:{number}": value for number, value in _VOICE_SEGMENT.findall(line)}
        counts: dict[Fraction, int] = {}
        for voice_text in bar_texts.values():
            _, right_barline = split_right_barline(voice_text)
            duration = voice_bar_duration(voice_text)
            if duration is not None:
                counts[duration] = counts.get(duration, 0) + 1
        if counts:
            ref_duration = max(counts, key=counts.get)
        elif ref_duration is None:
            ref_duration = _meter_bar_duration(metadata_lines)
            if ref_duration is None:
                raise ScoreError("cannot tell how long the first bar is (no voice is measurable and no M:/L:)")
        prefix_left_barline = line.split("[V:")[0] if i == 0 else ""
        out = ""
        for symbol in symbols:
            if symbol in bar_texts:
                out += "[" + symbol + "]" + bar_texts[symbol]
            else:
                rest = "x" if symbol in x_symbols else "z"
                out += "[" + symbol + "]" + prefix_left_barline + rest + str(ref_duration) + right_barline
        restored.append(out + "\n")
    return "".join(metadata_lines + restored)


def _without_includes(abc: str) -> str:
    # abc2xml would read any file named by %%abc-include / I:abc-include into the score.
    # Split as abc2xml does (splitlines), so no line it would see as an include survives.
    return "\n".join(
        line for line in abc.splitlines() if not (line.startswith("%%abc-include") or line.startswith("I:abc-include"))
    )


def abc_to_musicxml(abc: str) -> str:
    """MusicXML text of the first tune of `abc`, as `abc2xml.py -o DIR file.abc` writes it."""
    abc = _without_includes(abc)
    with _ABC2XML_LOCK, abctoolkit_output() as messages:
        try:
            docs = _abc2xml.getXmlDocs(abc)
            xml = _abc2xml.fixDoctype(docs[0]) if docs else None
        except Exception as exc:
            raise ScoreError(f"abc2xml cannot convert the ABC: {type(exc).__name__}: {_one_line(exc)}") from exc
    if xml is None:
        detail = " / ".join(_one_line(m, 80) for m in messages if m.strip()) or "no tune found"
        raise ScoreError(f"abc2xml cannot convert the ABC: {_one_line(detail)}")
    return escaped_line_breaks(tree_repairs(xml))


def interleaved_to_musicxml(text: str) -> str:
    """MusicXML of interleaved, rest-reduced or generated NotaGen text ([r:] stripped, rests restored)."""
    return abc_to_musicxml(restore_rests(text))
