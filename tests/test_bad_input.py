"""Broken, hostile and unusual score files, through the paths a user takes (issue #8).

Uploads go through `Composer.open_bytes`/`open_file` and the web handler `open_upload`; files on the
command line through `python -m engine convert`. Every case either imports correctly or raises
`ScoreError` whose one-line message names the problem; nothing is expanded, fetched or unpacked.
"""
from __future__ import annotations

import io
import random
import time
import zipfile
from fractions import Fraction

import music21
import pytest

from engine.errors import ScoreError
from engine.score.formats import MAX_FILE_BYTES, read_score_file, score_to_musicxml
from engine.service import Composer
from tests.helpers import corpus_path, empty_midi_bytes
from tests.test_cli import run_engine

GARBAGE = random.Random(8).randbytes(4096)
PASSWD_ENTITY = (b'<?xml version="1.0"?><!DOCTYPE score-partwise [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
                 b"<score-partwise><work><work-title>&x;</work-title></work></score-partwise>")
PARAMETER_ENTITY = (b'<?xml version="1.0"?><!DOCTYPE score-partwise [<!ENTITY % p SYSTEM "file:///etc/passwd"> %p;]>'
                    b"<score-partwise/>")
BILLION_LAUGHS = (
    b'<?xml version="1.0"?><!DOCTYPE score-partwise [<!ENTITY l0 "lol">'
    + b"".join(b'<!ENTITY l%d "%s">' % (i, b"&l%d;" % (i - 1) * 10) for i in range(1, 10))
    + b"]><score-partwise>&l9;</score-partwise>"
)
EXTERNAL_DTD = b'<?xml version="1.0"?><!DOCTYPE score-partwise SYSTEM "file:///etc/passwd"><score-partwise/>'
REEL = b"X:1\nT:Reel\nM:4/4\nL:1/8\nK:D\n|:DFAd fdAF|GBdg bgdB:|\n"


@pytest.fixture(scope="module")
def composer():
    return Composer()


@pytest.fixture(scope="module")
def chorale_bytes() -> dict[str, bytes]:
    """The chorale as .mxl, .musicxml and .mid bytes: real files to truncate."""
    document = read_score_file(corpus_path())
    return {"mxl": corpus_path().read_bytes(), "musicxml": document.musicxml.encode(),
            "mid": Composer().export(document, "mid")}


def _zip(members: dict[str, bytes], container: str | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        if container:
            archive.writestr("META-INF/container.xml",
                             f'<container><rootfiles><rootfile full-path="{container}"/></rootfiles></container>')
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _zip_bomb() -> bytes:
    """80 MiB of MusicXML that deflates to well under 1 MB."""
    return _zip({"score.xml": b"<score-partwise>" + b" " * (80 * 2**20) + b"</score-partwise>"})


REFUSED = {  # file name -> (bytes made from the chorale files, words the message must hold)
    "empty.musicxml": (lambda c: b"", "is empty"),
    "empty.mxl": (lambda c: b"", "is empty"),
    "empty.mid": (lambda c: b"", "is empty"),
    "empty.abc": (lambda c: b"\n \n", "is empty"),
    "empty.krn": (lambda c: b"", "is empty"),
    "truncated.musicxml": (lambda c: c["musicxml"][: len(c["musicxml"]) // 2], "not well-formed"),
    "truncated.mxl": (lambda c: c["mxl"][: len(c["mxl"]) // 2], "not a readable .mxl archive"),
    "truncated.mid": (lambda c: c["mid"][: len(c["mid"]) // 2], "could not be read as MIDI"),
    "header-only.mid": (lambda c: c["mid"][:14], "could not be read as MIDI"),
    "truncated.abc": (lambda c: REEL[:12], "no ABC tune"),
    "garbage.musicxml": (lambda c: GARBAGE, "not well-formed"),
    "garbage.xml": (lambda c: GARBAGE, "not well-formed"),
    "garbage.mxl": (lambda c: GARBAGE, "not well-formed"),
    "garbage.mid": (lambda c: GARBAGE, "could not be read as MIDI"),
    "garbage.midi": (lambda c: GARBAGE, "could not be read as MIDI"),
    "garbage.abc": (lambda c: GARBAGE, "binary data"),
    "garbage.krn": (lambda c: GARBAGE, "binary data"),
    "prose.abc": (lambda c: b"Dear John,\nhere are the notes for the meeting.\n", "no ABC tune"),
    "passwd-entity.musicxml": (lambda c: PASSWD_ENTITY, "entities"),
    "parameter-entity.xml": (lambda c: PARAMETER_ENTITY, "entities"),
    "billion-laughs.musicxml": (lambda c: BILLION_LAUGHS, "entities"),
    "passwd-entity.mxl": (lambda c: _zip({"score.xml": PASSWD_ENTITY}, "score.xml"), "entities"),
    "billion-laughs.mxl": (lambda c: _zip({"score.xml": BILLION_LAUGHS}), "entities"),
    "external-dtd.musicxml": (lambda c: EXTERNAL_DTD, "has no measures"),
    "zip-bomb.mxl": (lambda c: _zip_bomb(), "unpacks to"),
    "dotdot-member.mxl": (lambda c: _zip({"../../etc/score.xml": c["musicxml"]}, "../../etc/score.xml"), "unsafe path"),
    "absolute-member.mxl": (lambda c: _zip({"/tmp/score.xml": c["musicxml"]}), "unsafe path"),
    "backslash-member.mxl": (lambda c: _zip({"..\\..\\score.xml": c["musicxml"]}), "unsafe path"),
    "no-score.mxl": (lambda c: _zip({"readme.txt": b"hello"}), "holds no MusicXML"),
    "many-members.mxl": (lambda c: _zip({f"f{i}.txt": b"" for i in range(300)}), "holds 300 files"),
    "no-notes.mid": (lambda c: empty_midi_bytes(), "has no notes"),
    "midi-named.musicxml": (lambda c: c["mid"], "holds MIDI"),
    "musicxml-named.abc": (lambda c: c["musicxml"], "holds MusicXML"),
    "score.exe": (lambda c: c["musicxml"], "unsupported file type"),
}
CLI_SUBSET = ("empty.musicxml", "truncated.mid", "garbage.abc", "passwd-entity.musicxml", "billion-laughs.musicxml",
              "zip-bomb.mxl", "dotdot-member.mxl", "no-notes.mid")


@pytest.mark.parametrize("name", REFUSED)
def test_upload_is_refused_with_a_message_naming_the_problem(composer, chorale_bytes, name):
    make, words = REFUSED[name]
    with pytest.raises(ScoreError, match=words) as raised:
        composer.open_bytes(make(chorale_bytes), name)
    message = str(raised.value)
    assert "\n" not in message and name in message and "root:" not in message


def test_50_mb_upload_is_refused_by_size_at_once(composer, tmp_path):
    data = b"<score-partwise>" + b" " * (50 * 2**20) + b"</score-partwise>"
    started = time.perf_counter()
    with pytest.raises(ScoreError, match=f"the limit is {MAX_FILE_BYTES // 2**20} MiB"):
        composer.open_bytes(data, "huge.musicxml")
    path = tmp_path / "huge.musicxml"
    path.write_bytes(data)
    with pytest.raises(ScoreError, match="50.0 MiB"):
        composer.open_file(path)
    assert time.perf_counter() - started < 2.0


@pytest.mark.parametrize("name", [*CLI_SUBSET, "huge.musicxml"])
def test_cli_refuses_with_one_line_and_no_traceback(chorale_bytes, tmp_path, name):
    path = tmp_path / name
    if name == "huge.musicxml":
        path.write_bytes(b"<score-partwise>" + b" " * (50 * 2**20) + b"</score-partwise>")
        words = "limit is"
    else:
        make, words = REFUSED[name]
        path.write_bytes(make(chorale_bytes))
    result = run_engine("convert", path, tmp_path / "out.musicxml")
    assert result.returncode == 1
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1 and words in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "out.musicxml").exists()


def test_refused_upload_leaves_the_session_untouched(composer, chorale_bytes, tmp_path):
    """The web handler keeps the tab's history, current version and locks when an upload fails."""
    from webui.handlers import open_upload
    from webui.session import Session

    session = Session().with_version(composer.open_bytes(chorale_bytes["mxl"], "chorale.mxl"), "Opened chorale")
    session = session.with_locks(session.locks.toggle_cell(0, 1), cursor=3)
    for name in ("truncated.musicxml", "passwd-entity.musicxml", "zip-bomb.mxl"):
        path = tmp_path / name
        path.write_bytes(REFUSED[name][0](chorale_bytes))
        with pytest.warns(UserWarning, match=name):  # gr.Warning: the toast the user sees
            outputs = open_upload(composer, session, str(path))
        assert outputs.session is session
        assert "could not open the file" in outputs.status and name in outputs.status
    assert len(session.history.versions) == 1 and session.document.n_measures == 10
    assert session.locks.cells == {(0, 1)} and session.cursor == 3


# --- unusual but valid input: it must import, and survive export and re-import -------------------------


def _measures(*contents, time_signature="4/4", first=1) -> music21.stream.Part:
    """A part of measures, each from a list of music21 objects."""
    part = music21.stream.Part()
    for number, content in enumerate(contents, start=first):
        measure = music21.stream.Measure(number=number)
        if number == first:
            measure.append(music21.meter.TimeSignature(time_signature))
        for item in content:
            measure.append(item)
        part.append(measure)
    return part


def _notes(*specs) -> list:
    """'C4:1' -> a quarter C4; 'r:2' -> a half rest."""
    out = []
    for spec in specs:
        pitch, length = spec.split(":")
        length = Fraction(length)
        out.append(music21.note.Rest(quarterLength=length) if pitch == "r" else music21.note.Note(pitch, quarterLength=length))
    return out


def tuplets():
    return _measures(_notes("C4:1/3", "D4:1/3", "E4:1/3", "F4:1", "G4:2"), _notes("C5:2/3", "B4:2/3", "A4:2/3", "G4:2"))


def grace_notes():
    grace = music21.note.Note("D5", type="eighth").getGrace()
    return _measures([grace, *_notes("C5:2", "E4:2")], _notes("C4:4"))


def pickup():
    part = _measures(_notes("G4:1"), _notes("C5:4"), _notes("C5:3"), first=0)
    part.measure(0).paddingLeft = 3.0
    part.measure(2).paddingRight = 1.0
    return part


def key_clef_meter_changes():
    part = _measures(_notes("C4:4"), _notes("E-4:4"), _notes("C3:4"), _notes("D3:3"))
    part.measure(1).insert(0, music21.key.Key("G"))
    part.measure(2).insert(0, music21.key.Key("E-"))
    part.measure(3).insert(0, music21.clef.BassClef())
    part.measure(4).insert(0, music21.meter.TimeSignature("3/4"))
    return part


def five_four():
    return _measures(_notes("C4:2", "D4:3"), _notes("E4:1", "F4:1", "G4:3"), time_signature="5/4")


def seven_eight():
    return _measures(_notes("C4:1", "D4:1", "E4:3/2"), _notes("F4:3/2", "G4:2"), time_signature="7/8")


def two_voices():
    measures = []
    for upper, lower in (("E5:2 D5:2", "C4:4"), ("C5:4", "G3:2 C4:2")):
        voices = []
        for number, specs in enumerate((upper, lower), start=1):
            voice = music21.stream.Voice(_notes(*specs.split()))
            voice.id = str(number)
            voices.append(voice)
        measures.append(voices)
    return _measures(*measures)


CROSS_STAFF = """<?xml version="1.0" encoding="UTF-8"?>
<score-partwise version="4.0"><part-list><score-part id="P1"><part-name>Piano</part-name></score-part></part-list>
<part id="P1">
<measure number="1"><attributes><divisions>1</divisions><key><fifths>0</fifths></key><time><beats>4</beats>
<beat-type>4</beat-type></time><staves>2</staves><clef number="1"><sign>G</sign><line>2</line></clef>
<clef number="2"><sign>F</sign><line>4</line></clef></attributes>
<note><pitch><step>C</step><octave>5</octave></pitch><duration>1</duration><voice>1</voice><type>quarter</type><staff>1</staff></note>
<note><pitch><step>G</step><octave>3</octave></pitch><duration>1</duration><voice>1</voice><type>quarter</type><staff>2</staff></note>
<note><pitch><step>E</step><octave>3</octave></pitch><duration>1</duration><voice>1</voice><type>quarter</type><staff>2</staff></note>
<note><pitch><step>C</step><octave>5</octave></pitch><duration>1</duration><voice>1</voice><type>quarter</type><staff>1</staff></note>
<backup><duration>4</duration></backup>
<note><pitch><step>C</step><octave>3</octave></pitch><duration>4</duration><voice>5</voice><type>whole</type><staff>2</staff></note>
</measure>
<measure number="2">
<note><pitch><step>D</step><octave>5</octave></pitch><duration>4</duration><voice>1</voice><type>whole</type><staff>1</staff></note>
<backup><duration>4</duration></backup>
<note><pitch><step>G</step><octave>2</octave></pitch><duration>4</duration><voice>5</voice><type>whole</type><staff>2</staff></note>
</measure></part></score-partwise>
"""

PIECES = {  # name -> (music21 parts, measures)
    "tuplets": (lambda: [tuplets()], 2),
    "grace-notes": (lambda: [grace_notes()], 2),
    "pickup": (lambda: [pickup()], 3),
    "key-clef-meter-changes": (lambda: [key_clef_meter_changes()], 4),
    "five-four": (lambda: [five_four()], 2),
    "seven-eight": (lambda: [seven_eight()], 2),
    "two-voices-per-staff": (lambda: [two_voices()], 2),
}


def _note_names(document) -> list[str]:
    return [p.nameWithOctave for n in document.score().recurse().notes for p in n.pitches]


@pytest.fixture(scope="module", params=[*PIECES, "cross-staff"])
def piece(request):
    """(document opened from MusicXML bytes, expected measures)."""
    if request.param == "cross-staff":
        return Composer().open_bytes(CROSS_STAFF.encode(), "cross-staff.musicxml"), 2
    make, measures = PIECES[request.param]
    musicxml = score_to_musicxml(music21.stream.Score(make())).encode()
    return Composer().open_bytes(musicxml, f"{request.param}.musicxml"), measures


def test_unusual_notation_imports_with_its_measures_and_notes(piece):
    document, measures = piece
    assert document.n_measures == measures
    assert _note_names(document) and all(cell is not None for row in document.grid.cells for cell in row)


@pytest.mark.parametrize("fmt", ["musicxml", "abc"])
def test_unusual_notation_survives_export_and_reimport(composer, piece, fmt):
    document, measures = piece
    again = composer.open_bytes(composer.export(document, fmt), f"again.{fmt}")
    assert (again.n_parts, again.n_measures) == (document.n_parts, measures)
    assert sorted(_note_names(again)) == sorted(_note_names(document))


def test_mid_piece_key_clef_and_meter_changes_are_kept(composer):
    musicxml = score_to_musicxml(music21.stream.Score([key_clef_meter_changes()])).encode()
    for fmt in ("musicxml", "abc"):
        document = composer.open_bytes(composer.export(composer.open_bytes(musicxml, "changes.musicxml"), fmt),
                                       f"changes.{fmt}")
        score = document.score()
        assert [k.sharps for k in score.recurse().getElementsByClass(music21.key.KeySignature)] == [1, -3]
        assert [c.sign for c in score.recurse().getElementsByClass(music21.clef.Clef)][-1] == "F"
        assert [t.ratioString for t in score.recurse().getElementsByClass(music21.meter.TimeSignature)] == ["4/4", "3/4"]


def test_abc_quirks_import_or_are_refused_clearly(composer):
    """abc2xml skips what it cannot read; the tune still imports with its bars."""
    unknown_fields = b"X:1\nT:t\nY:what\nJ:zz\n%%weird on\nM:4/4\nL:1/8\nK:D\nDFAd fdAF|GBdg bgdB|\n"
    assert composer.open_bytes(unknown_fields, "fields.abc").n_measures == 2
    for name, text in (("brackets.abc", b"X:1\nM:4/4\nL:1/8\nK:D\n[DFA d fdAF|(GBdg bgdB|{ab c4]]]\n"),
                       ("durations.abc", b"X:1\nM:4/4\nL:1/8\nK:D\nD0 F/0 A999999 d//// f-1|G3/0 B/9/ d0/0g|\n")):
        try:
            document = composer.open_bytes(text, name)
        except ScoreError as exc:
            assert name in str(exc) and "\n" not in str(exc)
        else:
            assert document.n_measures >= 1 and composer.export(document, "musicxml")


@pytest.mark.parametrize("name, text", [("header.abc", REEL[:27]), ("header.krn", b"**kern\t**k"),
                                        ("cut.krn", b"**kern\n*M3/4\n4c\n4d\n4e\n=2\n4f\n4")])
def test_truncated_text_scores_keep_what_was_read(composer, name, text):
    """ABC and Humdrum are read line by line: a cut file keeps its complete bars (a header: one empty bar)."""
    document = composer.open_bytes(text, name)
    assert document.n_measures == (2 if name == "cut.krn" else 1)
    assert len(document.score().recurse().notes) == (4 if name == "cut.krn" else 0)


def test_midi_with_only_drums_imports_as_unpitched_notes(composer):
    midi = music21.midi.MidiFile()
    track = music21.midi.MidiTrack(index=1)
    midi.tracks.append(track)
    for i in range(8):
        for delta, kind, velocity in ((0, "NOTE_ON", 100), (midi.ticksPerQuarterNote, "NOTE_OFF", 0)):
            track.events.append(music21.midi.DeltaTime(track, time=delta))
            event = music21.midi.MidiEvent(track, type=getattr(music21.midi.ChannelVoiceMessages, kind), channel=10)
            event.pitch, event.velocity = 36 + i % 3, velocity
            track.events.append(event)
    end = music21.midi.MidiEvent(track, type=music21.midi.MetaEvents.END_OF_TRACK)
    end.data = b""
    track.events.extend([music21.midi.DeltaTime(track, time=0), end])
    document = composer.open_bytes(midi.writestr(), "drums.mid")
    notes = document.score().recurse().notes
    assert document.n_measures == 2 and len(notes) == 8 and all(isinstance(n, music21.note.Unpitched) for n in notes)
    assert composer.export(document, "mid").startswith(b"MThd")


def test_2000_measure_score_imports_in_bounded_time(composer):
    measure = ('<measure number="{}"><note><pitch><step>C</step><octave>4</octave></pitch>'
               "<duration>4</duration><type>whole</type></note></measure>")
    musicxml = ('<score-partwise><part-list><score-part id="P1"><part-name>Long</part-name></score-part></part-list>'
                '<part id="P1"><measure number="1"><attributes><divisions>1</divisions><time><beats>4</beats>'
                "<beat-type>4</beat-type></time></attributes><note><pitch><step>C</step><octave>4</octave></pitch>"
                "<duration>4</duration><type>whole</type></note></measure>"
                + "".join(measure.format(n) for n in range(2, 2001)) + "</part></score-partwise>")
    started = time.perf_counter()
    document = composer.open_bytes(musicxml.encode(), "long.musicxml")
    assert document.n_measures == 2000 and len(document.score().recurse().notes) == 2000
    assert time.perf_counter() - started < 60


def test_40_part_score_imports(composer):
    parts = []
    for k in range(40):
        part = _measures(*([music21.note.Note(48 + k, type="whole")] for _ in range(4)))
        part.partName = f"Voice {k + 1}"
        parts.append(part)
    document = composer.open_bytes(score_to_musicxml(music21.stream.Score(parts)).encode(), "forty.musicxml")
    assert (document.n_parts, document.n_measures) == (40, 4)
    again = composer.open_bytes(composer.export(document, "musicxml"), "again.musicxml")
    assert (again.n_parts, len(again.score().recurse().notes)) == (40, 160)
