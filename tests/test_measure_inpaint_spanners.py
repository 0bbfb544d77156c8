"""Spanners crossing the edge of rewritten measures are closed (engine.measure.spanners): real songs
with slurs and hairpins cut by the locks keep every start with its stop, and say which locked
measures had to change."""

import pytest
import torch

from engine.measure.check_inpaint import CORPORA, check
from engine.measure.context import MeasureLM
from engine.measure.inpaint import inpaint
from engine.measure.splice import measure_texts, unmatched_spanners
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
