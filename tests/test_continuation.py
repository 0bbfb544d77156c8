"""Continue and regenerate-from on real scores: the kept measures are the user's own MusicXML.

NotaGen reads and writes ABC; its continuation of a score once came back wholly through that notation, so
kept bars lost ties (or had them turned into slurs), lyrics, dynamics and layout. The kept measures of
the downloaded MusicXML are now compared byte for byte with the original's, as the inpainting tests do
for locked measures. The model is the reference fixtures' tiny trained one (fast; its bars are junk,
which is all these checks need).
"""
import re

import pytest

from engine.notagen.generate import NotagenGenerator
from engine.score.examples import load_example
from engine.score.formats import read_score_file
from engine.score.spanners import without_marks
from engine.score.splice import measure_texts, unmatched_spanners
from engine.service import Composer

pytestmark = [pytest.mark.timeout(300), pytest.mark.usefixtures("one_torch_thread")]

SONG = "Zumsteeg_Emilie__5_Lieder_4_Romanze__lc6159273.mxl"
"""A song with ties, slurs and five verses of lyrics, in 6/8 with a pick-up bar."""
SLURRED_SONG = "Butterworth_George__Bredon_Hill_and_Other_Songs_3_When_the_Lad_for_Longing_Sighs__lc6378373.mxl"
"""Voice and piano; a hairpin of the voice and a slur of the piano go on from bar 9 into bar 10."""
SAMPLING = dict(seed=3, top_k=8)


@pytest.fixture(scope="module")
def composer(notagen_reference, tmp_path_factory):
    model = NotagenGenerator.load(notagen_reference / "tiny_notagen_trained_fp16.pth")
    return Composer(notagen=model, output_dir=tmp_path_factory.mktemp("exports"))


@pytest.fixture(scope="module")
def song(shared_dir):
    return read_score_file(shared_dir / "corpora" / "openscore-lieder" / "scores" / SONG)


@pytest.fixture(scope="module")
def quartet():
    return load_example("Mozart - String Quartet K. 80, i")


def _part_list(xml: str) -> str:
    return re.search(r"<part-list>.*?</part-list>", xml, re.S).group(0)


def _check_kept(composer: Composer, original, result, keep: int) -> list[list[str]]:
    """The downloaded MusicXML keeps the first `keep` measures of every part, and the part list, exactly."""
    downloaded = composer.export_file(result, "musicxml").read_bytes().decode("utf-8")
    before, after = measure_texts(original.musicxml), measure_texts(downloaded)
    assert len(after) == len(before)
    for old, new in zip(before, after):
        assert new[:keep] == old[:keep]
        assert len(new) > keep
    assert _part_list(downloaded) == _part_list(original.musicxml)
    assert result.n_measures == len(after[0])
    return after


def test_regenerate_from_keeps_the_song_s_ties_slurs_and_lyrics(composer, song):
    keep = 8
    (piece,) = composer.compose_continuation(song, None, keep, **SAMPLING).pieces
    kept = _check_kept(composer, song, piece.document, keep)
    voice = "".join(kept[0][:keep])
    assert voice.count('<tied type="start"') == 3 and "<slur " in voice and re.search(r'<lyric[^>]*number="2"', voice)
    # The new measures are numbered on from the last kept one (the song starts with a pick-up bar 0).
    assert [re.search(r'number="(\d+)"', m).group(1) for m in kept[0][keep - 1 : keep + 2]] == ["7", "8", "9"]
    assert piece.document.title == song.title


def test_continue_keeps_every_bar_of_the_song(composer, song):
    (piece,) = composer.compose_continuation(song, 2, **SAMPLING).pieces
    _check_kept(composer, song, piece.document, song.n_measures)
    assert piece.document.n_measures == song.n_measures + piece.bars
    assert composer.engrave(piece.document).pages


def test_continue_score_streams_a_quartet_with_its_own_kept_measures(composer, quartet):
    """The page's path: `continue_score` streams the piece, its last step the version to download."""
    keep = 4
    steps = list(composer.continue_score(quartet, 2, keep=keep, preview_every=1, **SAMPLING))
    assert steps[-1].done
    _check_kept(composer, quartet, steps[-1].document, keep)
    assert steps[-1].document.n_parts == 4


def test_a_slur_and_a_hairpin_going_on_past_the_kept_bars_are_closed_and_named(composer, shared_dir):
    """Cut after bar 9, the song's hairpin and slur into bar 10 lose their ends with the original bars
    after it: they are closed in bar 9 (the one kept measure that changes, and only by spanner marks), every
    spanner of the result has both ends, and the warning names both."""
    song = read_score_file(shared_dir / "corpora" / "openscore-lieder" / "scores" / SLURRED_SONG)
    keep = 9
    result = composer.compose_continuation(song, 2, keep, **SAMPLING)
    (piece,) = result.pieces
    assert not unmatched_spanners(piece.document.musicxml)
    assert result.warnings == piece.warnings == (
        "spanners crossing into rewritten measures: hairpin closed in Voice m. 9, slur closed in Piano m. 9",)
    before, after = measure_texts(song.musicxml), measure_texts(piece.document.musicxml)
    for old, new in zip(before, after):
        assert new[: keep - 1] == old[: keep - 1]
        assert new[keep - 1] != old[keep - 1] and without_marks(new[keep - 1]) == without_marks(old[keep - 1])
    assert '<wedge type="stop"' in after[0][keep - 1] and '<slur type="stop"' in after[1][keep - 1]
    *_, last = composer.continue_score(song, 2, keep=keep, **SAMPLING)
    assert last.done and last.warnings == result.warnings


def test_continuing_at_the_end_moves_the_final_bar_line_to_the_new_end(composer):
    """A final double bar must not stay in the middle of the piece: the last kept measure loses it (and
    nothing else), the new measures end the piece."""
    chorale = load_example("Bach - Chorale BWV 66.6")
    final = re.compile(r'\s*<barline location="right">\s*<bar-style>light-heavy</bar-style>\s*</barline>')
    (piece,) = composer.compose_continuation(chorale, 2, **SAMPLING).pieces
    keep = chorale.n_measures
    before, after = measure_texts(chorale.musicxml), measure_texts(piece.document.musicxml)
    for old, new in zip(before, after, strict=True):
        assert new[: keep - 1] == old[: keep - 1]
        assert final.search(old[keep - 1]) and new[keep - 1] == final.sub("", old[keep - 1])
        assert not any(final.search(measure) for measure in new[: -1])
