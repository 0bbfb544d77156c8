"""Where training pieces come from and how they are labelled, split and named.

The dataset builder (`training.data`) streams `PieceRef`s from here: one per piece, in a fixed order,
each carrying everything decided *before* conversion: a stable id, its source, its work, its split
and, for pieces with a known composer, its NotaGen prompt labels (period, composer, instrumentation).

Three tables in `training/labels/` hold the decisions, so they can be read and argued with:

* `composers.csv`: composer ("Last, First" in ASCII, as IMSLP and NotaGen's official prompt list
  spell them), period, birth, death, aliases, note. The period follows from the dates (`PERIODS`,
  `period_from_dates`) except in rows whose note starts with "override".
* `music21.csv`: what each file of the bundled music21 corpus is: the first row whose glob
  matches its path decides how it is read (`kind`), who wrote it and its instrumentation.
* `works.csv`: catalogue equivalences (Haydn's Hoboken numbers -> opus), so that one work reached
  through two catalogues still gets one work id.

Splits are by work: the split is a hash of the work id, so every movement, song of a cycle, key or
duplicate encoding of one work lands in the same split, in every run, on every machine.
"""
from __future__ import annotations

import csv
import hashlib
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path

from unidecode import unidecode

LABELS_DIR = Path(__file__).resolve().parent / "labels"
COMPOSERS_CSV = LABELS_DIR / "composers.csv"
MUSIC21_CSV = LABELS_DIR / "music21.csv"
WORKS_CSV = LABELS_DIR / "works.csv"

#: Periods, oldest first, with the year (life midpoint) each one ends before. Baroque, Classical and
#: Romantic are NotaGen's (paper: Baroque 1600s-1750s, Classical 1750s-1810s, Romantic 1810s-1950s,
#: which is why Bartok, Prokofiev and Shostakovich are Romantic in its official prompt list); the
#: older two and "20th century" extend the same scale for the music21 corpus and later music.
PERIOD_ENDS: tuple[tuple[str, int | None], ...] = (
    ("Medieval", 1400),
    ("Renaissance", 1600),
    ("Baroque", 1750),
    ("Classical", 1810),
    ("Romantic", 1950),
    ("20th century", None),
)
PERIODS: tuple[str, ...] = tuple(name for name, _ in PERIOD_ENDS)
#: NotaGen's instrumentation classes (paper, section 3.3), spelled as in its prompt list.
INSTRUMENTATIONS: tuple[str, ...] = ("Keyboard", "Chamber", "Orchestral", "Art Song", "Choral", "Vocal-Orchestral")
SPLITS: tuple[str, ...] = ("train", "validation", "test")
#: Per mille of works in train and validation; the rest is test (about 90/5/5).
SPLIT_PER_MILLE: tuple[int, int] = (900, 950)

SCORE_SUFFIXES = frozenset({".mxl", ".xml", ".musicxml", ".krn", ".abc"})


# ---------------------------------------------------------------------------------------------
# names
# ---------------------------------------------------------------------------------------------


def fold(text: str) -> str:
    """ASCII spelling with single spaces: NotaGen's prompts and ABC text are ASCII (unidecode)."""
    return " ".join(unidecode(text or "").split())


def name_key(text: str) -> str:
    """A matching key for names: ASCII, lower case, letters and digits only."""
    return re.sub(r"[^a-z0-9]", "", fold(text).lower())


def slug(text: str) -> str:
    """A readable, stable identifier fragment: ASCII lower case words joined by '-'."""
    return re.sub(r"[^a-z0-9]+", "-", fold(text).lower()).strip("-") or "untitled"


# ---------------------------------------------------------------------------------------------
# composers and periods
# ---------------------------------------------------------------------------------------------


def period_from_dates(birth: int, death: int) -> str:
    """The period of a composer from the midpoint of their life (see `PERIOD_ENDS`)."""
    midpoint = (birth + death) / 2
    for name, end in PERIOD_ENDS:
        if end is None or midpoint < end:
            return name
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class Composer:
    """One row of composers.csv."""

    name: str
    period: str
    birth: int | None
    death: int | None
    note: str = ""


class ComposerTable:
    """composers.csv, looked up by any spelling: accents, order ("First Last") and aliases."""

    def __init__(self, composers: Iterable[Composer], aliases: Iterable[tuple[str, str]] = ()) -> None:
        self._by_name: dict[str, Composer] = {}
        self._by_key: dict[str, Composer] = {}
        for composer in composers:
            if composer.period not in PERIODS:
                raise ValueError(f"composers.csv: {composer.name}: unknown period {composer.period!r}")
            self._by_name[composer.name] = composer
            self._by_key.setdefault(name_key(composer.name), composer)
            last, _, first = composer.name.partition(",")
            if first:  # "Landini, Francesco" is also found as "Francesco Landini"
                self._by_key.setdefault(name_key(f"{first} {last}"), composer)
        for alias, name in aliases:
            self._by_key.setdefault(name_key(alias), self._by_name[name])

    @classmethod
    def load(cls, path: str | Path = COMPOSERS_CSV) -> ComposerTable:
        composers, aliases = [], []
        with open(path, newline="", encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                composer = Composer(
                    name=row["composer"].strip(),
                    period=row["period"].strip(),
                    birth=int(row["birth"]) if row.get("birth", "").strip() else None,
                    death=int(row["death"]) if row.get("death", "").strip() else None,
                    note=(row.get("note") or "").strip(),
                )
                composers.append(composer)
                aliases += [(a.strip(), composer.name) for a in (row.get("aliases") or "").split(";") if a.strip()]
        return cls(composers, aliases)

    def __iter__(self) -> Iterator[Composer]:
        return iter(self._by_name.values())

    def __len__(self) -> int:
        return len(self._by_name)

    def find(self, name: str | None) -> Composer | None:
        """The composer for a spelling found in a file or CSV, or None when not in the table.

        A file's composer field often carries more than the name ("Philippe de Vitry\\n(1291-1361)",
        "Johannes Ciconia (opus dubium)"): only the first line, without parentheses, is matched.
        """
        if not name:
            return None
        found = self._by_key.get(name_key(name))
        if found is None:
            first_line = re.sub(r"\([^)]*\)", "", str(name).strip().splitlines()[0] if str(name).strip() else "")
            found = self._by_key.get(name_key(first_line))
        return found


# ---------------------------------------------------------------------------------------------
# labels and prompts
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Labels:
    """The three labels of a fine-tuning piece; together they are its prompt."""

    period: str
    composer: str
    instrumentation: str

    def __post_init__(self) -> None:
        if self.period not in PERIODS:
            raise ValueError(f"unknown period {self.period!r} (one of {', '.join(PERIODS)})")
        if self.instrumentation not in INSTRUMENTATIONS:
            raise ValueError(f"unknown instrumentation {self.instrumentation!r} (one of {', '.join(INSTRUMENTATIONS)})")

    @property
    def prompt(self) -> str:
        """`Period_Composer_Instrumentation`, the form of NotaGen's official prompt list."""
        return f"{self.period}_{self.composer}_{self.instrumentation}"

    @property
    def prompt_lines(self) -> str:
        """The lines NotaGen's fine-tuning text starts with: `%Period`, `%Composer`, `%Instrumentation`."""
        return f"%{self.period}\n%{self.composer}\n%{self.instrumentation}\n"

    def to_dict(self) -> dict[str, str]:
        return {"period": self.period, "composer": self.composer, "instrumentation": self.instrumentation}


def labels_for(composer: Composer | None, instrumentation: str | None, period: str | None = None) -> Labels | None:
    """Labels when both a known composer and an instrumentation are there; None (pre-training only) otherwise."""
    if composer is None or not instrumentation:
        return None
    return Labels(period or composer.period, composer.name, instrumentation)


# ---------------------------------------------------------------------------------------------
# works and splits
# ---------------------------------------------------------------------------------------------

#: Catalogue numbers, most specific first. A work named in two sources by different catalogues
#: (Mozart's K.458 is also in his publisher's "Op. 10") gets one id only if both mention the first
#: catalogue found here; `works.csv` maps the cases that need it (Haydn's Hob.III -> opus).
_CATALOGUES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("bwv", re.compile(r"(?<![a-z])bwv[\s._]*(\d+)", re.I)),
    ("hwv", re.compile(r"(?<![a-z])hwv[\s._]*(\d+)", re.I)),
    ("rv", re.compile(r"(?<![a-z])rv[\s._]*(\d+)", re.I)),
    # K.458; OpenScore writes K.155/134a as "K.155134a": the Koechel-6 tail (1-3 digits and a letter) is dropped.
    ("k", re.compile(r"(?<![a-z])kv?[\s._]*([1-9]\d*?)(?:/?[1-9]\d{0,2}[a-z])?(?!\d)", re.I)),
    ("hob", re.compile(r"(?<![a-z])hob[\s._]*([ivxl]+)[\s._:-]*(\d+)", re.I)),
    ("d", re.compile(r"(?<![a-z])d[\s.]+(\d+)(?!\d)", re.I)),
    ("op", re.compile(r"(?<![a-z])op(?:us|p)?[\s._]*(\d+)", re.I)),
    ("sz", re.compile(r"(?<![a-z])sz[\s._]*(\d+)", re.I)),
    ("woo", re.compile(r"(?<![a-z])woo[\s._]*(\d+)", re.I)),
)


def catalogue_number(text: str) -> tuple[str, str] | None:
    """The first catalogue number in a title or path: ("op", "18"), ("hob-iii", "72"), or None.

    Opus numbers stand for the whole opus (Op.18 No.1 -> op 18): several works may share an id,
    which only makes splits coarser, never puts one work in two splits.
    """
    for name, pattern in _CATALOGUES:
        match = pattern.search(text)
        if match:
            if name == "hob":
                return f"hob-{match.group(1).lower()}", match.group(2)
            return name, match.group(1)
    return None


@dataclass(frozen=True)
class WorkTable:
    """works.csv: (composer, catalogue, first..last) -> canonical work title."""

    rows: tuple[tuple[str, str, int, int, str], ...] = ()

    @classmethod
    def load(cls, path: str | Path = WORKS_CSV) -> WorkTable:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = tuple(
                (r["composer"].strip(), r["catalogue"].strip().lower(), int(r["first"]), int(r["last"]), r["work"].strip())
                for r in csv.DictReader(handle)
            )
        return cls(rows)

    def canonical(self, composer: str, catalogue: str, number: str) -> str | None:
        for name, cat, first, last, work in self.rows:
            if name == composer and cat == catalogue and first <= int(number) <= last:
                return work
        return None


def work_key(
    composer: str | None, title: str, fallback_prefix: str, works: WorkTable | None = None, more_text: str = ""
) -> str:
    """The work id of a piece: `<composer>/<catalogue>` when a catalogue number is found in the
    title (or else in `more_text`, e.g. the file path), so that the same work from two collections
    meets; else `<composer>/<title>`; without a composer `<prefix>/<title>`."""
    if composer:
        found = catalogue_number(title) or (catalogue_number(more_text) if more_text else None)
        if found is not None and works is not None:
            canonical = works.canonical(composer, *found)
            if canonical is not None:
                found = catalogue_number(canonical) or found
        tail = f"{found[0]}{found[1]}" if found else slug(title)
        return f"{slug(composer)}/{tail}"
    return f"{fallback_prefix}/{slug(title)}"


def split_of(work_id: str) -> str:
    """train / validation / test from a stable hash of the work id (about 90/5/5 of works)."""
    bucket = int(hashlib.sha256(work_id.encode("utf-8")).hexdigest()[:8], 16) % 1000
    if bucket < SPLIT_PER_MILLE[0]:
        return SPLITS[0]
    if bucket < SPLIT_PER_MILLE[1]:
        return SPLITS[1]
    return SPLITS[2]


# ---------------------------------------------------------------------------------------------
# pieces
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PieceRef:
    """One piece to convert: where it is, what it is, and what was decided about it up front.

    `kind` is "file" (one score per file), "abc-tune" (bytes `span` of a multi-tune ABC file, with
    the file's `header` fields in front) or "abc-voices" (an ABC file whose tunes are the voices of
    one piece). When `composer_from_file` is set the composer is read from the parsed score and
    looked up in the composer table (labels then use `instrumentation`).
    """

    id: str
    source: str
    path: str
    kind: str
    work: str
    split: str
    title: str
    labels: Labels | None = None
    label_note: str = ""
    composer_from_file: bool = False
    instrumentation: str = ""
    span: tuple[int, int] | None = None
    header: bytes = b""
    number: str = ""


# ---------------------------------------------------------------------------------------------
# ABC files with many tunes
# ---------------------------------------------------------------------------------------------

_X_LINE = re.compile(rb"^X:[ \t]*(\S*)", re.M)
_T_LINE = re.compile(rb"^T:[ \t]*(.*)$", re.M)
_HEADER_FIELD = re.compile(rb"^(?:[A-Za-z]:|%%)")


@dataclass(frozen=True)
class AbcTune:
    """One tune of an ABC file: its ordinal (1-based), its X: number, byte span and title."""

    ordinal: int
    number: str
    start: int
    end: int
    title: str


def split_abc_tunes(data: bytes) -> tuple[bytes, list[AbcTune]]:
    """The file header (its field and %% lines, which apply to every tune) and the tunes of an ABC file.

    A tune starts at an `X:` line and runs to the next one; a file without `X:` is one tune.
    """
    starts = [(m.start(), m.group(1).decode("latin-1")) for m in _X_LINE.finditer(data)]
    if not starts:
        return b"", [AbcTune(1, "", 0, len(data), _abc_title(data))]
    header = b"".join(
        line + b"\n" for line in data[: starts[0][0]].splitlines() if _HEADER_FIELD.match(line)
    )
    tunes = []
    for i, (start, number) in enumerate(starts):
        end = starts[i + 1][0] if i + 1 < len(starts) else len(data)
        tunes.append(AbcTune(i + 1, number, start, end, _abc_title(data[start:end])))
    return header, tunes


def _abc_title(text: bytes) -> str:
    match = _T_LINE.search(text)
    return _decode(match.group(1)).strip() if match else ""


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


# ---------------------------------------------------------------------------------------------
# the music21 corpus
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Music21Rule:
    """One row of music21.csv: files matching `pattern` are read as `kind` and labelled so."""

    pattern: str
    kind: str
    composer: str
    instrumentation: str
    work: str
    note: str


def load_music21_rules(path: str | Path = MUSIC21_CSV) -> tuple[Music21Rule, ...]:
    with open(path, newline="", encoding="utf-8") as handle:
        rules = tuple(
            Music21Rule(**{k: (row.get(k) or "").strip() for k in ("pattern", "kind", "composer", "instrumentation", "work", "note")})
            for row in csv.DictReader(handle)
        )
    for rule in rules:
        if rule.kind not in ("score", "abc-tunes", "abc-voices", "skip"):
            raise ValueError(f"music21.csv: {rule.pattern}: unknown kind {rule.kind!r}")
        if rule.instrumentation and rule.instrumentation not in INSTRUMENTATIONS:
            raise ValueError(f"music21.csv: {rule.pattern}: unknown instrumentation {rule.instrumentation!r}")
    return rules


def rule_for(rules: Iterable[Music21Rule], relpath: str) -> Music21Rule | None:
    """The first rule whose glob matches the corpus-relative POSIX path."""
    return next((rule for rule in rules if fnmatchcase(relpath, rule.pattern)), None)


def music21_corpus_root() -> Path:
    import music21

    return Path(music21.__file__).resolve().parent / "corpus"


def source_selected(source: str, patterns: Iterable[str] | None) -> bool:
    """`--sources` matching: a glob on the source name ("music21/bach", "openscore-lieder"),
    a bare music21 folder ("bach"), or "music21" for the whole bundled corpus."""
    if not patterns:
        return True
    for pattern in patterns:
        if fnmatchcase(source, pattern) or source.startswith(pattern.rstrip("/") + "/") or source == f"music21/{pattern}":
            return True
    return False


def _walk_sorted(root: Path) -> Iterator[Path]:
    """Files under root in a fixed order (sorted names at every level), streamed."""
    for directory, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith((".", "__")) and d != "_metadataCache")
        for name in sorted(filenames):
            yield Path(directory) / name


def _stem_title(stem: str) -> str:
    """A file stem without encoding-variant marks (`_old`, `_bak`, `-sc`, `-inst`, `03a`/`03b`)."""
    stem = re.sub(r"(_old|_bak|-sc|-inst)$", "", stem)
    return re.sub(r"(\d)[a-c](?=$|[-_ .])", r"\1", stem)


def _humdrum_field(path: Path, field_name: str) -> str:
    """A `!!!XXX:` reference record from the head of a Humdrum file (Palestrina's mass is `OPR`)."""
    with open(path, "rb") as handle:
        head = handle.read(8192)
    match = re.search(rb"^!!!" + field_name.encode() + rb":[ \t]*(.*)$", head, re.M)
    return _decode(match.group(1)).strip() if match else ""


def iter_music21(
    composers: ComposerTable,
    works: WorkTable,
    rules: tuple[Music21Rule, ...] | None = None,
    sources: Iterable[str] | None = None,
    root: Path | None = None,
) -> Iterator[PieceRef]:
    """Every piece of the bundled music21 corpus, in sorted path order; multi-tune ABC files split."""
    root = root or music21_corpus_root()
    rules = rules if rules is not None else load_music21_rules()
    sources = list(sources) if sources else None
    for path in _walk_sorted(root):
        if path.suffix.lower() not in SCORE_SUFFIXES:
            continue
        rel = path.relative_to(root).as_posix()
        folder = rel.split("/", 1)[0]
        source = f"music21/{folder}"
        if not source_selected(source, sources):
            continue
        rule = rule_for(rules, rel)
        if rule is None or rule.kind == "skip":
            continue
        composer = None if rule.composer in ("", "@file") else composers.find(rule.composer)
        if rule.composer not in ("", "@file") and composer is None:
            raise ValueError(f"music21.csv: {rule.pattern}: composer {rule.composer!r} is not in composers.csv")
        parts = rel.split("/")
        if rule.work and not rule.work.startswith("@"):
            title = rule.work
        elif folder == "palestrina":
            title = _humdrum_field(path, "OPR") or _stem_title(path.stem)
        elif len(parts) > 2:  # music21 keeps multi-file works in a folder: beethoven/opus59no1/movement1.mxl
            title = parts[1]
        else:
            title = _stem_title(path.stem)
        labels = labels_for(composer, rule.instrumentation)
        common = dict(
            source=source,
            path=str(path),
            labels=labels,
            composer_from_file=rule.composer == "@file",
            instrumentation=rule.instrumentation,
        )
        if rule.kind == "abc-tunes":
            data = path.read_bytes()
            header, tunes = split_abc_tunes(data)
            for tune in tunes:
                if rule.work == "@X" and tune.number:
                    work = f"{source}/x{slug(tune.number)}"
                else:
                    work = f"{source}/{slug(path.stem)}/x{slug(tune.number or str(tune.ordinal))}"
                yield PieceRef(
                    id=f"music21/{rel}#{tune.ordinal}", kind="abc-tune", work=work, split=split_of(work),
                    title=tune.title or f"{path.stem} {tune.number}", span=(tune.start, tune.end), header=header,
                    number=tune.number, **common,
                )
            continue
        if composer is not None:
            # a catalogue number in the path counts too (bach/bwv248.42-4.mxl, mozart/k458/...)
            work = work_key(composer.name, title, source, works, more_text=rel)
        else:
            work = f"{source}/{slug(title)}"
        yield PieceRef(
            id=f"music21/{rel}", kind="abc-voices" if rule.kind == "abc-voices" else "file",
            work=work, split=split_of(work), title=title, **common,
        )


# ---------------------------------------------------------------------------------------------
# a user's folder of scores with a labels CSV (e.g. OpenScore Lieder / String Quartets)
# ---------------------------------------------------------------------------------------------


def iter_extra(
    directory: str | Path,
    composers: ComposerTable,
    works: WorkTable,
    labels_csv: str | Path | None = None,
    instrumentation: str | None = None,
    name: str | None = None,
) -> Iterator[PieceRef]:
    """The pieces of a folder of scores, labelled from a CSV (`file`, `composer`, `work`, and
    optionally `period`, `instrumentation`) in the CSV's row order; without a CSV, every score file
    in sorted order, unlabelled. Missing labels come from the composer table and `instrumentation`.
    """
    directory = Path(directory)
    source = name or directory.resolve().name
    if instrumentation and instrumentation not in INSTRUMENTATIONS:
        raise ValueError(f"unknown instrumentation {instrumentation!r} (one of {', '.join(INSTRUMENTATIONS)})")
    if labels_csv is None:
        for path in _walk_sorted(directory):
            if path.suffix.lower() in SCORE_SUFFIXES:
                rel = path.relative_to(directory).as_posix()
                yield from _extra_refs(source, directory, rel, {}, composers, works, instrumentation)
        return
    with open(labels_csv, newline="", encoding="utf-8-sig") as handle:
        for row in csv.DictReader(handle):
            rel = (row.get("file") or "").strip()
            if rel:
                yield from _extra_refs(source, directory, rel, row, composers, works, instrumentation)


def _extra_refs(
    source: str,
    directory: Path,
    rel: str,
    row: dict[str, str],
    composers: ComposerTable,
    works: WorkTable,
    default_instrumentation: str | None,
) -> Iterator[PieceRef]:
    path = directory / rel
    composer_name = (row.get("composer") or "").strip()
    period = (row.get("period") or "").strip() or None
    instrumentation = (row.get("instrumentation") or "").strip() or default_instrumentation or ""
    composer = composers.find(composer_name)
    note = ""
    if composer is None and composer_name and period:
        composer = Composer(fold(composer_name), period, None, None)  # labelled by the CSV alone
    elif composer is None and composer_name:
        note = f"composer {composer_name!r} is not in composers.csv and the CSV gives no period"
    if composer is not None and not instrumentation:
        note = "no instrumentation (CSV column or --extra-instrumentation)"
    try:
        labels = labels_for(composer, instrumentation, period)
    except ValueError as exc:
        labels, note = None, str(exc)
    title = (row.get("work") or "").strip() or Path(rel).stem
    # A song of a cycle ("Dichterliebe, Op.48 / 2 Aus meinen Thraenen") belongs to the cycle's work.
    work_title = title.split(" / ")[0]
    work = work_key(composer.name if composer else None, work_title, source, works)
    common = dict(source=source, path=str(path), labels=labels, label_note=note, title=title, instrumentation=instrumentation)
    if path.suffix.lower() == ".abc" and path.is_file():
        data = path.read_bytes()
        header, tunes = split_abc_tunes(data)
        if len(tunes) > 1:
            for tune in tunes:
                tune_work = work if composer else f"{work}/x{slug(tune.number or str(tune.ordinal))}"
                yield PieceRef(
                    id=f"{source}/{rel}#{tune.ordinal}", kind="abc-tune", work=tune_work, split=split_of(tune_work),
                    span=(tune.start, tune.end), header=header, number=tune.number,
                    **{**common, "title": tune.title or title},
                )
            return
    yield PieceRef(id=f"{source}/{rel}", kind="file", work=work, split=split_of(work), **common)


@dataclass
class SourceSpec:
    """One input of a build: the music21 corpus, or a user's folder (+ labels CSV, instrumentation)."""

    kind: str  # "music21" | "extra"
    directory: str = ""
    labels_csv: str | None = None
    instrumentation: str | None = None
    name: str | None = None


def iter_pieces(
    specs: Iterable[SourceSpec],
    sources: Iterable[str] | None = None,
    limit: int | None = None,
    composers: ComposerTable | None = None,
    works: WorkTable | None = None,
) -> Iterator[PieceRef]:
    """All pieces of a build in their fixed order, filtered by `--sources`, at most `limit` per source."""
    composers = composers or ComposerTable.load()
    works = works or WorkTable.load()
    sources = list(sources) if sources else None
    counts: dict[str, int] = {}
    for spec in specs:
        if spec.kind == "music21":
            refs = iter_music21(composers, works, sources=sources)
        else:
            name = spec.name or Path(spec.directory).resolve().name
            if not source_selected(name, sources):
                continue
            refs = iter_extra(spec.directory, composers, works, spec.labels_csv, spec.instrumentation, name)
        for ref in refs:
            if limit is not None:
                if counts.get(ref.source, 0) >= limit:
                    continue
                counts[ref.source] = counts.get(ref.source, 0) + 1
            yield ref


# ---------------------------------------------------------------------------------------------
# a labels CSV for a local copy of the OpenScore corpora
# ---------------------------------------------------------------------------------------------


def openscore_metadata(directory: str | Path) -> Iterator[dict[str, str]]:
    """Rows `file, composer, work, source_path` for an OpenScore repository converted to MusicXML.

    The OpenScore Lieder and String Quartet repositories keep a score as
    `scores/<Last,_First>/<set>/<song>/lcNNN.mscx` (`_` for a song outside any set) or
    `scores/<Last,_First>/<work>/scNNN.mscx`; after MuseScore's batch conversion (`mscore -j
    corpus_conversion.json`) the `.mxl` files sit beside them. Composer and work come from the
    folder names, underscores read as spaces.
    """
    directory = Path(directory)
    for path in _walk_sorted(directory):
        if path.suffix.lower() not in (".mxl", ".musicxml", ".xml"):
            continue
        rel = path.relative_to(directory)
        parts = list(rel.parts[:-1])
        if parts and parts[0] == "scores":
            parts = parts[1:]
        if not parts:
            continue
        names = [part.replace("_", " ").strip() for part in parts]
        composer, rest = names[0], [n for n in names[1:] if n]
        work = " / ".join(rest) if rest else path.stem
        yield {"file": rel.as_posix(), "composer": re.sub(r"\s*,\s*", ", ", composer, count=1), "work": work,
               "source_path": rel.as_posix()}
