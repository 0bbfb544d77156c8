"""NotaGen's notation pipeline against the outputs of the official one (shared/fixtures/notagen_reference).

Every stage must equal the official text byte for byte: xml2abc, cleaning, interleaving (rotate_abc),
transposition and rest reduction, for all four pieces and both keys of each.
"""
from __future__ import annotations

import importlib.util
import io
import json
import re
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import music21
import pytest
from engine.errors import ScoreError
from engine.score import notagen_abc as nabc

# abc2xml calls pyparsing's deprecated camelCase API; pytest would list hundreds of those warnings.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:abctoolkit.abc2xml")

#: the command-line scripts of abctoolkit, to compare the in-process conversions with
XML2ABC_SCRIPT = importlib.util.find_spec("abctoolkit.xml2abc").origin
ABC2XML_SCRIPT = importlib.util.find_spec("abctoolkit.abc2xml").origin

#: piece folder -> (the two keys the fixtures hold, the key the official index records)
PIECES = {
    "bwv66.6_m0-4": (("A", "Eb"), "F#min"),
    "fixture_reel": (("D", "F"), "D"),
    "fixture_toccata": (("Bb", "E"), "Bb"),
    "haydn_op74no1_mv1_m1-8": (("C", "F#"), "C"),
}
PIECE_KEYS = [(piece, key) for piece, (keys, _) in PIECES.items() for key in keys]


@pytest.fixture(scope="session")
def preprocess_dir(notagen_reference: Path) -> Path:
    return notagen_reference / "preprocess"


def read(folder: Path, name: str) -> str:
    return (folder / name).read_text(encoding="utf-8")


@pytest.fixture(scope="session")
def cleaned(preprocess_dir: Path) -> dict[str, list[str]]:
    return {piece: nabc.clean_abc(read(preprocess_dir / piece, "xml2abc.abc")) for piece in PIECES}


def test_fixture_folders_are_the_expected_ones(preprocess_dir: Path) -> None:
    assert sorted(p.name for p in preprocess_dir.iterdir()) == sorted(PIECES)
    for piece, (keys, _) in PIECES.items():
        assert sorted(p.name for p in (preprocess_dir / piece).glob("reduced_*.abc")) == sorted(f"reduced_{k}.abc" for k in keys)


def test_keys_are_the_official_fifteen() -> None:
    official = {"C", "G", "D", "A", "E", "B", "F#", "C#", "F", "Bb", "Eb", "Ab", "Db", "Gb", "Cb"}
    assert len(nabc.KEYS) == 15 and set(nabc.KEYS) == official


@pytest.mark.parametrize("piece", PIECES)
def test_xml_to_abc_equals_official(preprocess_dir: Path, piece: str) -> None:
    folder = preprocess_dir / piece
    source = (folder / "source.musicxml").read_bytes()
    expected = read(folder, "xml2abc.abc")
    assert nabc.xml_to_abc(source) == expected
    assert nabc.xml_to_abc(source.decode("utf-8")) == expected


def test_xml_to_abc_equals_the_command_line(preprocess_dir: Path, tmp_path: Path) -> None:
    source = preprocess_dir / "haydn_op74no1_mv1_m1-8" / "source.musicxml"
    run = subprocess.run(
        [sys.executable, XML2ABC_SCRIPT, "-d", "8", "-c", "6", "-x", str(source)],
        capture_output=True, timeout=120, cwd=tmp_path,
    )
    assert run.returncode == 0
    assert nabc.xml_to_abc(source.read_bytes()) == run.stdout.decode("utf-8")


def test_xml_to_abc_reads_mxl(preprocess_dir: Path) -> None:
    source = (preprocess_dir / "fixture_reel" / "source.musicxml").read_bytes()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("META-INF/container.xml", '<container><rootfiles><rootfile full-path="score.xml"/></rootfiles></container>')
        archive.writestr("score.xml", source)
    assert nabc.xml_to_abc(buffer.getvalue()) == nabc.xml_to_abc(source)


@pytest.mark.parametrize("piece", PIECES)
def test_clean_abc_equals_official(preprocess_dir: Path, cleaned: dict[str, list[str]], piece: str) -> None:
    assert "".join(cleaned[piece]) == read(preprocess_dir / piece, "cleaned.abc")


@pytest.mark.parametrize("piece", PIECES)
def test_interleave_equals_official(preprocess_dir: Path, cleaned: dict[str, list[str]], piece: str) -> None:
    assert nabc.interleave(cleaned[piece]) == read(preprocess_dir / piece, "interleaved.abc")


@pytest.mark.parametrize("piece", PIECES)
def test_original_key(cleaned: dict[str, list[str]], piece: str) -> None:
    assert nabc.original_key(cleaned[piece]) == PIECES[piece][1]


def test_tonic_key() -> None:
    assert nabc.tonic_key("F#min") == "A"
    assert nabc.tonic_key("Bb") == "Bb"
    with pytest.raises(ScoreError):
        nabc.tonic_key("H#lyd")


@pytest.mark.parametrize(("piece", "key"), PIECE_KEYS)
def test_transpose_and_reduce_equal_official(preprocess_dir: Path, cleaned: dict[str, list[str]], piece: str, key: str) -> None:
    folder = preprocess_dir / piece
    transposed = nabc.transpose(cleaned[piece], key)
    assert "".join(transposed) == read(folder, f"transposed_{key}.abc")
    assert nabc.reduce_rests(transposed) == read(folder, f"reduced_{key}.abc")


@pytest.mark.parametrize("piece", PIECES)
def test_preprocess_end_to_end(preprocess_dir: Path, piece: str) -> None:
    folder = preprocess_dir / piece
    keys = PIECES[piece][0]
    text = nabc.preprocess((folder / "source.musicxml").read_bytes(), keys=keys)
    assert text.interleaved == read(folder, "interleaved.abc")
    assert text.original_key == PIECES[piece][1]
    assert "".join(text.cleaned) == read(folder, "cleaned.abc")
    assert set(text.reduced) == set(keys)
    for key in keys:
        assert text.reduced[key] == read(folder, f"reduced_{key}.abc")
        assert text.reduced_in(key) == read(folder, f"reduced_{key}.abc")


def test_preprocess_makes_all_fifteen_keys_by_default(preprocess_dir: Path) -> None:
    text = nabc.preprocess((preprocess_dir / "fixture_reel" / "source.musicxml").read_bytes())
    assert tuple(text.reduced) == nabc.KEYS
    assert text.reduced["F"] == read(preprocess_dir / "fixture_reel", "reduced_F.abc")


def test_reduce_rests_drops_the_all_rest_voice(preprocess_dir: Path) -> None:
    reduced = read(preprocess_dir / "fixture_toccata", "reduced_Bb.abc")
    assert "[V:1]c/e/g/c'/ e'/c'/g/e/ c/G/E/C/ C2|\n" in reduced  # V:2 `x8` left out


def test_reduce_rests_writes_an_empty_line_for_a_bar_where_every_voice_rests() -> None:
    lines = nabc.clean_abc("X:1\nL:1/8\nM:4/4\nK:C\nV:1\nV:2\nV:1\nA8|z8|B8|]\nV:2\nC8|x8|D8|]\n")
    assert nabc.reduce_rests(lines).endswith("[V:1]A8|[V:2]C8|\n\n[V:1]B8|][V:2]D8|]\n")


# --- [r:i/j] annotations -------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_annotate_bars_equals_official_stream_text(notagen_reference: Path, n: int) -> None:
    data = json.loads((notagen_reference / f"tokenize_{n}.json").read_text(encoding="utf-8"))
    annotated = nabc.annotate_bars(data["text"])
    assert annotated == data["stream_text"]
    assert annotated == "".join(data["metadata_lines"] + data["stream_tunebody_lines"])
    assert nabc.strip_bar_annotations(annotated) == data["text"]


def test_strip_bar_annotations_only_touches_line_starts() -> None:
    assert nabc.strip_bar_annotations("K:C\n[r:0/1][V:1]A8|\n[r:1/0][V:1]\"[r:x]\"B8|") == 'K:C\n[V:1]A8|\n[V:1]"[r:x]"B8|'


# --- reverse path ------------------------------------------------------------------------------------


@pytest.mark.parametrize("piece", PIECES)
def test_restore_rests_leaves_full_interleaved_text_unchanged(preprocess_dir: Path, piece: str) -> None:
    interleaved = read(preprocess_dir / piece, "interleaved.abc")
    assert nabc.restore_rests(interleaved) == interleaved


def test_restore_rests_fills_the_left_out_voice(preprocess_dir: Path) -> None:
    reduced = nabc.annotate_bars(read(preprocess_dir / "fixture_toccata", "reduced_Bb.abc"))
    restored = nabc.restore_rests(reduced)
    # Braces do not group voices in the official rest_unreduce: V:2 is its own group, so it rests with z.
    assert "[V:1]c/e/g/c'/ e'/c'/g/e/ c/G/E/C/ C2|[V:2]z8|\n" in restored
    assert "[r:" not in restored


def test_restore_rests_uses_x_for_later_voices_of_a_round_bracket_group() -> None:
    text = (
        "%%score (1 2) 3\nL:1/8\nM:3/4\nK:C\nV:1\nV:2\nV:3\n"
        "[r:0/2][V:1]|:A6|[V:2]C6|[V:3]E,6|\n"
        "[r:1/1][V:3]F,2 G,4:|\n"
        "[r:2/0]\n"
    )
    restored = nabc.restore_rests(text).splitlines()
    assert restored[-3] == "[V:1]|:A6|[V:2]C6|[V:3]E,6|"
    assert restored[-2] == "[V:1]z6:|[V:2]x6:|[V:3]F,2 G,4:|"
    # A bar line with no voice at all rests everywhere with the previous bar's length and barline.
    assert restored[-1] == "[V:1]z6:|[V:2]x6:|[V:3]z6:|"


def test_restore_rests_without_score_line_and_unmeasurable_first_bar() -> None:
    restored = nabc.restore_rests("L:1/8\nM:3/4\nK:C\nV:1\nV:2\n[V:2]A6 [C!x]|\n")
    assert restored.splitlines()[-1] == "[V:1]z6|[V:2]A6 [C!x]|"


def test_restore_rests_writes_a_voice_declared_twice_once_per_bar() -> None:
    """A generated header can declare V:2 twice; the official code would then write voice 2 twice per bar
    (abc2xml made twice as many measures of it). Measured: 14 of 48 pieces of the shipped model."""
    restored = nabc.restore_rests("L:1/8\nM:4/4\nK:C\nV:1 treble\nV:2 bass\nV:2 bass\n[V:1]A8|[V:2]C8|\n[V:1]B8|\n")
    assert restored.splitlines()[-2:] == ["[V:1]A8|[V:2]C8|", "[V:1]B8|[V:2]z8|"]


@pytest.mark.parametrize(("piece", "key"), PIECE_KEYS)
def test_round_trip_through_musicxml(preprocess_dir: Path, piece: str, key: str) -> None:
    folder = preprocess_dir / piece
    xml = nabc.interleaved_to_musicxml(nabc.annotate_bars(read(folder, f"reduced_{key}.abc")))
    score = music21.converter.parseData(xml, format="musicxml")
    source = music21.converter.parse(str(folder / "source.musicxml"))
    assert len(score.parts) == len(source.parts)
    assert [len(p.getElementsByClass("Measure")) for p in score.parts] == [
        len(p.getElementsByClass("Measure")) for p in source.parts
    ]


def test_abc_to_musicxml_equals_the_command_line(preprocess_dir: Path, tmp_path: Path) -> None:
    abc_path = tmp_path / "piece.abc"
    abc_path.write_text(read(preprocess_dir / "haydn_op74no1_mv1_m1-8", "interleaved.abc"), encoding="utf-8")
    run = subprocess.run(
        [sys.executable, ABC2XML_SCRIPT, "-o", str(tmp_path / "out"), str(abc_path)],
        capture_output=True, timeout=120, cwd=tmp_path,
    )
    assert run.returncode == 0
    command_line = (tmp_path / "out" / "piece.xml").read_text(encoding="utf-8")
    ours = nabc.abc_to_musicxml(abc_path.read_text(encoding="utf-8"))

    def undated(xml: str) -> str:
        return re.sub(r"<encoding-date>[^<]*</encoding-date>", "", xml)

    assert undated(ours) == undated(command_line)


def test_abc_to_musicxml_never_reads_included_files(tmp_path: Path) -> None:
    secret = tmp_path / "secret.abc"
    secret.write_text("T:TOPSECRET\n", encoding="utf-8")
    xml = nabc.abc_to_musicxml(f"X:1\n%%abc-include {secret}\nI:abc-include {secret}\nL:1/8\nM:4/4\nK:C\nA8|\n")
    assert "TOPSECRET" not in xml and "<note>" in xml


# --- failures and side effects -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: nabc.xml_to_abc(b"not xml"), "not well-formed"),
        (lambda: nabc.xml_to_abc('<!DOCTYPE a [<!ENTITY e "x">]><score-partwise>&e;</score-partwise>'), "refused"),
        (lambda: nabc.xml_to_abc('<score-partwise version="3.1"><part-list/></score-partwise>'), "no notes"),
        (lambda: nabc.xml_to_abc(b"PK\x03\x04broken"), ".mxl"),
        (lambda: nabc.clean_abc("X:1\nL:1/8\nM:4/4\nK:C\nV:1\nV:2\nV:1\nA8|B8|\nV:2\nC8|\n"), "unequal numbers of bars"),
        (lambda: nabc.clean_abc("X:1\nL:1/8\nM:4/4\nK:C\nA8|B8|\n"), "V:1"),
        (lambda: nabc.transpose(["K:C\n"], "H"), "unknown key"),
        (lambda: nabc.preprocess(b"<x/>", keys=("Q",)), "unknown key"),
        (lambda: nabc.abc_to_musicxml(""), "abc2xml"),
        (lambda: nabc.restore_rests("L:1/8\nK:C\nabc|\n"), "no bar lines"),
        (lambda: nabc.restore_rests("L:1/8\nK:C\n[V:1]abc|\n"), "declares no voices"),
    ],
)
def test_failures_are_one_line_score_errors(call, message: str) -> None:
    with pytest.raises(ScoreError, match=re.escape(message)) as info:
        call()
    assert "\n" not in str(info.value)


def test_nothing_reaches_stdout_or_stderr(preprocess_dir: Path, capfd: pytest.CaptureFixture[str]) -> None:
    text = nabc.preprocess((preprocess_dir / "haydn_op74no1_mv1_m1-8" / "source.musicxml").read_bytes(), keys=("C",))
    nabc.interleaved_to_musicxml(text.reduced["C"])  # abc2xml warns about a tie between different pitches
    nabc.clean_abc("X:1\nL:1/8\nM:4/4\nK:C\nV:1\nV:2\nV:1\nA8|\nV:2\nC4|\n")  # abctoolkit prints "Odd bar duration"
    with pytest.raises(ScoreError):
        nabc.xml_to_abc('<score-partwise version="3.1"><part-list/></score-partwise>')
    out, err = capfd.readouterr()
    assert (out, err) == ("", "")


def test_captured_output_is_per_thread(capsys: pytest.CaptureFixture[str]) -> None:
    with nabc.abctoolkit_output() as messages:
        assert nabc.voice_bar_duration("(0:0:2D E|") is None
    assert messages and "Illegal (p:q:r" in messages[0]
    # Outside the context abctoolkit's own print() behaves as before.
    from abctoolkit.duration import calculate_bartext_duration

    calculate_bartext_duration("(0:0:2D E")
    assert "Illegal (p:q:r" in capsys.readouterr().out


def test_conversions_are_safe_from_several_threads(preprocess_dir: Path) -> None:
    sources = {piece: (preprocess_dir / piece / "source.musicxml").read_bytes() for piece in PIECES}
    expected = {piece: read(preprocess_dir / piece, "xml2abc.abc") for piece in PIECES}
    results: dict[tuple[str, int], str] = {}

    def work(piece: str, i: int) -> None:
        results[(piece, i)] = nabc.xml_to_abc(sources[piece])
        nabc.abc_to_musicxml(results[(piece, i)])

    threads = [threading.Thread(target=work, args=(piece, i)) for piece in PIECES for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(results[(piece, i)] == expected[piece] for piece in PIECES for i in range(2))
