"""Scores through NotaGen's notation and back: the repairs of xml2abc (each on a small real excerpt), the
one-line warning where something is lost (`notation_losses`) and the round-trip survey's bookkeeping."""
import gc
from pathlib import Path

import music21
import pytest
from abctoolkit import abc2xml, xml2abc

from engine.errors import ScoreError
from engine.score import notagen_repairs
from engine.score.document import ScoreDocument
from engine.score.formats import read_score_file, score_to_musicxml
from engine.score.notagen_abc import abc_to_musicxml, xml_to_abc
from engine.score.notation_losses import abc_round_trip, changed_measures, measure_notes, notation_losses
from engine.score.splice import measure_texts
from engine.service import Composer
from training.corpus import PieceRef
from training.roundtrip import check_score, check_with_timeout, failure_class, prepare_workers, summary

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

DATA = Path(__file__).parent / "data"


def excerpt(name: str) -> ScoreDocument:
    return ScoreDocument((DATA / f"{name}.musicxml").read_text(encoding="utf-8"), name)


@pytest.fixture
def official_pipeline(monkeypatch):
    """xml2abc and abc2xml without the tie repairs, as the official pipeline runs them."""
    monkeypatch.setattr(xml2abc.Parser, "ntAbc", notagen_repairs._original_ntAbc)
    monkeypatch.setattr(abc2xml.MusicXml, "mkPitch", notagen_repairs._original_mkPitch)


#: Excerpts (OpenScore Lieder, CC0, the piano) -> (repaired ABC, official ABC, the part-measure it changes):
#: Lehmann, "Clasp mine closer", bars 64-66: a G-flat tied from a lower voice into the upper voice's chord;
#: the same from bar 65 (the tie starts before the excerpt); Jaell, "Les troncons du serpent", bars 50-52:
#: C-sharp, G and E, one after the other, each tied into the next bar's chord (abc2xml carries only the
#: last tie); Faure, "A Clymene", bars 1-2: a B-natural tied over the bar line with its natural printed
#: again, then a B-natural at beat 1.5: the official text is right (the natural holds to the end of the
#: bar), abc2xml ignored accidentals on tied notes.
TIE_EXCERPTS = {
    "tie_from_another_voice": ("[_G,CE-]8", "[G,CE-]8", "part 1 measure 65"),
    "tie_without_start": ("[_G,CE-]8", "[G,CE-]8", "part 1 measure 65"),
    "ties_into_a_chord": ("[V:3]!fermata![E,G,^C]6-|", "[V:3]!fermata![E,G,C]6-|", "part 2 measure 51"),
    "natural_on_a_tied_note": ("[V:1]=B2 d B2 c", "[V:1]=B2 d B2 c", "part 1 measure 2"),
}


@pytest.mark.parametrize("name", TIE_EXCERPTS)
def test_a_tied_note_keeps_its_pitch(name):
    document = excerpt(name)
    assert TIE_EXCERPTS[name][0] in document.interleaved_abc
    assert notation_losses(document, abc_round_trip(document)) == []


@pytest.mark.parametrize("name", TIE_EXCERPTS)
def test_the_official_pipeline_changes_that_pitch(name, official_pipeline):
    document = excerpt(name)
    _, official, changed = TIE_EXCERPTS[name]
    assert official in document.interleaved_abc
    (line,) = notation_losses(document, abc_round_trip(document))
    assert changed in line


def test_a_tie_within_one_voice_is_written_as_officially():
    """Bar 65's E-flat is tied within its voice: no accidental is repeated after the tie."""
    abc = excerpt("tie_from_another_voice").interleaved_abc
    assert "[_G,CE-]8|" in abc and "[V:1][A,E]8|" in abc


def test_a_long_gap_written_as_several_forwards_keeps_its_length(monkeypatch):
    """OpenScore Lieder, Brahms Op. 32 No. 2, bar 14 (piano): a triplet E after a gap that MuseScore wrote
    as forwards of 1536, 768, 192, 48, 12 and 4 divisions; xml2abc dropped the last three."""
    document = excerpt("forwards_of_a_long_gap")
    assert "[V:3]x20/3 (3:2:1E2 x4|" in document.interleaved_abc
    assert notation_losses(document, abc_round_trip(document)) == []
    monkeypatch.setattr(xml2abc.Parser, "mkTitle", notagen_repairs._original_mkTitle)
    document = ScoreDocument(document.musicxml, "brahms")
    assert "[V:3]x13/2 (3:2:1E2" in document.interleaved_abc
    assert notation_losses(document, abc_round_trip(document))


#: Excerpts of valid scores the official xml2abc refuses -> (a piece of the repaired ABC, the official error):
#: OpenScore Lieder, Chaminade, "Plaintes d'amour", bar 1 (piano): `<pedal type="discontinue">`;
#: OpenScore Quartets, Bartok, No. 2, violin 1, bar 525: a metronome mark "half. = half" (no tempo);
#: the same, cello, bars 53-54: a 3+4/8 metre; music21 corpus, Schubert, "Der Lindenbaum", bar 8: a lyric
#: line numbered "chorus"; music21 corpus, trecento PMFC 13 No. 7 "Gloria Laus Honor", bar 11: a B-flat
#: with an empty `<accidental/>`.
REFUSED_EXCERPTS = {
    "pedal_discontinue": ("!ped! C,3 G,,!ped-up!", "wrong direction type"),
    "metric_modulation": ('"^46"!p! g\'2 d\'2 a2', "TypeError"),
    "additive_metre": ("[M:7/8] B,,DC B,2 B,, |", "invalid literal for int"),
    "named_lyric_line": ("w: Am|", "invalid literal for int"),
    "empty_accidental": ("A2 _B A2 G |", "KeyError"),
}


@pytest.mark.parametrize("name", REFUSED_EXCERPTS)
def test_a_valid_score_xml2abc_refused_now_round_trips(name, monkeypatch):
    document = excerpt(name)
    repaired, official_error = REFUSED_EXCERPTS[name]
    assert repaired in document.abc
    assert notation_losses(document, abc_round_trip(document)) == []
    monkeypatch.setattr(xml2abc.Parser, "mkTitle", notagen_repairs._original_mkTitle)
    with pytest.raises(ScoreError, match=official_error):
        ScoreDocument(document.musicxml, name).abc


#: Excerpts (OpenScore Lieder, CC0, the piano) whose official text abc2xml reads back as other notes ->
#: (a piece of the repaired text, the repair undone: (object, name, the official code), a piece of the
#: official text, what the warning says of it):
#: Boulton, "Truant Wings", bars 63-65: an arpeggio voice from the left hand into the right, with most of
#: its notes there, whose own voice sounds only in bar 65; xml2abc put both voices on the right hand's
#: staff and wrote no left-hand staff. Arne, "Celia's Complaint", bars 16-17 (the voice): grace notes after
#: the bar's last note, the group closed only in the next bar, which abc2xml reads as eighth notes.
#: Chaminade, "Chanson de neige", bars 2-3: arpeggios of grace notes up both staves; abc2xml reads no staff
#: move inside a grace group. Somervell, "Think no more, lad", bars 15-16: grace notes after the right
#: hand's last chord and before the left hand's first note, kept in one group across the voices.
#: Chaminade, "Le Noel des oiseaux", bar 34: a nonuplet (9:4) shown as three bracketed triplets that change
#: no duration, written `(1:1:3` inside the `(9:4:9`; abc2xml lost the nonuplet. OpenScore Quartets,
#: Mozart, K. 465, finale, violin 1, bars 53-56: a percussion clef on the violin's pitched notes; abc2xml
#: read the voice as percussion and dropped its naturals.
OFFICIAL_LOSSES = {
    "voice_crossing_to_a_staff_of_its_own": (
        "[V:1]x6|[V:2]!ped! (G,,/ D,/ A,/[I:staff -1] C/ D/ F/)",
        (xml2abc.Parser, "locStaffMap", notagen_repairs._original_locStaffMap),
        "%%score ( 1 2 )", "6 of 6 part-measures changed"),
    "grace_notes_after_the_last_note": (
        "[V:1]f2 B2 c2{de}|\n[V:1]{e} d4 (f _A)|",
        (notagen_repairs, "grace_groups_closed_at_bar_lines", lambda parser: None),
        "[V:1]f2 B2 c2{de|\n[V:1]e} d4 (f _A)|", "2 of 2 part-measures changed"),
    "grace_notes_over_both_staves": (
        '[V:1]"^m. g."[I:staff +1]{F,,C,F,A,CF}[I:staff -1]{Acf} c\'3',
        (notagen_repairs, "grace_groups_split_at_staff_moves", lambda parser: None),
        "{F,,C,F,A,CF[I:staff -1]Acf}", "4 of 4 part-measures changed"),
    "grace_notes_of_two_voices": (
        "T[cf]2{ef}|[V:2]{D,,} D,3/2 G,/4",
        (notagen_repairs, "grace_groups_split_at_staff_moves", lambda parser: None),
        "T[cf]2{ef|[V:2]D,,} D,3/2 G,/4", "(part 1 measure 15, part 2 measure 15)"),
    "tuplets_inside_a_nonuplet": (
        "(9:4:9D/ F/ A/ d/ f/ a/ d'/ f'/ a'/)",
        (xml2abc, "insTup", notagen_repairs._original_insTup),
        "(9:4:9(1:1:3D/ F/ A/ (1:1:3d/", "part 1 measure 34"),
    "percussion_clef_on_a_violin": (
        'V:1 treble nm="Violin 1"',
        (notagen_repairs, "pitched_clefs", lambda root: None),
        'V:1 perc nm="Violin 1"', "part-measures changed"),
}


@pytest.mark.parametrize("name", OFFICIAL_LOSSES)
def test_a_repaired_text_reads_back_as_the_score(name, monkeypatch):
    repaired, (target, attribute, official_code), official, warning = OFFICIAL_LOSSES[name]
    document = excerpt(name)
    assert repaired in document.interleaved_abc
    assert notation_losses(document, abc_round_trip(document)) == []
    monkeypatch.setattr(target, attribute, official_code)
    document = ScoreDocument(document.musicxml, name)
    assert official in document.interleaved_abc
    (line,) = notation_losses(document, abc_round_trip(document))
    assert warning in line


def test_a_direction_on_a_staff_without_notes_keeps_the_staff(monkeypatch):
    """OpenScore Lieder, Brahms, Op. 43 No. 3, bars 1-2 (piano): both voices are written on the left hand's
    staff and the right hand's holds only a dynamic; xml2abc raised KeyError and refused the score."""
    document = excerpt("direction_on_a_staff_without_notes")
    assert "[V:1]!p![I:staff +1] [D,F,B,]8|[V:2]B,,8|" in document.interleaved_abc
    assert notation_losses(document, abc_round_trip(document)) == []
    monkeypatch.setattr(xml2abc.Parser, "locStaffMap", notagen_repairs._original_locStaffMap)
    with pytest.raises(ScoreError, match="KeyError"):
        ScoreDocument(document.musicxml, "brahms").abc


def test_a_line_break_in_a_syllable_becomes_a_space(monkeypatch):
    """OpenScore Lieder, Hensel, "Sehnsucht", bars 1-2 (voice): the first syllable is "1.<newline>" and
    "  Fern<newline>"; the official text reads the rest of the `w:` line as bars of notes."""
    document = excerpt("lyric_line_break")
    assert "[V:1]d3 c (cB) A2|\n" in document.interleaved_abc and "Fern" not in document.interleaved_abc
    assert notation_losses(document, abc_round_trip(document)) == []
    monkeypatch.setattr(xml2abc.Parser, "mkTitle", notagen_repairs._original_mkTitle)
    assert "[V:1]Fern|" in ScoreDocument(document.musicxml, "hensel").interleaved_abc


def test_a_typographic_quote_in_a_direction_keeps_the_notes(monkeypatch):
    """OpenScore Lieder, Warlock, "Heracleitus", bars 10-11 (piano): a direction whose text is a lone `”`;
    the official unidecode makes it `"`, which closes the annotation early and swallows notes."""
    document = excerpt("typographic_quote")
    assert "\"_'\"" in document.interleaved_abc
    assert notation_losses(document, abc_round_trip(document)) == []
    monkeypatch.setattr(xml2abc.Parser, "mkTitle", notagen_repairs._original_mkTitle)
    official = ScoreDocument(document.musicxml, "warlock")
    (line,) = notation_losses(official, abc_round_trip(official))
    assert "part 1 measure 11" in line


def test_a_part_name_on_two_lines_keeps_its_line_break(shared_dir):
    """OpenScore Lieder, Beethoven, Op. 48 No. 2: the voice is named "Singstimme" over "Voice"; the official
    text writes the break as `\\n`, and abc2xml gave the part the name "Singstimme\\nVoice"."""
    path = shared_dir / "corpora/openscore-lieder/scores/Beethoven_Ludwig_van__6_Lieder_Op_48_2_Die_Liebe_des_Nachsten__lc4946378.mxl"
    document = read_score_file(path)
    assert "<part-name>Singstimme\nVoice</part-name>" in document.musicxml
    abc = xml_to_abc(document.musicxml)
    assert 'V:1 treble nm="Singstimme\\nVoice"' in abc  # the official text, unchanged
    back = abc_to_musicxml(abc)
    assert "<part-name>Singstimme\nVoice</part-name>" in back and "\\n" not in back


def test_a_direction_on_two_lines_keeps_its_line_break(shared_dir):
    """OpenScore Lieder, Cornelius, Op. 8 No. 1: "hervortretend" over "marcato" came back as
    "hervortretend\\nmarcato"."""
    path = shared_dir / "corpora/openscore-lieder/scores/Cornelius_Peter__Weihnachtslieder_Op_8_1_Christbaum__lc7006856.mxl"
    abc = xml_to_abc(read_score_file(path).musicxml)
    assert "hervortretend\\nmarcato" in abc  # the official text, unchanged
    back = abc_to_musicxml(abc)
    assert "hervortretend\nmarcato" in back and "\\n" not in back


def test_tabs_in_lyrics_become_spaces():
    """Trecento Kyrie "O sacra Virgo beata" (music21 corpus): the tenor's first syllable is "O<tab>sacra."."""
    score = music21.corpus.parse("trecento/PMFC_23_20-Kyrie O Sacra Virgo Beata.xml").measures(1, 2)
    musicxml = score_to_musicxml(score)
    assert "O\tsacra." in musicxml
    abc = xml_to_abc(musicxml)
    assert "\t" not in abc and "O sacra." in abc
    assert notagen_repairs.plain_whitespace("a\tb\x0bc\n") == "a b c\n"


def test_inexact_divisions_compare_as_the_exact_value():
    """music21 corpus, Schubert, "Der Lindenbaum", bar 11 (voice): a triplet at 256 divisions a quarter
    (85, 85, 86) that the ABC writes exactly, `(3AG F`."""
    document = excerpt("inexact_divisions")
    (before,), (after,) = measure_notes(document), measure_notes(abc_round_trip(document))
    assert (66.0, 2.6640625, 0.3359375) in before[0] and before != after
    assert notation_losses(document, abc_round_trip(document)) == []


def test_percussion_notes_count_by_their_display_pitch():
    """music21 corpus, demos/drum_sample.xml, bar 1 (drums): snare and hi-hat in percussion chords."""
    document = excerpt("percussion_chords")
    (before,) = measure_notes(document)
    assert len(before[0]) == 14 and (52.0, 1.0, 0.5) in before[0] and (59.0, 1.0, 0.5) in before[0]
    assert measure_notes(abc_round_trip(document)) == [before]


def test_only_a_declared_transposition_is_applied():
    """OpenScore Lieder, Berlioz, "Villanelle", bars 1-4 (voice): the part's instrument is named "Clarinet"
    (MIDI program 72), with no `<transpose>`; music21 assumes a B-flat clarinet, abc2xml writes no
    instrument, and every bar of the part (108 of the score's 393 part-measures) compared a tone off."""
    document = excerpt("undeclared_transposition")
    assert measure_notes(document)[0][2:] == [((69.0, 0.0, 1.5), (71.0, 1.5, 0.5)), ((73.0, 0.0, 2.0),)]
    assert notation_losses(document, abc_round_trip(document)) == []
    transpose = "<transpose><diatonic>-1</diatonic><chromatic>-2</chromatic></transpose>"
    declared = ScoreDocument(document.musicxml.replace("</clef>", "</clef>" + transpose, 1), "in B-flat")
    assert measure_notes(declared)[0][2:] == [((67.0, 0.0, 1.5), (69.0, 1.5, 0.5)), ((71.0, 0.0, 2.0),)]
    assert notation_losses(declared, abc_round_trip(declared)) == []


def test_a_chord_symbol_is_not_a_sounding_note():
    """OpenScore Lieder, Bizet, "Berceuse", bar 118 (voice): a chord symbol "C" of kind `none` (music21: N.C.,
    no pitches), which the ABC writes as "C" and abc2xml reads back as a C major chord symbol; music21 counts
    chord symbols among a measure's notes, so its C, E and G compared as three notes gained."""
    document = excerpt("chord_symbol_without_a_chord")
    assert '[V:1]"C"!p! B2 c B2 _A|' in document.interleaved_abc
    assert measure_notes(document) == [[((68.0, 2.5, 0.5), (70.0, 0.0, 1.0), (70.0, 1.5, 1.0), (72.0, 1.0, 0.5))]]
    assert notation_losses(document, abc_round_trip(document)) == []


def test_changed_measures_compares_sounding_notes():
    document = excerpt("tie_from_another_voice")
    notes = measure_notes(document)
    assert [len(row) for row in notes] == [3, 3]
    assert changed_measures(notes, notes) == (6, [])
    shorter = [row[:2] for row in notes]
    assert changed_measures(notes, shorter) == (6, [(0, 2), (1, 2)])
    assert changed_measures(notes, shorter, columns=2) == (4, [])


def test_export_warns_in_one_line_when_abc_loses_notes(official_pipeline):
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
        {"id": "b.mxl", "opened": True, "round_trip": True, "measures": 10, "intact": 8, "invisible_only": 1,
         "differences": ["part 1 measure 3: [60@0/1] -> [61@0/1]"]},
        {"id": "c.mxl", "opened": True, "round_trip": False, "error": "round trip: abc2xml cannot convert the ABC: x 12"},
        {"id": "d.abc", "opened": False, "round_trip": False, "error": "open: d.abc holds 3 ABC tunes"},
        {"id": "e.mxl", "opened": False, "round_trip": False, "error": "timeout: more than 300 s"},
    ]
    text = summary(records)
    assert "scores: 5, 1 of them timed out" in text and "open: 3 (75.0 %)" in text and "round-trip: 2 of those opened (66.7 %)" in text
    assert "part-measures intact: 18 of 20 (90.00 %)" in text and "intact but for those: 19 (95.00 %)" in text
    assert "part 1 measure 3" in text
    assert failure_class("round trip: abc2xml cannot convert the ABC: x 12") == "round trip: abc2xml cannot convert the ABC: x N"


@pytest.fixture
def prepared_workers():
    prepare_workers()
    yield
    gc.unfreeze()


@pytest.mark.usefixtures("official_pipeline", "prepared_workers")
def test_the_survey_s_child_process_gives_the_records_of_the_plain_check():
    """The survey's speed-ups (the conversion path imported and frozen in the parent, rare garbage
    collections in each score's child) change no figure: the same records as `check_score` in this process,
    on real excerpts, one of them with a part-measure the official pipeline changes."""
    expected = {"tie_without_start": (4, 3), "typographic_quote": (4, 4), "inexact_divisions": (1, 1)}
    for name, (measures, intact) in expected.items():
        ref = PieceRef(id=name, source="tests", path=str(DATA / f"{name}.musicxml"), kind="file", work="",
                       split="", title=name)
        record = check_with_timeout(ref, 120)
        assert record.pop("seconds") > 0
        assert record == check_score(ref)
        assert (record["measures"], record["intact"]) == (measures, intact), name


def test_shards_of_the_survey_check_every_score_once(tmp_path):
    import json
    import shutil

    from training.roundtrip import main

    names = ["typographic_quote", "inexact_divisions", "empty_accidental"]
    for name in names:
        shutil.copy(DATA / f"{name}.musicxml", tmp_path / f"{name}.musicxml")
    out = tmp_path / "survey.jsonl"
    for shard in ("1/2", "2/2"):
        main(["--out", str(out), "--corpora", str(tmp_path), "--shard", shard])
    ids = [json.loads(line)["id"] for line in out.read_text().splitlines()]
    assert sorted(ids) == sorted(f"{name}.musicxml" for name in names)


@pytest.fixture(scope="module")
def composer_with_notagen(notagen_reference):
    from engine.notagen.generate import NotagenGenerator

    return Composer(notagen=NotagenGenerator.load(notagen_reference / "tiny_notagen_trained_fp16.pth"))


@pytest.mark.usefixtures("one_torch_thread", "official_pipeline")
def test_continuation_keeps_the_bars_notagen_s_notation_would_change(composer_with_notagen):
    """The official pipeline changes the excerpt's tied note; the continuation's kept bars are the score's
    own MusicXML all the same, so nothing is lost and there is nothing to warn about."""
    document = excerpt("tie_without_start")
    assert notation_losses(document, abc_round_trip(document))
    result = composer_with_notagen.compose_continuation(document, 1, seed=12, top_k=1)
    (piece,) = result.pieces
    kept = [texts[: document.n_measures] for texts in measure_texts(piece.document.musicxml)]
    assert kept == measure_texts(document.musicxml) and result.warnings == ()
    *_, last = composer_with_notagen.continue_score(document, 1, seed=12, top_k=1)
    assert last.done and last.warnings == ()


#: Real tunes of the music21 corpus (public domain), shortened: O'Neill's 1850 No. 89 "The Coolin", a `||`
#: at the end of one line and another at the start of the next; Essen, "Meins Herzens Schoene" (altdeu10
#: No. 104), four bar lines before the first note. abc2xml wrote an empty measure for each.
EMPTY_BAR_TUNES = {
    "double_bar_lines": ("X:89\nM:3/4\nL:1/16\nK:C\n(d2ef) \\\n| g4 (g3b) ((ba)(gf)) | G4 ||\n"
                         "|| (d3c) \\\n| (B3A) (G3A) (B3^c) | G4 |]\n", 6),
    "bar_lines_before_the_first_note": ("X:104\nM:4/2\nL:1/4\nK:F\n |  |  |  | z2F2F2F2 | A3GF2F2 | G4A4\n"
                                        "A4 | c4c2A4B2 | G4F4 |]\n", 5),
}


@pytest.mark.parametrize("name", EMPTY_BAR_TUNES)
def test_an_empty_bar_is_not_a_measure(name):
    from engine.score.formats import read_score

    text, bars = EMPTY_BAR_TUNES[name]
    document = read_score(text.encode(), f"{name}.abc")
    rows = measure_notes(document)
    assert [len(row) for row in rows] == [bars] and all(rows[0])
    assert changed_measures(rows, measure_notes(abc_round_trip(document)))[1] == []
    numbers = [measure.number for measure in document.layout.measures[0]]
    assert numbers == list(range(1, bars + 1))


def test_a_tune_without_an_empty_bar_keeps_abc2xml_s_text():
    from engine.score.notagen_abc import _abc2xml, abc_to_musicxml

    tune = "X:1\nM:3/4\nL:1/8\nK:G\n|: d2 e2 f2 | g6 :|\n"
    assert abc_to_musicxml(tune) == _abc2xml.fixDoctype(_abc2xml.getXmlDocs(tune)[0])


def test_invisible_notes_are_named_as_such_where_they_are_lost():
    """Haydn, Op. 1 No. 1, iii (music21 corpus), bars 3-4: a trill played from invisible notes of a second
    voice; ABC has no invisible note, so the trip loses them, and the warning says that is all it lost."""
    score = music21.corpus.parse("haydn/opus1no1/movement3.mxl").measures(3, 4)
    document = ScoreDocument(score_to_musicxml(score), "trill")
    after = measure_notes(abc_round_trip(document))
    changed = changed_measures(measure_notes(document), after)[1]
    assert changed and changed_measures(measure_notes(document, printed_only=True), after)[1] == []
    (line,) = notation_losses(document, abc_round_trip(document))
    assert f"{len(changed)} of them lose only invisible notes" in line


def test_parts_that_end_early_get_rests_to_the_end_and_round_trip():
    """Josquin, "Petite camusette" (music21 corpus): one ABC tune per part, the parts' final notes of different
    lengths (38 and 40 measures); NotaGen's pipeline refused a piece whose voices have unequal bar counts."""
    path = music21.common.getCorpusFilePath() / "josquin" / "petiteCamusette.abc"
    ref = PieceRef(id="josquin", source="music21", path=str(path), kind="abc-voices", work="josquin",
                   split="train", title="Petite camusette")
    record = check_score(ref)
    assert record["round_trip"] and record["intact"] == record["measures"] == 5 * 40


def test_reading_a_musicxml_file_keeps_its_notes(tmp_path):
    """The opening check: a file read as stored, and one whose text reading repairs (a metronome mark without a
    beat unit, which music21 cannot read), both with every note kept."""
    from training.roundtrip import opening_survey

    presto = ('<?xml version="1.0" encoding="UTF-8"?><score-partwise version="3.1"><part-list><score-part id="P1">'
              '<part-name>Violin</part-name></score-part></part-list><part id="P1"><measure number="1"><attributes>'
              '<divisions>1</divisions></attributes><direction><direction-type><metronome><beat-unit></beat-unit>'
              '<per-minute>96</per-minute></metronome></direction-type><sound tempo="384"/></direction><note><pitch>'
              '<step>E</step><octave>5</octave></pitch><duration>4</duration><type>whole</type></note></measure>'
              '</part></score-partwise>')
    (tmp_path / "presto.musicxml").write_text(presto, encoding="utf-8")
    pieces = [PieceRef(id=path.name, source="tests", path=str(path), kind="file", work="", split="", title=path.stem)
              for path in (tmp_path / "presto.musicxml", DATA / "typographic_quote.musicxml")]
    assert opening_survey(pieces).splitlines()[0] == ("MusicXML files: 2; read as stored: 1; text repaired, every "
                                                      "note kept: 1; notes changed or refused: 0")
    assert check_score(pieces[1])["opening_changed"] == 0


def test_a_voice_left_out_of_a_short_bar_rests_the_whole_bar():
    """A bar line the model leaves a voice out of gets a rest as long as the bar (`restore_rests`, the
    official `rest_unreduce`); in a short last bar that is `z5` (5/8), which abc2xml typed as an eighth rest,
    so the page drew an eighth rest (a continuation of Bach's BWV 24.6). Untyped, verovio draws one whole-bar
    rest and music21 reads its 5/8; a rest of a note value keeps its type."""
    from engine.render.engrave import Engraver
    from engine.score.notagen_abc import interleaved_to_musicxml

    text = "X:1\nL:1/8\nM:4/4\nK:C\nV:1 treble\nV:2 bass\n[V:1]c8|[V:2]z4 z4|\n[V:1]c4 d|]\n"
    musicxml = interleaved_to_musicxml(text)
    bars = music21.converter.parse(musicxml, format="musicxml").parts[1].getElementsByClass("Measure")
    assert [(rest.quarterLength, rest.duration.type) for rest in bars[0].notesAndRests] == [(2.0, "half")] * 2
    (rest,) = bars[1].notesAndRests
    assert rest.isRest and rest.quarterLength == 2.5 and bars[1].duration.quarterLength == 2.5
    svg = Engraver().engrave(musicxml).pages[0]
    assert svg.count('class="mRest"') == 1 and svg.count('class="rest"') == 2
