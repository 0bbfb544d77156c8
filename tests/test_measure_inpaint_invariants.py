"""Inpainting on real scores: locked measures keep their MusicXML, rewritten voices fill their
measures, part names stay, lost lyrics are reported (engine.measure.check_inpaint)."""

import random
import re
from pathlib import Path

import music21
import pytest
import torch

from engine.errors import ScoreError
from engine.measure.check_inpaint import CORPORA, INVARIANTS, PATTERNS, check, lock_pattern, run, sources
from engine.measure.context import MeasureLM
from engine.measure.inpaint import context_windows, inpaint
from engine.score.document import ScoreDocument
from engine.score.formats import read_score_file, score_to_musicxml
from engine.score.splice import part_names, unmatched_spanners
from tests.test_measure_model import tiny_config


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return MeasureLM(tiny_config()).eval()


def _no_problems(problems):
    assert {name: found for name, found in problems.items() if found} == {}


def _song() -> ScoreDocument:
    """A voice with lyrics and a dynamic at beat 3, over a two-staff piano, 4/4 with a pickup."""
    voice, upper, lower = music21.stream.Part(), music21.stream.PartStaff(), music21.stream.PartStaff()
    voice.partName, upper.partName, lower.partName = "Singstimme", "Pianoforte", "Pianoforte"
    for number in range(6):
        length = 1 if number == 0 else 4
        sung = music21.stream.Measure(number=number)
        for beat in range(length):
            note = music21.note.Note("E5" if beat % 2 else "C5")
            note.lyric = f"la{number}{beat}"
            sung.append(note)
        sung.insert(min(2, length - 1), music21.dynamics.Dynamic("f"))  # what `append` used to start after
        voice.append(sung)
        upper.append(music21.stream.Measure([music21.chord.Chord(["C4", "E4", "G4"], quarterLength=length)], number=number))
        lower.append(music21.stream.Measure([music21.note.Note("C3", quarterLength=length)], number=number))
    for part in (voice, upper, lower):
        first = part.getElementsByClass(music21.stream.Measure)[0]
        first.insert(0, music21.meter.TimeSignature("4/4"))
        first.paddingLeft = 3
    score = music21.stream.Score([voice, upper, lower])
    score.insert(0, music21.layout.StaffGroup([upper, lower], symbol="brace"))
    return ScoreDocument(score_to_musicxml(score), "song")


def test_a_song_keeps_its_parts_and_reports_the_lyrics_it_lost(model):
    document = _song()
    assert [p.name for p in document.grid.parts] == ["Singstimme", "Pianoforte", "Pianoforte"]
    locked = {(p, m) for p in range(3) for m in range(6)} - {(0, 0), (0, 2), (0, 3), (2, 3), (1, 5)}
    result = inpaint(document, locked, model=model, seed=0)
    assert result.lyrics_removed == ((0, 0), (0, 2), (0, 3))
    assert result.warnings == ["lyrics removed from 3 measures"]
    assert [p.name for p in result.document.grid.parts] == ["Singstimme", "Pianoforte", "Pianoforte"]
    pickup = result.document.layout.measures[0][0]
    assert pickup.duration.quarterLength == 1  # a pickup stays a pickup
    _no_problems(check(document, locked, model))


def test_every_lock_pattern_on_a_chorale(model):
    document = ScoreDocument(score_to_musicxml(music21.corpus.parse("bach/bwv269")), "bwv269")
    rng = random.Random(1)
    for seed, pattern in enumerate(PATTERNS):
        _no_problems(check(document, lock_pattern(pattern, document.n_parts, document.n_measures, rng), model, seed))


def test_rewritten_measures_read_right_in_a_score_with_few_divisions(model):
    # the exporter writes 10080 divisions per quarter; the file's own 1 must hold again after a spliced measure
    notes = "".join(f"<note><pitch><step>{s}</step><octave>4</octave></pitch><duration>1</duration><type>quarter</type></note>"
                    for s in "CDEF")
    measures = "".join(f'<measure number="{n}">' + ("<attributes><divisions>1</divisions><time><beats>4</beats>"
                                                     "<beat-type>4</beat-type></time><clef><sign>G</sign><line>2</line></clef>"
                                                     "</attributes>" if n == 1 else "") + notes + "</measure>"
                       for n in range(1, 5))
    xml = ('<?xml version="1.0" encoding="UTF-8"?><score-partwise version="3.1"><part-list><score-part id="P1">'
           f'<part-name>Flauto</part-name></score-part></part-list><part id="P1">{measures}</part></score-partwise>')
    document = ScoreDocument(xml, "flute")
    locked = {(0, 0), (0, 2), (0, 3)}
    _no_problems(check(document, locked, model))
    after = inpaint(document, locked, model=model).document.musicxml
    assert re.findall(r'<measure number="3">.*?</measure>', after, re.S) == re.findall(r'<measure number="3">.*?</measure>', xml, re.S)


def test_scores_the_grid_cannot_hold_are_refused(model):
    timewise = ('<?xml version="1.0"?><score-timewise version="3.1"><part-list><score-part id="P1"><part-name>A</part-name>'
                '</score-part></part-list><measure number="1"><part id="P1"><attributes><divisions>1</divisions></attributes>'
                '<note><rest/><duration>4</duration></note></part></measure></score-timewise>')
    document = ScoreDocument(timewise, "timewise")
    with pytest.raises(ScoreError, match="timewise"):
        inpaint(document, set(), model=model)


def test_context_windows():
    assert context_windows([10, 11], 400, context=8) == [range(2, 20)]
    assert context_windows([0, 5, 40, 300], 301, context=8) == [range(0, 14), range(32, 49), range(292, 301)]


@pytest.mark.skipif(not CORPORA.is_dir(), reason="the shared corpora are not here")
def test_invariants_on_a_sample_of_real_scores(model):
    small = [(kind, path) for kind, path in sources(60, seed=3) if Path(path).stat().st_size < 25_000][:12]
    report = run(small, model, log=lambda line: None)
    assert sum(report["checked"].values()) >= 4 * 10
    assert not report["failed"], report
    assert set(report["checked"]) == set(INVARIANTS)


def test_a_score_written_with_single_quoted_attributes_keeps_every_invariant(model):
    # music21's trecento files write <measure number='1'>: measure numbers, part names and spanner marks
    # must read there as they do in double quotes
    path = music21.corpus.getWork("PMFC_12_6-Gloria Gratiosus")
    document = read_score_file(path)
    assert "number='1'" in document.musicxml
    rng = random.Random(2)
    for seed, pattern in enumerate(("columns", "part")):
        _no_problems(check(document, lock_pattern(pattern, document.n_parts, document.n_measures, rng), model, seed))


def test_quote_style_does_not_change_what_the_text_editors_read():
    double = _song().musicxml.replace("</note>", '<notations><slur type="start" number="2"/></notations></note>', 1)
    single = re.sub(r'(<[^?!][^>]*?)>', lambda tag: re.sub(r'="([^"]*)"', r"='\1'", tag.group(0)), double)
    assert single != double and "='" in single
    assert part_names(single) == part_names(double) == ["Singstimme", "Pianoforte"]
    assert unmatched_spanners(single) == unmatched_spanners(double) == {(0, 0, "slur", "2", "start")}
