"""Reading every input format into a document, and refusing bad input with a clear message."""
from __future__ import annotations

import io
import zipfile

import pytest

from engine.errors import ScoreError
from engine.score.formats import read_score, read_score_file
from engine.service import Composer
from tests.helpers import corpus_path, empty_midi_bytes


@pytest.fixture(scope="module")
def composer():
    return Composer()


@pytest.fixture(scope="module")
def chorale():
    return read_score_file(corpus_path())


def test_mxl_reads_into_grid(chorale):
    assert chorale.n_parts == 4
    assert chorale.n_measures == 10
    assert [c.number for c in chorale.grid.columns][:3] == ["0", "1", "2"]
    assert chorale.grid.columns[1].time_signature == "4/4"
    soprano_bar_1 = chorale.grid.cells[0][1]
    assert soprano_bar_1 and all(e.duration > 0 for e in soprano_bar_1)


@pytest.mark.parametrize("fmt", ["musicxml", "abc", "mid"])
def test_export_and_reimport_keeps_parts_and_notes(composer, chorale, fmt, tmp_path):
    path = tmp_path / f"piece.{fmt}"
    path.write_bytes(composer.export(chorale, fmt))
    again = read_score_file(path)
    assert again.n_parts == 4
    notes = len(again.score().recurse().notes)
    assert abs(notes - len(chorale.score().recurse().notes)) <= 4  # MIDI may merge tied notes


def test_humdrum_reads(tmp_path):
    document = read_score_file(corpus_path("palestrina/Agnus_01.krn"))
    assert document.n_parts == 5 and document.n_measures > 20


def test_single_voice_abc_reads():
    text = "X:1\nT:Reel\nM:4/4\nL:1/8\nK:D\n|:DFAd fdAF|GBdg bgdB:|\n"
    document = read_score(text.encode(), "reel.abc")
    assert document.n_parts == 1 and document.n_measures == 2


def test_mxl_archive_inside_memory(chorale):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("META-INF/container.xml", '<container><rootfiles><rootfile full-path="score.xml"/></rootfiles></container>')
        archive.writestr("score.xml", chorale.musicxml)
    assert read_score(buffer.getvalue(), "piece.mxl").n_measures == 10


BAD_INPUTS = {
    "empty.musicxml": (lambda xml: b"", "is empty"),
    "blank.abc": (lambda xml: b"  \n\n", "is empty"),
    "truncated.musicxml": (lambda xml: xml[: len(xml) // 2], "not well-formed"),
    "midi-named.musicxml": (lambda xml: empty_midi_bytes(), "holds MIDI"),
    "xml-named.mid": (lambda xml: xml, "named as MIDI but holds MusicXML"),
    "silence.mid": (lambda xml: empty_midi_bytes(), "has no notes"),
    "notes.pdf": (lambda xml: b"%PDF-1.4", "unsupported file type"),
    "garbage.mxl": (lambda xml: b"PK\x03\x04garbage", "not a readable .mxl archive"),
    "html.xml": (lambda xml: b"<html><body>hi</body></html>", "not a MusicXML score"),
    "bomb.musicxml": (
        lambda xml: b'<?xml version="1.0"?><!DOCTYPE s [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;">]>'
        b"<score-partwise>&b;</score-partwise>",
        "entities",
    ),
}


@pytest.mark.parametrize("name", BAD_INPUTS)
def test_bad_input_is_refused_with_a_clear_message(chorale, name):
    make, message = BAD_INPUTS[name]
    with pytest.raises(ScoreError, match=message) as raised:
        read_score(make(chorale.musicxml.encode()), name)
    assert "\n" not in str(raised.value)


def test_path_traversal_member_is_refused(chorale):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("META-INF/container.xml", '<container><rootfiles><rootfile full-path="../../etc/score.xml"/></rootfiles></container>')
        archive.writestr("../../etc/score.xml", chorale.musicxml)
    with pytest.raises(ScoreError, match="unsafe path"):
        read_score(buffer.getvalue(), "evil.mxl")


def test_zip_bomb_is_refused_without_unpacking():
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("score.xml", b"<score-partwise>" + b" " * (80 * 2**20) + b"</score-partwise>")
    assert len(buffer.getvalue()) < 1_000_000
    with pytest.raises(ScoreError, match="unpacks to"):
        read_score(buffer.getvalue(), "bomb.mxl")


def _complex_durations():
    """A measure of notes that need ties to be written (1.25 + 0.75 beats): what inpainting can write."""
    import music21

    measure = music21.stream.Measure([music21.meter.TimeSignature("4/4"), music21.note.Note("C4", quarterLength=1.25),
                                      music21.note.Note("D4", quarterLength=0.75)], number=1)
    return music21.stream.Score([music21.stream.Part([measure])])


@pytest.mark.parametrize("work", ["bach/bwv66.6", "schoenberg/opus19/movement2", "complex durations"])
def test_in_place_export_writes_the_same_musicxml(work):
    """Making notation on the score itself (no copy) gives the exporter's usual output."""
    import copy
    import re

    import music21

    from engine.score.formats import score_to_musicxml

    def normalized(text: str) -> str:  # the encoding date and random part and instrument ids differ per call
        return re.sub(r"([IP])[0-9a-f]{32}", r"\1", re.sub(r"<encoding-date>.*?</encoding-date>", "", text))

    score = _complex_durations() if work == "complex durations" else music21.corpus.parse(work)
    expected = normalized(score_to_musicxml(copy.deepcopy(score)))
    assert normalized(score_to_musicxml(score, in_place=True)) == expected


def test_a_metronome_mark_without_a_beat_unit_does_not_refuse_the_score():
    """OpenScore Quartets, Janacek, No. 2, finale, violin 1, bar 88: "Presto" and a metronome mark whose beat
    unit is empty; music21 refused the whole quartet. The mark is left out, the words and tempo stay."""
    direction = ('<direction placement="above"><direction-type><words>Presto</words></direction-type>'
                 '<direction-type><metronome parentheses="no"><beat-unit></beat-unit><per-minute>96</per-minute>'
                 '</metronome></direction-type><sound tempo="384"/></direction>')
    text = ('<?xml version="1.0" encoding="UTF-8"?><score-partwise version="3.1"><part-list>'
            '<score-part id="P1"><part-name>Violin</part-name></score-part></part-list><part id="P1">'
            '<measure number="1"><attributes><divisions>1</divisions><time><beats>2</beats><beat-type>2</beat-type>'
            f'</time></attributes>{direction}<note><pitch><step>E</step><octave>5</octave></pitch>'
            '<duration>4</duration><type>whole</type></note></measure></part></score-partwise>')
    document = read_score(text.encode(), "presto.musicxml")
    assert "<metronome" not in document.musicxml and "Presto" in document.musicxml
    score = document.score()
    assert score.metronomeMarkBoundaries()[0][2].getQuarterBPM() == 384
    assert [n.nameWithOctave for n in score.recurse().notes] == ["E5"]
