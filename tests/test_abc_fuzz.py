"""Property-based fuzzing of the two ABC readers (issue #8): an ABC upload (`read_score` on .abc) and the
interleaved text a model generates (`interleaved_to_musicxml`). Any text either becomes a score or raises
`ScoreError`; never another exception, never a hang (each example has a time alarm)."""
from __future__ import annotations

import signal
from contextlib import contextmanager

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.errors import ScoreError
from engine.score.formats import read_score
from engine.score.notagen_abc import interleaved_to_musicxml

SECONDS_PER_EXAMPLE = 20
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)

HEADER_FIELDS = st.sampled_from(["X:1", "T:Fuzz", "M:4/4", "M:3/8", "M:C|", "M:7/8", "L:1/8", "L:1/16", "Q:1/4=90",
                                 "K:C", "K:Bb", "K:F#m", "K:none", "K:Dmix", "V:1", "V:2 clef=bass", "%%score { 1 | 2 }",
                                 "%%score (1 2)", "J:unknown", "W:words", "I:linebreak $", "K:"])
TOKENS = st.sampled_from(["A", "B,", "c'", "^f", "_e", "=g", "z", "x", "Z2", "2", "/", "3/2", "//", "0", ">", "<",
                          "(3", "(", ")", "[", "]", "[CEG]", "{g}", "-", "~", ".", "!trill!", '"C"', "|", "||",
                          "|:", ":|", "|1", ":|2", "|]", "[V:1]", "[V:2]", "[K:G]", "[M:3/4]", "[L:1/4]", "[r:0/3]",
                          "\\", "%", " ", "\n", "&", "y", "T", "$"])
ABC_LIKE = st.builds(
    lambda header, body: "\n".join(header) + "\n" + "".join(body),
    st.lists(HEADER_FIELDS, max_size=8),
    st.lists(TOKENS, max_size=80),
)
TEXT = st.one_of(ABC_LIKE, st.text(max_size=300))


@contextmanager
def time_limit(seconds: int):
    """Fail an example that runs past `seconds` (a hang), rather than hang the suite."""
    def expire(signum, frame):
        raise TimeoutError(f"an example ran past {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@FUZZ
@given(TEXT)
def test_abc_upload_makes_a_score_or_a_score_error(text):
    with time_limit(SECONDS_PER_EXAMPLE):
        try:
            document = read_score(text.encode("utf-8"), "fuzz.abc")
        except ScoreError as exc:
            assert str(exc).startswith("fuzz.abc") and "\n" not in str(exc)
        else:
            assert document.n_measures >= 1


@FUZZ
@given(TEXT)
def test_interleaved_text_makes_musicxml_or_a_score_error(text):
    with time_limit(SECONDS_PER_EXAMPLE):
        try:
            musicxml = interleaved_to_musicxml(text)
        except ScoreError as exc:
            assert "\n" not in str(exc)
        else:
            assert "<score-partwise" in musicxml
