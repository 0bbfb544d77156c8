"""Header control: the app writes the ensemble, key, metre and tempo as NotaGen's header, the model the body.

Header text is checked against the official data's headers (the reference fixtures' rest-reduced files);
generation uses the fixtures' tiny trained model (it writes the 4-voice Bach chorale of input 2).
"""
import json
from pathlib import Path

import music21
import pytest

from engine.cli import main
from engine.errors import ScoreError
from engine.notagen.header import (
    STANDARD_ENSEMBLES,
    Ensemble,
    HeaderChoice,
    Part,
    default_ensemble,
    ensembles_for,
    find_ensemble,
    read_header,
    write_header,
)
from engine.notagen.prompts import OFFICIAL_PROMPTS, Prompt, prompts_for_checkpoint, read_prompts
from engine.scoring.instrumentation import matches_instrumentation
from training.ensembles import ensemble_table, labelled_headers
from webui import compose_handlers as compose
from webui.session import Session

HAYDN = Prompt("Classical", "Haydn, Joseph", "Chamber")
QUARTET = find_ensemble("string quartet", HAYDN)


def official_header(path) -> str:
    return "".join(line + "\n" for line in path.read_text().split("\n") if line and not line.startswith("["))


@pytest.mark.parametrize("piece", ["bwv66.6_m0-4/reduced_A.abc", "haydn_op74no1_mv1_m1-8/reduced_C.abc",
                                   "fixture_reel/reduced_D.abc", "fixture_toccata/reduced_E.abc"])
def test_written_headers_are_the_official_data_format(notagen_reference, piece):
    """Read an official header and write it again: the same text, byte for byte (%%score only for several
    staves, a piano's braces, clefs, nm=/snm= on a part's first staff, the unnamed staff's trailing space)."""
    text = official_header(notagen_reference / "preprocess" / piece)
    assert write_header(read_header(text)) == text


def test_a_chosen_header():
    piano_trio = find_ensemble("piano trio", HAYDN)
    header = write_header(HeaderChoice(piano_trio, "Bb minor", "6/8", 72))
    assert header == (
        "%%score 1 2 { 3 | 4 }\nL:1/8\nQ:1/4=72\nM:6/8\nK:Bbmin\n"
        'V:1 treble nm="Violin" snm="Vln."\nV:2 bass nm="Violoncello" snm="Vc."\n'
        'V:3 treble nm="Piano" snm="Pno."\nV:4 bass \n'
    )
    solo = Ensemble.parse("Flute:treble")
    assert write_header(HeaderChoice(solo, "D", "C|")) == 'L:1/8\nM:C|\nK:D\nV:1 treble nm="Flute"\n'
    assert [HeaderChoice(key=key).key for key in ("d", "D major", "F#m", "f# minor", "Ebmaj")] == ["D", "D", "F#min", "F#min", "Eb"]


@pytest.mark.parametrize("make, words", [
    (lambda: HeaderChoice(key="H"), "unknown key 'H'"),
    (lambda: HeaderChoice(key="D# major"), "cannot be written"),
    (lambda: HeaderChoice(metre="0/4"), "the metre '0/4' cannot be written"),
    (lambda: HeaderChoice(metre="3/5"), "cannot be written"),
    (lambda: HeaderChoice(tempo=0), "tempo must be"),
    (lambda: Ensemble("nobody", ()), "has no parts"),
    (lambda: Ensemble.parse(""), "has no parts"),
    (lambda: Part("Violin", ("sideways",)), "unknown clef 'sideways'"),
    (lambda: Part('Violin "1"'), "without quotes"),
    (lambda: Part("\\n\t:Violin"), "printable ASCII"),
    (lambda: find_ensemble("kazoo band", HAYDN), "unknown ensemble 'kazoo band'"),
    (lambda: write_header(HeaderChoice(key="D")), "needs an ensemble, a key and a metre"),
])
def test_choices_that_cannot_be_written_are_refused(make, words):
    with pytest.raises(ScoreError, match=words):
        make()


def test_every_official_instrumentation_has_standard_ensembles(tmp_path):
    for prompt in read_prompts(OFFICIAL_PROMPTS):
        assert ensembles_for(prompt), prompt
    names = [e.name for e in ensembles_for(HAYDN, table=tmp_path / "no-table.json")]
    assert names[0] == "string quartet" and "piano trio" in names
    assert [e.name for e in STANDARD_ENSEMBLES["Art Song"]] == ["voice and piano"]
    assert ensembles_for(None) == []


def test_the_ensembles_table_comes_from_the_pieces_headers(tmp_path, notagen_reference):
    quartet, chorale = (official_header(notagen_reference / "preprocess" / piece) + "[V:1]a|\n" for piece in
                        ("haydn_op74no1_mv1_m1-8/reduced_C.abc", "bwv66.6_m0-4/reduced_A.abc"))
    records = [("Classical_Haydn, Joseph_Chamber", quartet)] * 3 + [("Baroque_Bach, Johann Sebastian_Choral", chorale),
                                                                   (None, chorale)]
    (tmp_path / "pieces").mkdir()
    (tmp_path / "pieces" / "shard-00000.jsonl").write_text(
        "".join(json.dumps({"prompt": prompt, "interleaved": text}) + "\n" for prompt, text in records))
    table = ensemble_table(labelled_headers(tmp_path), min_pieces=2)
    assert table["pieces"] == 4 and list(table["prompts"]) == ["Classical_Haydn, Joseph_Chamber"]
    [entry] = table["prompts"]["Classical_Haydn, Joseph_Chamber"]
    assert entry["pieces"] == 3 and [p["name"] for p in entry["parts"]] == ["Violin 1", "Violin 2", "Viola", "Violoncello"]
    path = tmp_path / "ensembles.json"
    path.write_text(json.dumps(table))
    offered = ensembles_for(HAYDN, table=path)
    assert offered[0].parts == Ensemble.from_dict(entry).parts and "piano trio" in [e.name for e in offered]


# ------------------------------------------------------------------ generation
@pytest.fixture(scope="module")
def trained(notagen_reference, one_torch_thread):
    from engine.notagen.generate import NotagenGenerator

    return NotagenGenerator.load(notagen_reference / "tiny_notagen_trained_fp16.pth")


def parts_key_metre(musicxml: str):
    score = music21.converter.parseData(musicxml, format="musicxml")
    keys = {str(k.asKey()) for k in score.recurse().getElementsByClass(music21.key.KeySignature)}
    metres = {m.ratioString for m in score.recurse().getElementsByClass(music21.meter.TimeSignature)}
    return [part.partName for part in score.parts], keys, metres


@pytest.mark.timeout(300)
def test_generated_pieces_have_exactly_the_chosen_header(trained):
    header = HeaderChoice(QUARTET, "D major", "3/4", 120)
    result = trained.generate(HAYDN, n=2, seed=0, max_bars=4, header=header)
    assert len(result.pieces) == 2 and not result.failures
    for piece in result.pieces:
        assert piece.abc.startswith("X:1\n" + write_header(header))
        assert parts_key_metre(piece.document.musicxml) == (
            ["Violin 1", "Violin 2", "Viola", "Violoncello"], {"D major"}, {"3/4"})


@pytest.mark.timeout(300)
def test_fields_left_open_are_the_models_own(trained):
    """Only the key fixed: the ensemble, metre and tempo come from the header the model writes itself."""
    result = trained.generate(HAYDN, seed=0, max_bars=3, header=HeaderChoice(key="Bb"))
    written = read_header(result.pieces[0].abc[len("X:1\n"):])
    assert (written.key, written.metre, written.tempo, written.ensemble.name) == ("Bb", "4/4", 96, "SATB")


@pytest.mark.timeout(300)
def test_a_body_that_leaves_the_ensemble_is_sampled_again(trained):
    """The tiny model writes four voices whatever the header says: a piano's two staves never hold them.
    Unconstrained, such a body is refused; bar-exact decoding writes only the declared voices."""
    piano = HeaderChoice(find_ensemble("piano", HAYDN))
    result = trained.generate(HAYDN, seed=0, max_bars=2, max_attempts=2, header=piano, constrain=False)
    assert not result.pieces
    assert [f.reason for f in result.failures] == [
        "the generated text does not convert: the model wrote voice 3, which the chosen ensemble does not have"]
    (piece,) = trained.generate(HAYDN, seed=0, max_bars=2, max_attempts=2, header=piano).pieces
    assert piece.document.n_parts == 2 and piece.alignment.misaligned == 0


@pytest.mark.timeout(300)
def test_cli_generate_with_a_header(notagen_reference, tmp_path, capsys):
    code = main(["generate", "--checkpoint", str(notagen_reference / "tiny_notagen_trained_fp16.pth"),
                 "--prompt", "Classical|Haydn, Joseph|Chamber", "--ensemble", "string quartet", "--key", "D",
                 "--metre", "3/4", "--tempo", "100", "--seed", "0", "--max-bars", "3", "--out", str(tmp_path)])
    assert code == 0, capsys.readouterr().err
    assert parts_key_metre((tmp_path / "piece_01.musicxml").read_text())[1:] == ({"D major"}, {"3/4"})
    assert main(["generate", "--checkpoint", str(notagen_reference / "tiny_notagen_trained_fp16.pth"),
                 "--metre", "0/4", "--out", str(tmp_path)]) == 1
    assert "the metre '0/4' cannot be written" in capsys.readouterr().err


# ------------------------------------------------------------------ the Compose panel's fields
def test_compose_fields_follow_the_prompt_and_stay_with_the_tab():
    from engine.service import Composer

    composer = Composer(prompts=read_prompts(OFFICIAL_PROMPTS))
    stored = {"period": "Classical", "composer": "Haydn, Joseph", "instrumentation": "Chamber",
              "ensemble": "string quartet", "key": "D major", "metre": "3/4", "tempo": 90,
              "max_bars": 12, "seed": 7, "temperature": 0.9, "top_k": 10, "top_p": 0.85, "continue_bars": 4}
    session = compose.remember_fields(Session(), *(stored[name] for name in compose.FIELDS))
    restored = Session.from_browser(session.to_browser(), composer.open_saved)
    assert restored.compose == stored
    fields = compose.restore_fields(composer, Session(), session.to_browser())
    assert fields.values == stored and fields.ensembles.options[0] == compose.MODELS_CHOICE
    assert "string quartet" in fields.ensembles.options
    # An ensemble or composer the prompt does not offer falls back to the first choice.
    moved = compose.prompt_fields(composer, {**stored, "period": "Romantic", "ensemble": "SATB"})
    assert moved.values["composer"] == moved.composers.options[0] and moved.values["ensemble"] == compose.MODELS_CHOICE
    header = compose.header_choice(HAYDN, "string quartet", "D major", "3/4", 90.0)
    assert (header.ensemble, header.key, header.metre, header.tempo) == (QUARTET, "D", "3/4", 90)
    assert not compose.header_choice(HAYDN, compose.MODELS_CHOICE, compose.MODELS_CHOICE, compose.MODELS_CHOICE, None).chosen


def test_the_default_ensemble_of_every_shipped_prompt_is_its_instrumentation():
    """Some fine-tuning pieces name their parts `P1` or not at all; the default skips their ensembles."""
    from engine.notagen.prompts import prompts_for_checkpoint
    
    prompts = prompts_for_checkpoint(Path(__file__).resolve().parents[1] / "assets" / "notagen")
    assert len(prompts) > 20
    for prompt in prompts:
        names = [part.name for part in default_ensemble(prompt).parts]
        assert matches_instrumentation(prompt.instrumentation, names) is not False, (prompt, names)
