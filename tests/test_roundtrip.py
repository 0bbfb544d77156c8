"""Scores through NotaGen's notation and back: the repairs of xml2abc (each on a small real excerpt), the
one-line warning where something is lost (`notation_losses`) and the round-trip survey's bookkeeping."""
from pathlib import Path

import music21
import pytest
from abctoolkit import xml2abc

from engine.errors import ScoreError
from engine.score import notagen_repairs
from engine.score.document import ScoreDocument
from engine.score.formats import score_to_musicxml
from engine.score.notagen_abc import xml_to_abc
from engine.score.notation_losses import abc_round_trip, changed_measures, measure_notes, notation_losses
from engine.service import Composer
from training.roundtrip import failure_class, summary

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

DATA = Path(__file__).parent / "data"


def excerpt(name: str) -> ScoreDocument:
    """Bars 64-66 (or 65-66) of the piano of OpenScore Lieder's Lehmann, "Clasp mine closer" (CC0): a G-flat
    tied from a lower voice into the upper voice's chord (a tie that, in the shorter excerpt, starts before it)."""
    return ScoreDocument((DATA / f"{name}.musicxml").read_text(encoding="utf-8"), name)


@pytest.fixture
def official_xml2abc(monkeypatch):
    """xml2abc without the tie repair, as the official pipeline runs it."""
    monkeypatch.setattr(xml2abc.Parser, "ntAbc", notagen_repairs._original_ntAbc)


@pytest.mark.parametrize("name", ["tie_from_another_voice", "tie_without_start"])
def test_a_tied_note_keeps_its_accidental_unless_tied_in_its_own_voice(name):
    document = excerpt(name)
    assert "[_G,CE-]8" in document.interleaved_abc
    assert notation_losses(document, abc_round_trip(document)) == []


def test_the_official_xml2abc_loses_that_accidental(official_xml2abc):
    document = excerpt("tie_without_start")
    assert "[G,CE-]8" in document.interleaved_abc
    (line,) = notation_losses(document, abc_round_trip(document))
    assert "1 of 4 part-measures changed (part 1 measure 65)" in line


def jaell() -> ScoreDocument:
    """OpenScore Lieder, Jaell, "Les troncons du serpent", bars 50-52 (piano): C-sharp, G and E, one after
    the other, each tied into the next bar's chord; abc2xml carries only the tie of the last of them."""
    return ScoreDocument((DATA / "ties_into_a_chord.musicxml").read_text(encoding="utf-8"), "jaell")


def test_ties_from_successive_notes_into_a_chord_keep_their_accidental():
    document = jaell()
    assert "[V:3]!fermata![E,G,^C]6-|" in document.interleaved_abc
    assert notation_losses(document, abc_round_trip(document)) == []


def test_the_official_xml2abc_loses_the_sharp_of_that_chord(official_xml2abc):
    document = jaell()
    assert "[V:3]!fermata![E,G,C]6-|" in document.interleaved_abc
    assert "part 2 measure 51" in notation_losses(document, abc_round_trip(document))[0]


def faure() -> ScoreDocument:
    """OpenScore Lieder, Faure, "A Clymene", bars 1-2 (piano): a B-natural tied over the bar line (its natural
    sign printed again), then a B-natural at beat 1.5."""
    return ScoreDocument((DATA / "natural_on_a_tied_note.musicxml").read_text(encoding="utf-8"), "faure")


def test_an_accidental_on_a_note_tied_in_its_voice_is_written_again_after_it():
    document = faure()
    assert "[V:1]=B2 d =B2 c" in document.interleaved_abc
    assert notation_losses(document, abc_round_trip(document)) == []


def test_the_official_xml2abc_lets_abc2xml_read_the_key_s_b_flat_there(official_xml2abc):
    document = faure()
    assert "[V:1]=B2 d B2 c" in document.interleaved_abc
    (line,) = notation_losses(document, abc_round_trip(document))
    assert "(part 1 measure 2)" in line


def test_a_tie_within_one_voice_is_written_as_officially():
    """Bar 65's E-flat is tied within its voice: no accidental is repeated after the tie."""
    abc = excerpt("tie_from_another_voice").interleaved_abc
    assert "[_G,CE-]8|" in abc and "[V:1][A,E]8|" in abc


def test_a_long_gap_written_as_several_forwards_keeps_its_length(monkeypatch):
    """OpenScore Lieder, Brahms Op. 32 No. 2, bar 14 (piano): a triplet E after a gap that MuseScore wrote
    as forwards of 1536, 768, 192, 48, 12 and 4 divisions; xml2abc dropped the last three."""
    document = ScoreDocument((DATA / "forwards_of_a_long_gap.musicxml").read_text(encoding="utf-8"), "brahms")
    assert "[V:3]x20/3 (3:2:1E2 x4|" in document.interleaved_abc
    assert notation_losses(document, abc_round_trip(document)) == []
    monkeypatch.setattr(xml2abc.Parser, "mkTitle", notagen_repairs._original_mkTitle)
    document = ScoreDocument(document.musicxml, "brahms")
    assert "[V:3]x13/2 (3:2:1E2" in document.interleaved_abc
    assert notation_losses(document, abc_round_trip(document))


def test_a_discontinued_pedal_no_longer_refuses_the_score(monkeypatch):
    """OpenScore Lieder, Chaminade, "Plaintes d'amour", bar 1 (piano): `<pedal type="discontinue">`."""
    document = ScoreDocument((DATA / "pedal_discontinue.musicxml").read_text(encoding="utf-8"), "chaminade")
    assert "!ped! C,3 G,,!ped-up!" in document.interleaved_abc
    assert notation_losses(document, abc_round_trip(document)) == []
    monkeypatch.setattr(xml2abc.Parser, "mkTitle", notagen_repairs._original_mkTitle)
    with pytest.raises(ScoreError, match="wrong direction type"):
        ScoreDocument(document.musicxml, "chaminade").abc


def test_tabs_in_lyrics_become_spaces():
    """Trecento Kyrie "O sacra Virgo beata" (music21 corpus): the tenor's first syllable is "O<tab>sacra."."""
    score = music21.corpus.parse("trecento/PMFC_23_20-Kyrie O Sacra Virgo Beata.xml").measures(1, 2)
    musicxml = score_to_musicxml(score)
    assert "O\tsacra." in musicxml
    abc = xml_to_abc(musicxml)
    assert "\t" not in abc and "O sacra." in abc
    assert notagen_repairs.plain_whitespace("a\tb\x0bc\n") == "a b c\n"


def test_changed_measures_compares_sounding_notes():
    document = excerpt("tie_from_another_voice")
    notes = measure_notes(document)
    assert [len(row) for row in notes] == [3, 3]
    assert changed_measures(notes, notes) == (6, [])
    shorter = [row[:2] for row in notes]
    assert changed_measures(notes, shorter) == (6, [(0, 2), (1, 2)])
    assert changed_measures(notes, shorter, columns=2) == (4, [])


def test_export_warns_in_one_line_when_abc_loses_notes(official_xml2abc):
    composer = Composer()
    document = excerpt("tie_without_start")
    (line,) = composer.export_warnings(document, "abc")
    assert "part 1 measure 65" in line and "\n" not in line
    assert composer.export_warnings(document, "interleaved.abc") == (line,)
    assert composer.export_warnings(document, "musicxml") == ()


def test_export_of_a_score_abc_carries_has_no_warning():
    assert Composer().export_warnings(excerpt("tie_from_another_voice"), "abc") == ()


def test_survey_summary_counts_and_classes():
    records = [
        {"id": "a.mxl", "opened": True, "round_trip": True, "measures": 10, "intact": 10, "differences": []},
        {"id": "b.mxl", "opened": True, "round_trip": True, "measures": 10, "intact": 9,
         "differences": ["part 1 measure 3: [60@0/1] -> [61@0/1]"]},
        {"id": "c.mxl", "opened": True, "round_trip": False, "error": "round trip: abc2xml cannot convert the ABC: x 12"},
        {"id": "d.abc", "opened": False, "round_trip": False, "error": "open: d.abc holds 3 ABC tunes"},
        {"id": "e.mxl", "opened": False, "round_trip": False, "error": "timeout: more than 300 s"},
    ]
    text = summary(records)
    assert "scores: 5, 1 of them timed out" in text and "open: 3 (75.0 %)" in text and "round-trip: 2 of those opened (66.7 %)" in text
    assert "part-measures intact: 19 of 20 (95.00 %)" in text
    assert "part 1 measure 3" in text
    assert failure_class("round trip: abc2xml cannot convert the ABC: x 12") == "round trip: abc2xml cannot convert the ABC: x N"


@pytest.fixture(scope="module")
def composer_with_notagen(notagen_reference):
    from engine.notagen.generate import NotagenGenerator

    return Composer(notagen=NotagenGenerator.load(notagen_reference / "tiny_notagen_trained_fp16.pth"))


@pytest.mark.usefixtures("one_torch_thread")
def test_continuation_warns_in_one_line_when_kept_bars_change(composer_with_notagen, monkeypatch):
    document = excerpt("tie_without_start")
    options = dict(seed=12, top_k=1)
    assert composer_with_notagen.compose_continuation(document, 1, **options).warnings == ()
    monkeypatch.setattr(xml2abc.Parser, "ntAbc", notagen_repairs._original_ntAbc)
    document = excerpt("tie_without_start")
    result = composer_with_notagen.compose_continuation(document, 1, **options)
    (line,) = result.warnings
    assert result.pieces and "part 1 measure 65" in line
    *_, last = composer_with_notagen.continue_score(document, 1, **options)
    assert last.done and last.warnings == (line,)
