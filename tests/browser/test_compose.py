"""Composing in a real browser with NotaGen (the fixtures' tiny model in official .pth format)."""
from __future__ import annotations

import music21

from tests.browser.test_app import MEASURES, click_measure, open_example, wait_for_status

RECORD_STATUSES = """() => {
    window.statuses = [];
    const status = document.querySelector('#status');
    new MutationObserver(() => window.statuses.push(status.innerText)).observe(
        status, {subtree: true, childList: true, characterData: true});
}"""


def choose(page, dropdown: str, option: str) -> None:
    page.locator(f"#{dropdown} input").click()
    page.get_by_role("option", name=option, exact=True).click()


def wait_until_done(page) -> str:
    page.wait_for_function("() => /Done in|Error/.test(document.querySelector('#status').innerText)", timeout=120_000)
    return page.locator("#status").inner_text()


def measures_of(path) -> list[str]:
    """Each measure of each part as the names and lengths of its notes and rests."""
    score = music21.converter.parse(str(path))
    return [
        " ".join(f"{n.fullName if not n.isRest else 'rest'}/{n.quarterLength}" for n in m.notesAndRests)
        for part in score.parts for m in part.getElementsByClass("Measure")
    ]


def download_musicxml(page, tmp_path, name: str):
    with page.expect_download() as info:
        page.locator("#download-musicxml").click()
    target = tmp_path / name
    info.value.save_as(target)
    return target


def generate_then_stop(page) -> None:
    """Generate, and press Stop while it runs; `window.statuses` holds the status lines of that run."""
    # The fixture model ends its pieces by itself after 5 bars in well under a second, so a click can
    # arrive after the piece is done ("Done in"); then try again (the click must land in time once).
    for _ in range(5):
        page.evaluate(RECORD_STATUSES)
        page.locator("#generate").click()
        wait_for_status(page, "Generating:")
        page.wait_for_function(f"() => document.querySelectorAll('{MEASURES}').length >= 1", timeout=120_000)
        page.locator("#stop").click()
        page.wait_for_function("() => /Stopped|Done in/.test(document.querySelector('#status').innerText)")
        if not any("Done in" in status for status in page.evaluate("() => window.statuses")):
            break
    wait_for_status(page, "Stopped")


def test_prompt_lists_are_the_official_ones(page):
    page.wait_for_function("() => (document.querySelector('#composer input')?.value ?? '') !== ''")
    choose(page, "period", "Romantic")
    page.wait_for_function("() => (document.querySelector('#composer input')?.value ?? '') !== 'Bach, Johann Sebastian'")
    page.locator("#composer input").click()
    composers = page.get_by_role("option").all_inner_texts()
    assert "Chopin, Frederic" in composers and "Bach, Johann Sebastian" not in composers


def test_generate_streams_bar_by_bar(page, shot):
    page.wait_for_function("() => (document.querySelector('#composer input')?.value ?? '') !== ''")
    choose(page, "period", "Baroque")
    choose(page, "composer", "Bach, Johann Sebastian")
    choose(page, "instrumentation", "Choral")
    page.locator("#seed input").fill("0")
    page.evaluate(RECORD_STATUSES)
    page.locator("#generate").click()
    status = wait_until_done(page)
    assert "Done in" in status, status
    statuses = page.evaluate("() => window.statuses")
    assert any(s.startswith("Generating: 1 bars") for s in statuses), statuses
    assert page.locator(MEASURES).count() >= 2
    assert "Generated Baroque / Bach, Johann Sebastian / Choral" in page.locator("#versions input").input_value()
    shot(page, "generated")


def test_continue_and_regenerate_keep_the_start(page, shot, tmp_path):
    open_example(page, "Bach - Chorale BWV 66.6")
    original = measures_of(download_musicxml(page, tmp_path, "original.musicxml"))
    page.locator("#seed input").fill("1")
    page.locator("#continue-bars input[type=number]").fill("3")
    page.locator("#continue").click()
    assert "Done in" in wait_until_done(page)
    assert page.locator(MEASURES).count() > 10
    continued = measures_of(download_musicxml(page, tmp_path, "continued.musicxml"))
    per_part = len(original) // 4
    for part in range(4):
        start = part * len(continued) // 4
        kept, before = continued[start : start + per_part], original[part * per_part : (part + 1) * per_part]
        assert kept[:-1] == before[:-1]
        # The chorale's last bar is short (it completes the pickup); once music follows it, it is a full
        # bar: the same notes, then a rest filling the beat it lacked.
        assert kept[-1] in (before[-1], before[-1] + " rest/1.0")
    shot(page, "continued")

    click_measure(page, 3)  # locks it: "Regenerate from" keeps it and starts after it
    number = page.locator(MEASURES).nth(4).get_attribute("data-n")  # as printed in the score
    page.wait_for_function("() => document.querySelector('#lock-summary').innerText.includes('1 measure locked')")
    page.locator("#regenerate-from").click()
    page.wait_for_function(
        "(n) => (document.querySelector('#versions input')?.value ?? '').includes('Regenerated from measure ' + n)"
        " && document.querySelector('#status').innerText.includes('Done in')",
        arg=number,
        timeout=120_000,
    )
    regenerated = measures_of(download_musicxml(page, tmp_path, "regenerated.musicxml"))
    parts = [regenerated[p * len(regenerated) // 4 : (p + 1) * len(regenerated) // 4] for p in range(4)]
    for part in range(4):
        assert parts[part][:4] == original[part * per_part : part * per_part + 4]
    page.locator("#undo").click()
    page.wait_for_function(f"() => document.querySelectorAll('{MEASURES}').length === 13")


def test_regenerate_unlocked_keeps_locked_measures(page, shot, tmp_path):
    open_example(page, "Bach - Chorale BWV 66.6")
    before = measures_of(download_musicxml(page, tmp_path, "before.musicxml"))
    click_measure(page, 2)
    click_measure(page, 6)
    page.wait_for_function("() => document.querySelector('#lock-summary').innerText.includes('2 measures locked')")
    shot(page, "locked")
    page.locator("#seed input").fill("3")
    page.locator("#inpaint").click()
    page.wait_for_function(
        "() => (document.querySelector('#versions input')?.value ?? '').includes('Regenerated unlocked')", timeout=180_000)
    assert page.locator("#score-view g.measure.locked").count() == 2  # the locks stay on for another round
    after = measures_of(download_musicxml(page, tmp_path, "after.musicxml"))
    assert len(after) == len(before)
    columns = len(before) // 4
    for part in range(4):
        for column in range(columns):
            index = part * columns + column
            if column in (2, 6):
                assert after[index] == before[index], (part, column)
    assert any(after[i] != before[i] for i in range(len(before)) if i % columns not in (2, 6))
    shot(page, "inpainted")


def test_stop_keeps_the_bars_made_so_far(page, shot, tmp_path):
    page.wait_for_function("() => (document.querySelector('#composer input')?.value ?? '') !== ''")
    page.locator("#seed input").fill("0")
    page.locator("#max-bars input").fill("128")
    generate_then_stop(page)
    shot(page, "stopped")
    kept = page.locator(MEASURES).count()
    assert kept >= 1
    page.wait_for_timeout(2000)  # nothing is still generating behind the stopped version
    assert page.locator(MEASURES).count() == kept and "Stopped" in page.locator("#status").inner_text()
    assert "Generated" in page.locator("#versions input").input_value()
    assert len(measures_of(download_musicxml(page, tmp_path, "stopped.musicxml"))) >= kept  # parts x measures

    page.locator("#max-bars input").fill("4")
    page.locator("#generate").click()
    assert "Done in" in wait_until_done(page)
    page.locator("#undo").click()
    page.wait_for_function(f"(n) => document.querySelectorAll('{MEASURES}').length === n", arg=kept)


def test_generate_with_a_chosen_ensemble_key_and_metre(page, shot, tmp_path):
    """Chamber, a string quartet, D major, 3/4: the piece has those four string parts in that key and metre,
    and the fields are still there after a reload (kept per tab)."""
    page.wait_for_function("() => (document.querySelector('#composer input')?.value ?? '') !== ''")
    choose(page, "period", "Classical")
    page.wait_for_function("() => (document.querySelector('#composer input')?.value ?? '') === 'Beethoven, Ludwig van'")
    choose(page, "composer", "Haydn, Joseph")
    choose(page, "instrumentation", "Chamber")
    page.wait_for_function("() => (document.querySelector('#instrumentation input')?.value ?? '') === 'Chamber'")
    choose(page, "ensemble", "string quartet")
    choose(page, "key", "D major")
    choose(page, "metre", "3/4")
    page.locator("#seed input").fill("0")
    page.locator("#max-bars input").fill("4")
    page.locator("#generate").click()
    assert "Done in" in wait_until_done(page)
    assert "(string quartet, D major, 3/4)" in page.locator("#versions input").input_value()
    shot(page, "string-quartet")
    score = music21.converter.parse(str(download_musicxml(page, tmp_path, "quartet.musicxml")))
    assert [part.partName for part in score.parts] == ["Violin 1", "Violin 2", "Viola", "Violoncello"]
    assert {str(k.asKey()) for k in score.recurse().getElementsByClass(music21.key.KeySignature)} == {"D major"}
    assert {t.ratioString for t in score.recurse().getElementsByClass(music21.meter.TimeSignature)} == {"3/4"}

    page.reload()
    page.wait_for_function("() => document.querySelector('#ensemble input')?.value === 'string quartet'")
    assert [page.locator(f"#{field} input").input_value() for field in ("period", "composer", "instrumentation", "key", "metre")] \
        == ["Classical", "Haydn, Joseph", "Chamber", "D major", "3/4"]
