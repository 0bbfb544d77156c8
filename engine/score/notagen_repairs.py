"""Repairs to the official xml2abc and abc2xml where the ABC does not say what the MusicXML says.

`engine.score.notagen_abc` reproduces the official NotaGen text byte for byte; these repairs change it
only where that text is wrong (abc2xml reads back other notes, or NotaGen's own checks refuse it) or
where xml2abc refuses a valid score, so a score the official pipeline writes correctly gives exactly
the official text; where the text is right and abc2xml misreads it, abc2xml is repaired. Each repair names the
failure it fixes; `python -m training.roundtrip` measures what is still lost.
"""
from __future__ import annotations

import re

from abctoolkit import abc2xml as _abc2xml
from abctoolkit import xml2abc as _xml2abc

_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f]")


def plain_whitespace(abc: str) -> str:
    """xml2abc copies the text of lyrics and directions verbatim, tabs included; NotaGen refuses control
    characters in what it reads back (`engine.notagen.finish.check_generated_bars`), and in ABC a tab is
    only a space. Every control character but the newline becomes a space."""
    return _CONTROL.sub(" ", abc)


# ---------------------------------------------------------------------------------------------
# A tie from another voice: xml2abc leaves out the accidental of the tied-to note, since in ABC a tie
# carries the accidental; but abc2xml carries a tie only into the next note or chord of the same voice
# (it turns any other into a slur), so the tied-to note came back with the key's pitch: a G-flat tied from
# voice 5 into voice 3's chord (OpenScore Lieder, Lehmann, "Clasp mine closer", m. 66), a C-sharp tied from
# the third-last note of a bar into the next bar's chord (Jaell, "Les troncons du serpent", m. 51), a tie
# that starts nowhere in the score (a first bar, the bar after a repeat sign). The tied-to note keeps its
# accidental unless abc2xml will carry its tie.
# ---------------------------------------------------------------------------------------------

_original_ntAbc = getattr(_xml2abc.Parser.ntAbc, "original", _xml2abc.Parser.ntAbc)


def _ntAbc(parser, ptc, oct, note, v, ntrec, isTab):  # noqa: N802 - xml2abc's name and signature
    ties = note.findall("tie") + note.findall("notations/tied")
    types = [element.get("type") for element in ties]
    # per (part, voice): the (step, octave) ties started by the voice's previous note or chord, and by this one
    carried, started = parser.__dict__.setdefault("_ties", {}).setdefault((parser.msr.ixp, v), (set(), set()))
    if note.find("chord") is None and note.find("grace") is None:  # a new note or chord of the voice
        carried.clear()
        carried.update(started)
        started.clear()
    stops = [element for element in ties if element.get("type") == "stop"] if (ptc, oct) not in carried else []
    for element in stops:  # xml2abc then writes the accidental as for an untied note
        element.set("type", "stop-not-carried")
    try:
        abc = _original_ntAbc(parser, ptc, oct, note, v, ntrec, isTab)
    finally:
        for element in stops:
            element.set("type", "stop")
    if "start" in types:
        started.add((ptc, oct))
    return abc


_ntAbc.original = _original_ntAbc  # type: ignore[attr-defined]
_xml2abc.Parser.ntAbc = _ntAbc


# ---------------------------------------------------------------------------------------------
# An accidental written on a note tied over holds to the end of the bar, as ABC says and as xml2abc
# writes (it leaves the sign off a later note of the bar): abc2xml gave the tied note the tie's alteration
# but forgot the sign, so `=B2- | =B2 d B2` (key of F) read the second B of the bar as B-flat (OpenScore
# Lieder, Faure, "A Clymene", bar 2; `_B8-|_B2 _d2 c2 B2` in A major the same: Andree, String Quartet in
# A, violin 1, bar 253). The repair is on the reading side, so that the official text is kept and what
# NotaGen writes in the official way reads back as meant.
# ---------------------------------------------------------------------------------------------

_original_mkPitch = getattr(_abc2xml.MusicXml.mkPitch, "original", _abc2xml.MusicXml.mkPitch)


def _mkPitch(reader, acc, note, oct, lev):  # noqa: N802 - abc2xml's name and signature
    pitch = _original_mkPitch(reader, acc, note, oct, lev)
    if acc and not reader.percVoice and (note, oct) in reader.ties:
        step = note.upper()
        reader.msreAlts[(step, (4 if step == note else 5) + int(oct) + reader.gtrans)] = reader.alterTab[acc]
    return pitch


_mkPitch.original = _original_mkPitch  # type: ignore[attr-defined]
_abc2xml.MusicXml.mkPitch = _mkPitch


# ---------------------------------------------------------------------------------------------
# Repairs made where xml2abc first gets the MusicXML tree (`Parser.mkTitle`): of the tree, and of the
# grace groups it writes.
# ---------------------------------------------------------------------------------------------

#: The types xml2abc's direction code knows; any other valid one (MusicXML's pedal `discontinue`,
#: `resume`, `change`, `sostenuto`, a wedge's or octave shift's `continue`) made it raise "wrong direction
#: type" and refuse the whole score (OpenScore Lieder, Chaminade, "Plaintes d'amour").
_DIRECTION_TYPES = {"wedge": {"crescendo", "diminuendo", "stop"}, "octave-shift": {"up", "down", "stop"},
                    "pedal": {"start", "stop"}}
_PEDAL_TYPES = {"discontinue": "stop", "resume": "start"}


def plain_direction_types(root) -> None:
    """A pedal that is discontinued or resumed stops or starts; other marks xml2abc cannot write are left
    out (they change no note)."""
    for direction_type in root.iter("direction-type"):
        for tag, known in _DIRECTION_TYPES.items():
            for mark in direction_type.findall(tag):
                kind = mark.get("type", "")
                if kind in known:
                    continue
                if tag == "pedal" and kind in _PEDAL_TYPES:
                    mark.set("type", _PEDAL_TYPES[kind])
                else:
                    direction_type.remove(mark)


def merged_forwards(root) -> None:
    """Adjacent `<forward>`s of one voice become one. xml2abc drops a forward shorter than a 1/64 note as
    a MuseScore bug, but MuseScore writes a long gap as forwards of falling dotted lengths: a gap of 10/3
    quarters (768 divisions a quarter) lost its last 64 divisions and the triplet note after it moved
    (OpenScore Lieder, Brahms, Op. 32 No. 2, bar 14)."""
    for measure in root.iter("measure"):
        previous = None
        for element in list(measure):
            if element.tag != "forward":
                previous = None
                continue
            if previous is not None and _voice_and_staff(previous) == _voice_and_staff(element):
                duration = previous.find("duration")
                duration.text = str(int(duration.text) + int(element.findtext("duration")))
                measure.remove(element)
            else:
                previous = element


def _voice_and_staff(forward) -> tuple:
    return forward.findtext("voice"), forward.findtext("staff")


def metronomes_with_tempo(root) -> None:
    """A metronome mark without `per-minute` (a metric modulation, "half. = half") is left out: xml2abc
    reads a tempo from every one and raised TypeError (OpenScore Quartets, Bartok, No. 2, bar 525)."""
    for direction_type in root.iter("direction-type"):
        for metronome in direction_type.findall("metronome"):
            if metronome.find("per-minute") is None:
                direction_type.remove(metronome)


def summed_metres(root) -> None:
    """An additive metre (3+4/8) is written as its sum (7/8): xml2abc reads the beats with `int` and
    raised ValueError (OpenScore Quartets, Bartok, No. 2, cello bar 54)."""
    for beats in root.iter("beats"):
        parts = (beats.text or "").split("+")
        if len(parts) > 1 and all(part.strip().isdigit() for part in parts):
            beats.text = str(sum(int(part) for part in parts))


#: The accidentals xml2abc has a sign for; any other (empty, `natural-flat`, `quarter-sharp`, ...) raised
#: KeyError (music21 corpus, trecento PMFC 13 No. 7 "Gloria Laus Honor": empty `<accidental/>`s).
_ACCIDENTALS = {"double-flat", "flat-flat", "flat", "natural", "sharp", "sharp-sharp", "double-sharp"}
_ACCIDENTAL_OF_ALTER = {-2: "flat-flat", -1: "flat", 0: "natural", 1: "sharp", 2: "double-sharp"}


def plain_accidentals(root) -> None:
    """An accidental xml2abc has no sign for becomes the plain one of the note's `alter`; an empty one, or
    one of a microtone, is left out (xml2abc then writes the accidental the alter needs, as for any note)."""
    for note in root.iter("note"):
        accidental = note.find("accidental")
        if accidental is None or (accidental.text or "").strip() in _ACCIDENTALS:
            continue
        try:
            alter = float(note.findtext("pitch/alter") or 0)
        except ValueError:
            alter = 0.5
        plain = _ACCIDENTAL_OF_ALTER.get(alter) if (accidental.text or "").strip() else None
        if plain is None:
            note.remove(accidental)
        else:
            accidental.text = plain


#: What xml2abc reads as a lyric number (after it drops a Sibelius "...verse" prefix).
_LYRIC_NUMBER = re.compile(r"^(.*verse)?\d+$")


def numbered_lyrics(root) -> None:
    """Lyric lines named rather than numbered (`number="chorus"`) get numbers from 100 on: xml2abc reads the
    number with `int` and raised ValueError (music21 corpus, Schubert, "Der Lindenbaum", bar 8)."""
    numbers: dict[str, str] = {}
    for lyric in root.iter("lyric"):
        name = lyric.get("number", "1")
        if not _LYRIC_NUMBER.match(name):
            lyric.set("number", numbers.setdefault(name, str(100 + len(numbers))))


def unbroken_lyrics(root) -> None:
    """A line break inside a syllable (MuseScore: a verse number "1." and a new line before it) becomes a
    space: xml2abc copies it into the `w:` line, whose rest then reads as a line of notes, and NotaGen's
    pipeline refused the score for its unequal bar counts (OpenScore Lieder, Hensel, "Sehnsucht", bar 1)."""
    for text in (text for lyric in root.iter("lyric") for text in lyric.iter("text")):
        if text.text and ("\n" in text.text or "\r" in text.text):
            text.text = re.sub(r"[\r\n]", " ", text.text)


#: Typographic double quotes, which the official pipeline's unidecode turns into `"`.
_TYPOGRAPHIC_QUOTES = re.compile("[\u201c\u201d\u201e\u201f\u2033\u3003]")


def plain_quotes(root) -> None:
    """Typographic double quotes in direction text become `'`: xml2abc writes the text as an annotation
    `"_..."` and the official pipeline then unidecodes `”` to `"`, which closes the annotation early and
    opens one that swallows the notes up to the next quote (OpenScore Lieder, Warlock, "Heracleitus",
    piano bar 11: a `”` of its own; six bars of both staves came back wrong)."""
    for words in (*root.iter("words"), *root.iter("rehearsal")):
        if words.text and _TYPOGRAPHIC_QUOTES.search(words.text):
            words.text = _TYPOGRAPHIC_QUOTES.sub("'", words.text)


def pitched_clefs(root) -> None:
    """A percussion clef in a part whose notes all have pitches is left out (the staff keeps its clef):
    xml2abc wrote `[K:perc]`, and abc2xml then read every later note of the voice without its accidentals
    (OpenScore Quartets, Mozart, K. 465, violin 1 from bar 53 of the finale: 203 part-measures; Faure,
    Op. 121: 62)."""
    for part in root.iter("part"):
        if part.find("measure/note/unpitched") is not None:
            continue
        for attributes in part.iter("attributes"):
            for clef in attributes.findall("clef"):
                if clef.findtext("sign") == "percussion":
                    attributes.remove(clef)


def grace_groups_closed_at_bar_lines(parser) -> None:
    """A grace group still open at a bar line (grace notes after a bar's last note) is closed there: xml2abc
    closes a group before the next main note, in the next bar, and abc2xml read `c2{de|e} d4` as real
    notes, moving the rest of both bars (OpenScore Lieder, Arne, "Celia's Complaint", bars 16-17)."""
    add_bar = parser.msc.addBar

    def _add_bar(line_break, measure) -> None:
        if parser.ingrace:
            parser.ingrace = 0
            parser.msc.lastnote.after += "}"
        add_bar(line_break, measure)

    parser.msc.addBar = _add_bar


def grace_groups_split_at_staff_moves(parser) -> None:
    """A grace group whose notes move to another staff is split at the move, `{F,,C,F}[I:staff -1]{Acf}`:
    abc2xml reads no staff move inside a group and took every note of `{F,,C,F[I:staff -1]Acf}` for a real
    one (OpenScore Lieder, Chaminade, "Chanson de neige", bar 2: an arpeggio of grace notes up both staves).
    Grace notes of another voice start a group of their own: xml2abc keeps one group open across voices, and
    the right hand's grace notes at the end of a bar ended in the left hand's, `{ef|` and `D,,} D,3/2`
    (Somervell, "Think no more, lad", bar 15)."""
    append_note = parser.msc.appendNote
    group = {"voice": None, "slashed": False}  # the open group's voice, and whether of acciaccaturas

    def _append_note(voice, note, text) -> None:
        records = parser.msc.voices[voice]
        if "{" in note.before:
            group.update(voice=voice, slashed="/" in note.before)
        elif note.grace and parser.ingrace and voice != group["voice"]:
            parser.msc.lastnote.after += "}"
            note.before[:0] = ["{"]
            group.update(voice=voice, slashed=False)
        elif (note.grace and len(records) > 1 and isinstance(records[-1], _xml2abc.Elem)
              and records[-1].str.startswith("[I:staff") and getattr(records[-2], "grace", 0)
              and not records[-2].after.endswith("}")):
            records[-2].after += "}"
            note.before[:0] = ["{", "/"] if group["slashed"] else ["{"]
        append_note(voice, note, text)

    parser.msc.appendNote = _append_note


_original_mkTitle = getattr(_xml2abc.Parser.mkTitle, "original", _xml2abc.Parser.mkTitle)


def _mkTitle(parser, tree):  # noqa: N802 - xml2abc's name and signature
    root = tree.getroot()
    for repair in (plain_direction_types, merged_forwards, metronomes_with_tempo, summed_metres, plain_accidentals,
                   numbered_lyrics, unbroken_lyrics, plain_quotes, pitched_clefs):
        repair(root)
    grace_groups_closed_at_bar_lines(parser)
    grace_groups_split_at_staff_moves(parser)
    return _original_mkTitle(parser, tree)


_mkTitle.original = _original_mkTitle  # type: ignore[attr-defined]
_xml2abc.Parser.mkTitle = _mkTitle


# ---------------------------------------------------------------------------------------------
# A staff without a voice of its own: xml2abc puts each voice on the staff of most of its notes and writes
# no staff that none is put on. A voice crossing to such a staff kept its `[I:staff +1]` moves, abc2xml
# had no staff to move to, and the piano's two staves came back as one (OpenScore Lieder, Boulton,
# "Truant Wings": an arpeggio voice with more notes in the right hand, 180 of 273 part-measures); a
# direction on such a staff made xml2abc raise KeyError (Brahms, Op. 43 No. 3: the right hand's staff
# holds only a dynamic). Such a staff takes a voice from a staff that keeps another one.
# ---------------------------------------------------------------------------------------------

_original_locStaffMap = getattr(_xml2abc.Parser.locStaffMap, "original", _xml2abc.Parser.locStaffMap)


def _locStaffMap(parser, part, measures):  # noqa: N802 - xml2abc's name and signature
    _original_locStaffMap(parser, part, measures)
    staves = max((int(e.text) for e in part.iter("staves") if (e.text or "").strip().isdigit()), default=1)
    counts: dict[int, dict[int, int]] = {}  # voice -> staff -> notes, as xml2abc numbers voices
    sounding = set()  # the voices xml2abc writes: those with a note that is neither a rest nor invisible
    used = {int(e.findtext("staff", "1")) for measure in measures for e in measure.findall("direction")}
    for note in part.findall("measure/note"):
        staff = int(note.findtext("staff", "1"))
        voice = int(note.findtext("voice", "1")) + (100 * staff if parser.isSib else 0)
        counts.setdefault(voice, {}).setdefault(staff, 0)
        counts[voice][staff] += 1
        if note.find("rest") is None and note.get("print-object") != "no":
            sounding.add(voice)
            used.add(staff)
    homes = parser.stfMap
    for staff in range(1, staves + 1):
        if any(voice in sounding for voice in homes.get(staff, ())):
            continue
        later = any(home > staff and sounding.intersection(voices) for home, voices in homes.items())
        if staff not in used and not later:
            continue  # a last staff without notes or directions may go, as officially
        homes.setdefault(staff, [])
        donors = [voice for home, voices in homes.items() if home != staff
                  and sum(voice in sounding for voice in voices) > 1 for voice in voices if voice in sounding]
        if donors:
            voice = max(donors, key=lambda v: (counts[v].get(staff, 0), -abs(parser.vce2stf[v] - staff), -v))
            homes[parser.vce2stf[voice]].remove(voice)
            homes[staff].append(voice)
            parser.vce2stf[voice] = parser.curStf[voice] = staff


_locStaffMap.original = _original_locStaffMap  # type: ignore[attr-defined]
_xml2abc.Parser.locStaffMap = _locStaffMap


# ---------------------------------------------------------------------------------------------
# A tuplet inside a tuplet of the same time modification (MuseScore's nonuplet shown as three bracketed
# triplets: every note 9:4, the inner brackets 3:3): xml2abc writes the inner ones as `(1:1:3`, and abc2xml
# then loses the outer ratio, `(9:4:9(1:1:3D/F/A/...` coming back as plain sixteenths (OpenScore Lieder,
# Chaminade, "Le Noel des oiseaux", bar 34). An inner tuplet that changes no duration is not written.
# ---------------------------------------------------------------------------------------------

_original_insTup = getattr(_xml2abc.insTup, "original", _xml2abc.insTup)
_NO_TIME_CHANGE = re.compile(r"^\(1:1:\d+")


def _insTup(ix, notes, fact):  # noqa: N802 - xml2abc's name and signature
    result = _original_insTup(ix, notes, fact)
    if tuple(fact) != (1, 1):  # a nested tuplet
        notes[ix].tupabc = _NO_TIME_CHANGE.sub("", notes[ix].tupabc)
    return result


_insTup.original = _original_insTup  # type: ignore[attr-defined]
_xml2abc.insTup = _insTup


# ---------------------------------------------------------------------------------------------
# An empty bar: abc2xml writes a measure with no notes for two bar lines with nothing between them (`||` at
# the end of one line and `||` at the start of the next, bar lines before a tune's first note: O'Neill's
# 1850 and the Essen folk songs of the music21 corpus, 326 tunes). The score then held a silent measure the
# tune does not have, which xml2abc leaves out again, so every later bar came back one measure early. A
# measure that is empty in every part is left out; what it held moves to its neighbours.
# ---------------------------------------------------------------------------------------------

_MEASURE_CONTENT = ("note", "forward", "backup")
_XML_PROLOGUE = re.compile(r"^(?:<\?xml[^>]*\?>\s*)?(?:<!DOCTYPE[^>]*>\s*)?")


_NAMES_AND_WORDS = re.compile(r"(<(?:part-name|part-abbreviation|words)\b[^>]*>)([^<]*)")


def escaped_line_breaks(musicxml: str) -> str:
    """abc2xml's MusicXML with the line breaks of part names and direction words back: xml2abc writes a
    break as the two characters `\\n` (`nm="Singstimme\\nVoice"`, `"^portez \\nla voix"`, as the official
    text has it, and as NotaGen writes it) and abc2xml kept them, so the page printed them (OpenScore
    Lieder: Beethoven, Op. 48 No. 2, "Singstimme" over "Voice"; Cornelius, Op. 8 No. 1, "hervortretend" over
    "marcato"; many songs name a part on two lines)."""
    return _NAMES_AND_WORDS.sub(lambda match: match.group(1) + match.group(2).replace("\\n", "\n"), musicxml)


def tree_repairs(musicxml: str) -> str:
    """abc2xml's MusicXML after the repairs made on its element tree (`drop_empty_measures`,
    `untype_odd_rests`), parsed and written once; the text itself where neither changes anything."""
    import defusedxml.ElementTree as SafeET  # here: the repairs above must not need an XML parser
    from xml.etree import ElementTree

    if "<measure" not in musicxml:
        return musicxml
    root = SafeET.fromstring(musicxml.encode("utf-8"))
    changed = drop_empty_measures(root)
    changed = untype_odd_rests(root) or changed
    if not changed:
        return musicxml
    prologue = _XML_PROLOGUE.match(musicxml).group(0)
    return prologue + ElementTree.tostring(root, encoding="unicode")


def drop_empty_measures(root) -> bool:
    """Leave out the measures no part has a note in (renumbered from 1); whether there was one. A dropped
    measure's attributes and directions open the next measure, its left bar line goes to the next measure
    and its right bar line to the previous one."""
    parts = [part.findall("measure") for part in root.findall("part")]
    empty = [m for m in range(min(map(len, parts), default=0)) if not any(_holds_music(row[m]) for row in parts)]
    if not empty or len(empty) == min(map(len, parts)):
        return False
    for part, measures in zip(root.findall("part"), parts):
        for m in empty:
            _hand_on(measures, m)
        for m in empty:
            part.remove(measures[m])
        for number, measure in enumerate(part.findall("measure"), start=1):
            measure.set("number", str(number))
    return True


_QUARTERS = {"breve": 8.0, "whole": 4.0, "half": 2.0, "quarter": 1.0, "eighth": 0.5, "16th": 0.25, "32nd": 0.125,
             "64th": 0.0625, "128th": 0.03125}


def untype_odd_rests(root) -> bool:
    """Write a rest whose length no note value has, alone in its voice's measure, without a type, which
    verovio draws as one centred whole-bar rest; whether there was one. `restore_rests` gives a voice that
    a bar line omits a rest as long as the bar (the official `rest_unreduce`), and in a short bar that is
    `z5` or `z7`; abc2xml typed such a rest by its first note value, so the page showed a 5/8 rest as an
    eighth rest (a continuation of Bach's BWV 24.6 whose last bar lasts 5/8 and whose tenor the model left
    out). Not `measure="yes"`: music21 then reads the rest as a whole note long, whatever its duration."""
    changed = False
    for part in root.findall("part"):
        divisions = None
        for measure in part.findall("measure"):
            found = measure.find("attributes/divisions")
            divisions = float(found.text) if found is not None and found.text else divisions
            by_voice: dict[str, list] = {}
            for note in measure.findall("note"):
                by_voice.setdefault(note.findtext("voice", "1"), []).append(note)
            for notes in by_voice.values():
                if len(notes) == 1 and notes[0].find("rest") is not None and divisions and not _typed_right(notes[0], divisions):
                    for child in notes[0].findall("type") + notes[0].findall("dot"):
                        notes[0].remove(child)
                    changed = True
    return changed


def _typed_right(note, divisions: float) -> bool:
    """Whether a note's type, dots and tuplet ratio give its duration (or it has no type or duration)."""
    kind, duration = note.findtext("type"), note.findtext("duration")
    if kind not in _QUARTERS or not duration:
        return True
    dots = len(note.findall("dot"))
    quarters = _QUARTERS[kind] * (2 - 0.5 ** dots)
    actual, normal = note.findtext("time-modification/actual-notes"), note.findtext("time-modification/normal-notes")
    if actual and normal:
        quarters *= int(normal) / int(actual)
    return abs(quarters * divisions - float(duration)) < 1e-6


def _holds_music(measure) -> bool:
    return any(measure.find(tag) is not None for tag in _MEASURE_CONTENT)


def _hand_on(measures: list, m: int) -> None:
    """Move what the empty measure `m` holds to the measures beside it that stay."""
    following = next((measure for measure in measures[m + 1:] if _holds_music(measure)), None)
    previous = next((measure for measure in reversed(measures[:m]) if _holds_music(measure)), None)
    opening = [child for child in measures[m] if child.tag in ("attributes", "direction")
               or (child.tag == "barline" and child.get("location") == "left")]
    if following is not None:
        for position, child in enumerate(opening):
            following.insert(position, child)
    for barline in measures[m].findall("barline"):
        if barline.get("location", "right") == "right" and previous is not None \
                and not any(b.get("location", "right") == "right" for b in previous.findall("barline")):
            previous.append(barline)
