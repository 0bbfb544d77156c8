"""What the decoder lets NotaGen say beyond durations (engine/notagen/written_subset.py, through BarConstraint):
annotations, decorations per note, jumps, header voice lines."""
from __future__ import annotations

import random

import pytest

from engine.notagen.bar_constraint import BarConstraint
from engine.notagen.bar_reader import EOS_CHAR, BarReader
from engine.notagen.written_subset import _annotation_texts, annotation_allows, annotation_text_shaped, part_name_allowed, voice_line_allows

HEADER = "L:1/8\nM:4/4\nK:C\nV:1 treble\nV:2 bass\n"
FIRST_LINE = "[r:0/6][V:1]c8|[V:2]C8|\n"


def reader_after(text: str, header: str = HEADER) -> BarReader:
    reader = BarReader()
    reader.feed_text(header + text)
    return reader


def allowed(body: str) -> set[str]:
    """Allowed chars after a first full bar line and `body` (on the second body line)."""
    return BarConstraint().allowed_chars(reader_after(FIRST_LINE + body))


def writable(body: str, text: str) -> bool:
    """Whether the constraint lets `text` be written, char by char, after `body`."""
    reader, constraint = reader_after(FIRST_LINE + body), BarConstraint()
    for char in text:
        if not constraint.allows_char(reader, char) or char not in constraint.allowed_chars(reader):
            return False
        reader.feed(char)
    return True


def typed(text: str) -> bool:
    """Whether annotation `text` (with its closing quote) can be typed char by char."""
    return all(annotation_allows(text[:i], text[i]) for i in range(len(text)))


# ------------------------------------------------------------------------------------------ annotations
@pytest.mark.parametrize("text", ['_cresc."', '^a tempo"', '^ad lib."', '^SEGUE"', '_sempre poco a poco cresc."', '^pizz."', '^4"',
                                  '^(dolce)"', '^M. D."', '^m.v."', '^Andante con moto"', 'G7"', 'Am"', 'Bbm/F"', 'F#m7/C#"',
                                  'Cmaj7"', 'Esus4"'])
def test_real_annotations_and_chord_symbols_can_be_written(text):
    assert typed(text)


@pytest.mark.parametrize("text", ['4 c2 B2- A2 F2"', '^4 c2 B2- A2 F2"', '_as e4- d4- c2"', '^e d c"', '^c2|d2"', '^"', '"',
                                  'Cma7"', 'C/"', 'E76"', 'A4"', '^Blle no snm^"', "^" + "cresc " * 6 + '"',
                                  '^cB AA BA GGE"', '_A, F, D, E,"', '^c\'c\'b"', '>dolce"'])
def test_annotations_that_look_like_music_or_run_on_are_refused(text):
    assert not typed(text)


def test_annotations_are_texts_of_real_scores():
    """Only the texts real scores' annotations hold (`annotation_texts.txt`), as they write them: the shipped
    model wrote "fgerrleno" and "4hzn" from free letters, and "Andante cor cire A GG AFFETTO" from real words."""
    assert typed('^Dolce"') and typed('_poco rit."') and typed('^Andante con moto"')
    assert not typed('^fgerrleno"') and not typed('^4hzn"') and not typed('^Allegrissimo"')
    assert not typed('^Andante cor cire A GG AFFETTO"') and not typed('^dolce cresc. dolce"')
    assert not annotation_allows("^fg", "e") and annotation_allows("^dol", "c")
    assert annotation_allows("^Andante con", " ") and not annotation_allows("^Andante co", "x")
    assert not annotation_allows("^Andante con", '"')  # not a whole text: it goes on ("con moto", "con fuoco"...)


def test_the_texts_are_shaped_like_directions():
    """The list keeps what a score prints as a direction, and no ABC music or syllables of a lyric."""
    texts = _annotation_texts()[0]
    assert len(texts) > 1000 and all(annotation_text_shaped(text) for text in texts)
    assert annotation_text_shaped("poco a poco cresc.") and annotation_text_shaped("(dolce)") and annotation_text_shaped("1st")
    for text in ("c2 B2- A2", "co- me me", "te - -", " sostenuto", "a  tempo", "A, F, D", "cB", "x" * 31, "\\na tempo"):
        assert not annotation_text_shaped(text), text


def test_annotations_in_the_decoder():
    assert writable("[r:1/5][V:1]", '"^dolce"c8|') and writable("[r:1/5][V:1]", '"G7"c8|')
    assert not writable("[r:1/5][V:1]c4", '"^dolce"|')  # it needs its note...
    assert writable("[r:1/5][V:1]c8", '"^D.C."||') and not writable("[r:1/5][V:1]c8", '"^D.C."|[')  # ...or is a jump
    assert not writable("[r:1/5][V:1]", '"^dolce""') and writable("[r:1/5][V:1]", '"^dolce"!p!c8|')  # one a note
    assert not writable("[r:1/5][V:1]", '"^c2 d2"')
    texts = _annotation_texts()[0]  # after `c`: the next chars of real texts (coda, cresc., ...), or the end of "c"
    expected = {text[1] for text in texts if text[:1] == "c" and text[1:]} | ({'"'} if "c" in texts else set())
    assert allowed('[r:1/5][V:1]c4 "^c') == expected


# ------------------------------------------------------------------------------------------ decorations
def test_each_decoration_once_per_note_and_a_few_at_most():
    assert not writable("[r:1/5][V:1]", "!fermata!!fermata!")
    assert not writable("[r:1/5][V:1]", "!accent!!>!")  # aliases count as one
    assert not writable("[r:1/5][V:1]", "!p!!f!")  # one dynamic
    assert writable("[r:1/5][V:1]", "!p!!accent!!fermata!c8|")
    assert not writable("[r:1/5][V:1]", "!p!!accent!!fermata!!tenuto!")
    assert not writable("[r:1/5][V:1]", "..")  # shorthands too
    assert writable("[r:1/5][V:1]", ".Tc8|") and not writable("[r:1/5][V:1]", "T!trill!")


def test_note_decorations_wait_for_a_note_and_never_dangle_before_a_bar_line():
    assert "!" in allowed("[r:1/5][V:1]c8")  # `!fine!`, a hairpin end... may still come
    assert not writable("[r:1/5][V:1]c8", "!fermata!") and not writable("[r:1/5][V:1]c8", "!p!")
    assert not writable("[r:1/5][V:1]c4 ", "!fermata!|")


def test_hairpins_and_pedals_end_only_after_they_began():
    assert not writable("[r:1/5][V:1]c8", "!<)!")
    assert writable("[r:1/5][V:1]", "!<(!c8!<)!|") and writable("[r:1/5][V:1]", "!ped!c8!ped-up!|")
    assert not writable("[r:1/5][V:1]", "!<(!c4!<(!")


def test_jumps_stand_once_right_before_a_double_final_or_repeat_bar_line():
    assert writable("[r:1/5][V:1]c8", "!D.C.!||") and writable("[r:1/5][V:1]c8", "!fine!:|")
    assert not writable("[r:1/5][V:1]c8", "!D.C.!|[") and not writable("[r:1/5][V:1]c4", "!D.C.!")
    assert not writable("[r:1/5][V:1]c8", "!D.C.! ")
    first = BarConstraint().allowed_chars(reader_after("[r:0/6][V:1]c8!"))
    assert "D" not in first and "f" not in first  # never in the first bar line (the piece's start)
    later = "[r:1/5][V:1]c8!D.C.!||[V:2]C8"
    assert writable(later, "!D.C.!||")  # the other voices of that bar line may repeat it
    assert not writable(later + "||\n[r:2/4][V:1]c8", "!D.C.!")  # but no later bar line
    assert not writable("[r:1/5][V:1]c8", "!D.S.!")  # D.S. goes back to a segno
    assert writable("[r:1/5][V:1]!segno!c8|[V:2]C8|\n[r:2/4][V:1]c8", "!D.S.!|]")
    assert not writable("[r:1/5][V:1]c4", "!segno!") and not writable("[r:1/5][V:1]c4", "S")  # a segno starts a bar
    assert not writable(later + "||\n[r:2/4][V:1]c8", "!fine!")  # no jump after the jump back
    assert writable("[r:1/5][V:1]c8!fine!||[V:2]C8||\n[r:2/4][V:1]c8", "!D.C.!|]")


def test_no_heavy_bar_line_for_a_stray_bracket():
    """Real scores close bars with `| || |] :| :: |:`; `[` in a full bar has nothing to open (no `[|`)."""
    assert "[" not in allowed("[r:1/5][V:1]c8") and not writable("[r:1/5][V:1]c4", "[|")
    assert writable("[r:1/5][V:1]", "[K:D]c8|") and writable("[r:1/5][V:1]c4", "[ce]4|")


def test_ties_follow_a_note_and_slurs_close_only_when_open():
    assert writable("[r:1/5][V:1]", "c4-c4|") and writable("[r:1/5][V:1]", "[ce]4-[ce]4|")
    assert not writable("[r:1/5][V:1]c4", "--") and not writable("[r:1/5][V:1]c4 ", "-")
    assert not writable("[r:1/5][V:1]z4", "-") and not writable("[r:1/5][V:1]!p!", "-")
    assert not writable("[r:1/5][V:1]c4", ")") and writable("[r:1/5][V:1]", "(c4 d4)|")


# ---------------------------------------------------------------------------------------------- pitches
def test_pitches_stay_in_a_written_range():
    """Capitals take up to 4 commas, small letters up to 3 apostrophes, never the other mark (xml2abc's
    spelling): a model that repeats `,` gets a note it can play, not `B,,,,,,,,`."""
    body = "[r:1/5][V:1]"
    assert writable(body, "C,,,,2") and not writable(body, "C,,,,,") and not writable(body, "C'")
    assert writable(body, "b'''2") and not writable(body, "b''''") and not writable(body, "c,")


def test_lengths_are_note_values():
    """Plain, dotted or double-dotted values (L:1/8 here): `c5` or `c11/8` would be tied notes in the score,
    which is how bars the model fell short of got filled with odd lengths."""
    body = "[r:1/5][V:1]"
    assert all(writable(body, f"c{length} ") for length in ("", "2", "3", "4", "6", "7", "8", "/", "3/2", "/4", "3/8"))
    assert not any(writable(body, f"c{length} ") for length in ("5", "9", "11/8", "88/64", "5/4"))
    assert writable(body, "c4 z3 c|") and not writable(body, "c4 z5")


def test_a_chord_holds_six_notes_at_most_and_can_always_close():
    six = "[r:1/5][V:1][C,E,G,CEG"
    assert writable(six, "]2")
    assert not writable(six, "c") and not writable(six, "^c") and not writable(six, "=")
    assert writable("[r:1/5][V:1]", "[C,E,G,CE^G]2")  # the sixth note's own accidental
    assert "]" in allowed(six)


# --------------------------------------------------------------------------------------------- header
def header_reader(text: str) -> BarReader:
    """A reader of header lines as the model writes them (each line's patch ends with EOS)."""
    reader = BarReader()
    reader.feed_text(text.replace("\n", "\n" + EOS_CHAR))
    return reader


def header_allowed(text: str) -> set[str]:
    return BarConstraint().allowed_chars(header_reader(text))


def header_writable(prefix: str, text: str) -> bool:
    reader, constraint = header_reader(prefix), BarConstraint()
    for char in text:
        if char not in constraint.allowed_chars(reader):
            return False
        reader.feed(char)
        if char == "\n":
            reader.feed(EOS_CHAR)
    return True


def test_voices_are_numbered_as_the_score_line_declares_them():
    score = "%%score { 1 | 2 } 3\nL:1/8\nM:4/4\nK:C\n"
    assert header_allowed(score + "V:") == {"1"}
    assert header_allowed(score + "V:1\nV:") == {"2"}
    assert not header_writable(score, "V:416") and not header_writable(score, "V:2")
    assert header_writable("L:1/8\nM:4/4\nK:C\n", "V:1 treble\n") and "V" not in header_allowed("K:C\nV:1\n")
    assert not header_writable("", "%%score 1 416\n") and not header_writable("", "%%score 1 3\n")
    assert header_writable("", "%%score { ( 1 4 ) | ( 2 3 ) }\n")  # numbered 1..N, in any order
    assert "3" not in header_allowed("%%score 1 2 3 4 | ")  # a number that could only repeat one: no dead end


def test_a_score_line_is_well_formed_and_can_always_be_finished():
    """Groups two deep at most, none empty, `|` only between voices or groups, single spaces; and a random
    walk over the allowed chars never reaches a line it cannot finish (the model once wrote 190 chars of
    `((([({` and was left with no allowed char)."""
    assert header_writable("", "%%score [ ( 1 2 ) ( 3 4 ) ] | { 5 | 6 }\n")
    for bad in ("%%score ((( 1", "%%score ( ) 1", "%%score | 1", "%%score 1 | | 2", "%%score 1  2", "%%score [ 1 | ]"):
        assert not header_writable("", bad)
    constraint, rng = BarConstraint(), random.Random(0)
    for _ in range(40):
        reader = header_reader("%Classical\n")
        reader.feed_text("%%score")
        for _ in range(400):
            allowed = constraint.allowed_chars(reader)
            assert allowed, reader.buffer
            if allowed == {"\n"} or ("\n" in allowed and rng.random() < 0.01):
                break
            reader.feed(rng.choice(sorted(allowed - {"\n"})))
        assert len(reader.buffer) <= 200 and "\n" in constraint.allowed_chars(reader), reader.buffer


def test_header_fields_are_those_of_the_training_data_and_can_be_finished():
    assert not header_allowed("") & set("XTC") and {"%", "L", "M", "K", "Q", "V"} <= header_allowed("")
    assert not header_writable("", "M:/4") and not header_writable("", "M:0/4") and header_writable("", "M:12/8\n")
    assert not header_writable("", "Q:/4") and header_writable("", "Q:1/4=96\n")


def test_part_names_are_made_of_real_names():
    assert voice_line_allows('1 treble nm="Violin I" snm="Vln. I"', True, "1")
    assert voice_line_allows("1 treble ", True, "1") and voice_line_allows('1 bass nm="Chant\\nVoice"', True, "1")
    assert not voice_line_allows('1 treble nm="Blle no"', True, "1") and not part_name_allowed("Blle", False)
    assert not voice_line_allows("1 trebble", True, "1") and not voice_line_allows('1 snm="S." nm="Soprano"', True, "1")
    assert part_name_allowed("Sopr", False) and not part_name_allowed("Soprano ", True)
    assert header_writable("L:1/8\nM:4/4\nK:C\n", 'V:1 treble-8 nm="Tenor" snm="T."\n')


def test_random_annotations_never_reach_a_dead_end():
    """A random walk over the allowed chars of an annotation can always go on or close it (the model once
    wrote `_cermatassto.G, z (B,`, after which nothing was allowed)."""
    rng = random.Random(1)
    chars = [chr(i) for i in range(32, 127)]
    for _ in range(300):
        text = rng.choice("^_")
        while True:
            allowed = [char for char in chars if annotation_allows(text, char)]
            assert allowed, text
            tricky = [char for char in allowed if char in "aBz (),.-'"]  # single letters, groups, marks
            char = rng.choice(tricky if tricky and rng.random() < 0.8 else allowed)
            if char == '"':
                break
            text += char


def test_annotation_texts_are_counted_per_piece_from_above_and_below_text():
    from training.annotation_texts import count_texts

    texts = ['[V:1]"^dolce" c "_Poco rit." d "^dolce" e|', '[V:1]"^dolce" e "G7" f "^c2 B2" g "^4" a|']
    assert count_texts(texts) == {"dolce": 2, "Poco rit.": 1, "4": 1}


def test_a_short_bar_never_ends_inside_a_tuplet_or_a_broken_pair():
    """A first or last bar may be short, but `(3EB/|` has a length abctoolkit cannot count (the round-3 model
    wrote such bars: 0.36 % BAE under the constraint); the tuplet's last note or the pair's second may end it."""
    assert "|" not in allowed('[r:1/0][V:1]c4 G2 (3(E)B/') and "|" not in allowed('[r:1/0][V:1]c2 D>')
    assert "|" not in allowed('[r:0/5][V:1](3EB/')
    assert "|" in allowed('[r:1/0][V:1]c2 (3D,A,B,') and "|" in allowed('[r:1/0][V:1]c2 D>E')
