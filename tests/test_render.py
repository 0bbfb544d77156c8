"""Engraving with verovio and audio with FluidSynth, for real."""
from __future__ import annotations

import re

import cairocffi
import music21
import pytest

from engine.render.audio import synthesize
from engine.render.engrave import Engraver
from engine.render.music_font import MUSIC_FONT, font_file, register_music_font
from engine.render.pdf import A4_LAYOUT, with_header, with_title
from engine.score.document import ScoreDocument
from engine.score.examples import load_example
from engine.score.formats import read_score_file
from engine.service import Composer
from tests.helpers import corpus_path


@pytest.fixture(scope="module")
def composer():
    return Composer()


def test_engraving_has_every_measure_with_numbers(composer):
    document = read_score_file(corpus_path("mozart/k80/movement1.mxl"))
    engraving = composer.engrave(document)
    svg = "".join(engraving.pages)
    numbers = re.findall(r'<g[^>]*class="measure[^"]*"[^>]*data-n="([^"]+)"', svg)
    assert len(numbers) == document.n_measures
    assert numbers == [c.number for c in document.grid.columns]
    onsets = composer.measure_onsets(document)
    assert [t for t, _ in onsets] == sorted(t for t, _ in onsets)
    svg_ids = set(re.findall(r'<g id="([^"]+)" class="measure', svg))
    assert {m for _, m in onsets} <= svg_ids and len(onsets) >= document.n_measures
    assert composer.engrave(document) is engraving  # cached per version


def test_audio_is_ogg_of_plausible_length(composer):
    document = read_score_file(corpus_path())
    midi = composer.export(document, "mid")
    wav = synthesize(midi, "wav")
    seconds = (len(wav) - 44) / (44100 * 2 * 2)
    assert 10 < seconds < 60
    slow = synthesize(composer.export(document, "mid", tempo=0.5), "wav")
    assert len(slow) > 1.6 * len(wav)  # half tempo, roughly twice as long
    assert composer.export(document, "ogg")[:4] == b"OggS"


def test_pdf_has_one_a4_page_per_engraved_page(composer):
    document = read_score_file(corpus_path("mozart/k80/movement1.mxl"))
    pages = Engraver().engrave(document.musicxml, **A4_LAYOUT).pages
    pdf = composer.export(document, "pdf")
    assert pdf.startswith(b"%PDF") and len(pages) > 1
    assert len(re.findall(rb"/Type /Page\b", pdf)) == len(pages)
    sizes = {(round(float(w)), round(float(h))) for w, h in re.findall(rb"/MediaBox \[ 0 0 ([\d.]+) ([\d.]+) \]", pdf)}
    assert sizes == {(595, 842)}  # A4 in points


def test_printed_pages_carry_the_title(composer):
    """The PDF's first page is headed by the document's title (or the MusicXML's own)."""
    document = composer.open_example("Bach - Chorale BWV 66.6")
    first = Engraver().engrave(with_title(document.musicxml, document.title), **A4_LAYOUT).pages[0]
    assert "Chorale BWV 66.6" in first
    assert with_title(document.musicxml, "Other") == with_title(with_title(document.musicxml, "Other"), "Again")


SYLLABLE = re.compile(r'class="syl"[^>]*>\s*<text x="(-?\d+)" y="(-?\d+)"[^>]*>\s*<tspan[^>]*>\s*<tspan font-size="(\d+)px">')


def test_verses_are_spaced_and_drawn_in_the_font_they_were_spaced_by(composer, shared_dir):
    """Schubert's Wasserfluth has two verses: their lines stood one font size apart, so one verse's
    descenders met the next one's letters, and the words were spaced by Times' widths but drawn in
    whatever serif font the browser had (words ran together: "binichein" in Gute Nacht)."""
    song = shared_dir / "corpora" / "openscore-lieder" / "scores" / "Schubert_Franz__Winterreise_D_911_6_Wasserfluth__lc5016512.mxl"
    pages = composer.engrave(read_score_file(song)).pages
    gaps = []
    for system in "".join(pages).split('class="system"')[1:]:
        syllables = SYLLABLE.findall(system)
        lines = sorted({int(y) for _, y, _ in syllables})
        size = max((int(size) for _, _, size in syllables), default=0)
        gaps += [(b - a) / size for a, b in zip(lines, lines[1:]) if b - a < 4 * size]  # verses under one staff
    assert len(gaps) >= 5 and min(gaps) >= 1.2, gaps
    assert "".join(pages).count("@font-face") == pages[0].count("@font-face") == 4  # the font once, 4 styles
    assert set(re.findall(r'font-family="([^"]+)"', "".join(pages))) == {"Liberation, serif"}


def test_printed_first_page_names_title_and_composer(shared_dir):
    """A score naming its composer (but with no credits of its own) prints the title and the composer."""
    path = shared_dir / "corpora/openscore-lieder/scores/Schubert_Franz__Winterreise_D_911_6_Wasserfluth__lc5016512.mxl"
    document = read_score_file(path)
    first = Engraver().engrave(with_header(document.musicxml, document.title), **A4_LAYOUT).pages[0]
    assert "Franz Schubert" in first and "Wasserfluth" in first
    assert "Franz Schubert" not in Engraver().engrave(document.musicxml, **A4_LAYOUT).pages[0]  # what it was
    bach = load_example("Bach - Chorale BWV 66.6")  # no composer named: the title alone, as before
    assert with_header(bach.musicxml, bach.title) == with_title(bach.musicxml, bach.title)


def test_metronome_notes_are_printed_in_the_music_font(composer, tmp_path):
    """Verovio writes a metronome mark's note as text in its music font, embedded in the SVG; CairoSVG
    cannot use an embedded font and printed an empty box (`[] = 92`). The PDF now embeds the font."""
    score = music21.stream.Score([music21.stream.Part([music21.stream.Measure(
        [music21.tempo.MetronomeMark(number=92, referent=music21.note.Note(type="quarter")), music21.note.Note("C5", type="whole")])])])
    musicxml = music21.musicxml.m21ToXml.GeneralObjectExporter(score).parse().decode()
    assert 'font-family="Leipzig"' in Engraver().engrave(musicxml, **A4_LAYOUT).pages[0]
    pdf = composer.export(ScoreDocument(musicxml, "Tempo"), "pdf")
    fonts = set(re.findall(rb"/BaseFont /\w+\+([\w-]+)", pdf))  # the music font's subset is named CairoFont-...
    music = {font for font in fonts if not font.startswith(b"LiberationSerif")}
    assert len(music) == 1 and not music & {b"DejaVuSans", b"DejaVuSans-Bold"}, fonts  # DejaVu drew the box

    path = font_file(tmp_path)  # written once per verovio version, whole
    assert font_file(tmp_path) == path and [p.name for p in tmp_path.iterdir()] == [path.name]
    assert register_music_font()
    scaled = cairocffi.ScaledFont(cairocffi.ToyFontFace(MUSIC_FONT))
    glyphs = scaled.text_to_glyphs(0, 0, "\ueca5", with_clusters=False)  # metNoteQuarterUp
    assert glyphs[0][0] != 0  # a real glyph, not the missing-glyph box


def test_pdf_text_is_drawn_in_the_font_it_was_spaced_by(composer, shared_dir):
    """Verovio spaces lyrics by Times' widths; CairoSVG drew them in DejaVu Sans (wider), so words ran
    together in the PDF. They are drawn with Liberation Serif, which has Times' widths."""
    path = shared_dir / "corpora/openscore-lieder/scores/Schubert_Franz__Winterreise_D_911_6_Wasserfluth__lc5016512.mxl"
    pdf = composer.export(composer.open_file(path), "pdf")
    fonts = set(re.findall(rb"/BaseFont /\w+\+([\w-]+)", pdf))
    assert fonts and all(font.startswith(b"LiberationSerif") for font in fonts), fonts
