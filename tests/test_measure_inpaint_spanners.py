"""Spanners crossing the edge of rewritten measures are closed (engine.score.spanners): real songs
with slurs, hairpins and a pedal line cut by the locks keep every start with its stop, and say which
locked measures had to change."""

import pytest
import torch

from engine.measure.check_inpaint import CORPORA, check
from engine.measure.context import MeasureLM
from engine.measure.inpaint import inpaint
from engine.score.splice import measure_texts, unmatched_spanners
from engine.score.document import ScoreDocument
from engine.score.formats import read_score_file
from tests.test_measure_model import tiny_config

SONGS = CORPORA / "openscore-lieder" / "scores"
pytestmark = pytest.mark.skipif(not SONGS.is_dir(), reason="the shared corpora are not here")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return MeasureLM(tiny_config()).eval()


def _rewrite_columns(document, columns):
    """Locked cells: every measure but those of `columns` (0-based)."""
    return {(p, m) for p in range(document.n_parts) for m in range(document.n_measures) if m not in columns}


@pytest.mark.parametrize("name, columns, expected", [
    # a voice slur tied over the bar into 17, a piano hairpin from 12 into 13, a piano slur from the last
    # note of 21 into 22 and one from 23 into 24 (0-based columns)
    ("Brahms_Johannes__8_Lieder_und_Gesange_Op_57_2_Wenn_du_nur_zuweilen_lachelst__lc5107106.mxl", {13, 17, 22},
     ["slur removed in Singstimme Voice m. 17", "hairpin closed in Pianoforte m. 13",
      "slur removed in Pianoforte m. 22", "slur reopened in Pianoforte m. 24"]),
    # hairpins over several measures, in the voice and the piano: cut at one end, or on both sides of a hole
    ("Le_Beau_Luise_Adolpha__5_Lieder_Op_7_2_Ein_Gebet__lc6575669.mxl", {0, 14, 34, 41, 65},
     ["hairpin closed in Singstimme Voice m. 34", "hairpin reopened in Singstimme Voice m. 36",
      "hairpin closed in Pianoforte m. 34", "hairpin reopened in Pianoforte m. 36"]),
    # a piano pedal from column 9 into 10; a voice slur from 20 ending on the first note of 21
    ("Kinkel_Johanna__6_Lieder_Op_19_4_Beduinen_Romanze__lc5988442.mxl", {10, 20},
     ["pedal line closed in Pianoforte m. 9", "slur removed in Singstimme Voice m. 21"]),
])
def test_spanners_cut_by_the_locks_are_closed(model, name, columns, expected):
    document = read_score_file(SONGS / name)
    assert unmatched_spanners(document.musicxml) == set()
    locked = _rewrite_columns(document, columns)
    result = inpaint(document, locked, model=model, seed=0)
    after = result.document.musicxml
    assert unmatched_spanners(after) == set()
    assert ScoreDocument(after).layout.measures  # music21 reads it
    warning = next(w for w in result.warnings if w.startswith("spanners"))
    for change in expected:
        assert change in warning.split(": ", 1)[1].split(", ")
    before, now = measure_texts(document.musicxml), measure_texts(after)
    changed = sum(before[i][m] != now[i][m] for i in range(len(before)) for m in range(len(before[i])) if m not in columns)
    assert changed == len(warning.split(", "))  # every locked measure changed is named, no other changed
    assert {name: found for name, found in check(document, locked, model).items() if found} == {}


def _one_part(*measures: str) -> str:
    body = "".join(f'<measure number="{n + 1}">{text}</measure>' for n, text in enumerate(measures))
    return ('<?xml version="1.0" encoding="UTF-8"?><score-partwise version="3.1"><part-list><score-part id="P1">'
            f'<part-name>Flauto</part-name></score-part></part-list><part id="P1">{body}</part></score-partwise>')


def _note(step: str, notations: str = "") -> str:
    marks = f"<notations>{notations}</notations>" if notations else ""
    return f"<note><pitch><step>{step}</step><octave>5</octave></pitch><duration>1</duration><voice>1</voice>{marks}</note>"


def test_marks_pair_by_kind_and_number_and_cut_spanners_close_on_the_locked_side():
    from engine.score import spanners
    from engine.score.splice import splice_measures

    wedge = '<direction><direction-type><wedge type="{}" number="1"/></direction-type></direction>'
    first = wedge.format("crescendo") + _note("C", '<slur type="start" number="1"/>') + _note("D")
    second = _note("E", '<slur type="stop" number="1"/>') + wedge.format("stop") + _note("F")
    xml = _one_part(first, second, _note("G") + _note("A"))
    assert unmatched_spanners(xml) == set()
    assert unmatched_spanners(xml.replace('type="stop" number="1"/></notations>', 'type="stop" number="2"/></notations>')) == {
        (0, 0, "slur", "1", "start"), (0, 1, "slur", "2", "stop")}
    exported = _one_part("<attributes><divisions>1</divisions></attributes>" + _note("B") + _note("B"), _note("B") + _note("B"))
    spliced, warnings = splice_measures(xml, exported, 1, [{1}])
    assert unmatched_spanners(spliced) == set()
    assert warnings == ["spanners crossing into rewritten measures: hairpin closed in Flauto m. 1, slur closed in Flauto m. 1"]
    kept = measure_texts(spliced)[0][0]
    assert '<slur type="stop" number="1"/>' in kept.split("<step>D</step>")[1]  # on the voice's last note
    assert kept.endswith('<direction><direction-type><wedge type="stop" number="1"/></direction-type></direction></measure>')
    assert spanners.without_marks(kept) == spanners.without_marks(measure_texts(xml)[0][0])
