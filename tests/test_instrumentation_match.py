"""The instrumentation-match rule of the model card (engine/scoring/instrumentation.py)."""
import pytest

from engine.scoring.instrumentation import header_part_names, matches_instrumentation, part_family, piece_matches


@pytest.mark.parametrize("name, family", [
    ("Violin I", "string"), ("Violoncello", "string"), ("Vla.", "string"), ("Violino II.", "string"),
    ("Piano", "keyboard"), ("Pianoforte.", "keyboard"), ("Klavier\\nPiano", "keyboard"), ("Organ", "keyboard"),
    ("Singstimme\\nVoice", "voice"), ("Chant", "voice"), ("Soprano", "voice"), ("Basso", "voice"), ("T.", "voice"),
    ("Flute", "other"), ("Clarinet in C", "other"), ("MusicXML Part", "other"),
])
def test_part_families(name, family):
    assert part_family(name) == family


def test_rules_per_instrumentation():
    quartet = ["Violin I", "Violin II", "Viola", "Violoncello"]
    assert matches_instrumentation("Chamber", quartet)
    assert not matches_instrumentation("Chamber", ["Soprano", "Alto", "Tenor"])
    assert not matches_instrumentation("Chamber", ["Violin"])  # a solo is not chamber music
    assert matches_instrumentation("Art Song", ["Voice", "Piano"])
    assert not matches_instrumentation("Art Song", ["Soprano", "Alto", "Tenor", "Bass"])
    assert not matches_instrumentation("Art Song", ["Flute", "Piano"])
    assert matches_instrumentation("Keyboard", ["Piano"])
    assert not matches_instrumentation("Keyboard", ["Voice", "Piano"])
    assert matches_instrumentation("Choral", ["Soprano", "Alto", "Tenor", "Bass", "Organ"])
    assert not matches_instrumentation("Choral", ["Violin I", "Violin II"])
    assert matches_instrumentation("Vocal-Orchestral", ["Soprano", "Violin"]) is None


def test_reads_the_named_staves_of_a_generated_header():
    abc = ('%%score { ( 1 ) | ( 2 3 ) }\nL:1/8\nM:4/4\nK:G\nV:1 treble nm="Voice" snm="V."\n'
           'V:2 treble nm="Piano" snm="Pno."\nV:3 bass\n[V:1]z8|[V:2]G8|[V:3]G,8|\nV:4 nm="Violin"\n')
    assert header_part_names(abc) == ["Voice", "Piano"]  # the unnamed second piano staff; nothing after the body
    assert piece_matches("Art Song", abc) and not piece_matches("Chamber", abc)
    assert piece_matches("Art Song", "X:1\nK:C\n[V:1]C8|") is False
