"""Example pieces from the music21 corpus that ships with the package (no network needed)."""
from __future__ import annotations

import music21

from engine.score.document import ScoreDocument
from engine.score.formats import read_score_file

EXAMPLES: dict[str, str] = {
    "Bach - Chorale BWV 66.6": "bach/bwv66.6.mxl",
    "Bach - Chorale BWV 4.8": "bach/bwv4.8.mxl",
    "Palestrina - Agnus Dei (Missa 1)": "palestrina/Agnus_01.krn",
    "Monteverdi - Madrigal III.1": "monteverdi/madrigal.3.1.mxl",
    "Corelli - Op. 3 No. 1, Grave": "corelli/opus3no1/1grave.xml",
    "Handel - Lascia ch'io pianga": "handel/rinaldo/Lascia_chio_pianga.mxl",
    "C. P. E. Bach - H. 186": "cpebach/h186.mxl",
    "Haydn - String Quartet Op. 74/1, i": "haydn/opus74no1/movement1.mxl",
    "Mozart - String Quartet K. 80, i": "mozart/k80/movement1.mxl",
    "Beethoven - String Quartet Op. 18/1, i": "beethoven/opus18no1/movement1.mxl",
    "Schubert - Der Lindenbaum": "schubert/Lindenbaum.xml",
    "Clara Schumann - Polonaise Op. 1/1": "schumann_clara/polonaise_op1n1.mxl",
    "Chopin - Mazurka Op. 6/2": "chopin/mazurka06-2.krn",
    "Joplin - Maple Leaf Rag": "joplin/maple_leaf_rag.mxl",
    "Schoenberg - Op. 19/2": "schoenberg/opus19/movement2.mxl",
}


def load_example(title: str) -> ScoreDocument:
    """One of `EXAMPLES` as a document titled like the menu entry."""
    document = read_score_file(music21.corpus.getWork(EXAMPLES[title]))
    return ScoreDocument(musicxml=document.musicxml, title=title)
