"""Page geometry: boxes inside the margins, no overlaps, gutters kept, reading order right."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from storyd.errors import InputError
from storyd.layout.geometry import PageSpec, plan_pages
from storyd.layout.units import color, length_px, page_px
from storyd.story.model import SPANS

A4 = PageSpec(1240, 1754, margin=59, gutter=24)


def boxes(pages):
    return [[p.box for p in page.panels] for page in pages]


def check_page(page, spec: PageSpec, rtl: bool) -> None:
    content = spec.content if page.height == spec.height else None
    for placed in page.panels:
        b = placed.box
        assert b.w > 0 and b.h > 0
        assert b.x >= spec.margin and b.right <= page.width - spec.margin
        assert b.y >= spec.margin and b.bottom <= page.height - spec.margin - spec.footer
        if content is not None:
            assert b.bottom <= content.bottom
    for first, second in itertools.combinations(page.panels, 2):
        a, b = first.box, second.box
        gap_x = max(b.x - a.right, a.x - b.right)
        gap_y = max(b.y - a.bottom, a.y - b.bottom)
        assert max(gap_x, gap_y) >= spec.gutter, (a, b)  # no overlap, and at least a gutter apart
        # reading order: the earlier panel is above the later one, or before it on the line
        before = a.x >= b.right if rtl else a.right <= b.x
        assert a.bottom <= b.y or before, (first, second)


@settings(max_examples=150, deadline=None)
@given(
    spans=st.lists(st.sampled_from(SPANS), min_size=1, max_size=20),
    template=st.sampled_from(["auto", "grid", "classic", "strip", "manga"]),
    rows=st.one_of(st.none(), st.integers(1, 4)),
    columns=st.one_of(st.none(), st.integers(1, 4)),
    width=st.integers(600, 2500),
    height=st.integers(600, 3000),
    margin=st.integers(0, 80),
    gutter=st.integers(0, 40),
    footer=st.integers(0, 30),
    seed=st.integers(0, 2**32 - 1),
)
def test_every_layout_is_sound(spans, template, rows, columns, width, height, margin, gutter, footer, seed):
    spec = PageSpec(width, height, margin, gutter, footer)
    pages = plan_pages(spans, spec, template=template, rows=rows, columns=columns, seed=seed, panel_aspect=1.0)
    order = [p.index for page in pages for p in page.panels]
    assert order == list(range(len(spans)))  # every panel once, pages in story order
    for page in pages:
        assert page.rtl == (template == "manga")
        check_page(page, spec, page.rtl)


def test_two_by_two_grid_is_the_four_panel_page_with_exact_gutters():
    (page,) = plan_pages(["normal"] * 4, A4, template="grid", rows=2, columns=2)
    tl, tr, bl, br = (p.box for p in page.panels)
    assert (tl.x, tl.y) == (59, 59) and (tr.right, br.bottom) == (1240 - 59, 1754 - 59)
    assert tr.x - tl.right == 24 and bl.y - tl.bottom == 24
    assert tl.w == tr.w == bl.w == br.w and tl.h == bl.h
    assert tl.y == tr.y and tl.x == bl.x  # row-major, left to right


def test_manga_reads_right_to_left():
    (page,) = plan_pages(["normal"] * 4, A4, template="manga", rows=2, columns=2)
    first, second, third, _ = (p.box for p in page.panels)
    assert first.x > second.x and first.y == second.y
    assert first.right == A4.width - A4.margin
    assert third.right == A4.width - A4.margin and third.y > first.y


def test_spans_get_their_room():
    content = A4.content
    (page,) = plan_pages(["tall", "normal", "normal"], A4, template="grid", rows=2, columns=2)
    tall, top, bottom = (p.box for p in page.panels)
    assert tall.h == content.h and top.x == bottom.x and top.bottom < bottom.y
    (page,) = plan_pages(["wide", "normal", "normal"], A4, template="grid", rows=2, columns=2)
    assert page.panels[0].box.w == content.w
    pages = plan_pages(["large", "normal", "normal", "normal", "normal"], A4, template="grid", rows=3, columns=3)
    large = pages[0].panels[0].box
    small = pages[0].panels[1].box
    assert large.w > 2 * small.w and large.h > 2 * small.h - A4.gutter


def test_panels_flow_onto_pages_and_a_short_last_page_does_not_stretch():
    pages = plan_pages(["normal"] * 9, A4, template="grid", rows=2, columns=2)
    assert [len(p.panels) for p in pages] == [4, 4, 1]
    last = pages[2].panels[0].box
    assert last.h == pages[0].panels[0].box.h  # one row high, not the whole page
    assert last.w == A4.content.w  # but it fills its row


@pytest.mark.parametrize(("count", "per_page"), [(1, [1]), (4, [4]), (6, [6]), (7, [4, 3]), (13, [5, 5, 3])])
def test_auto_balances_pages(count, per_page):
    pages = plan_pages(["normal"] * count, A4, template="auto")
    assert [len(p.panels) for p in pages] == per_page


def test_auto_picks_two_by_two_for_four_square_panels_on_a4():
    (page,) = plan_pages(["normal"] * 4, A4, template="auto")
    xs = {p.box.x for p in page.panels}
    ys = {p.box.y for p in page.panels}
    assert len(xs) == 2 and len(ys) == 2


def test_classic_is_deterministic_mixes_singles_and_stacked_pairs():
    spans = ["normal"] * 12
    a = plan_pages(spans, A4, template="classic", seed=7)
    assert boxes(a) == boxes(plan_pages(spans, A4, template="classic", seed=7))
    shapes = {tuple(map(tuple, boxes(plan_pages(spans, A4, template="classic", seed=s)))) for s in range(6)}
    assert len(shapes) > 1  # the seed matters
    page = a[0].panels
    stacked = [(p, q) for p, q in itertools.pairwise(page) if p.box.x == q.box.x and p.box.bottom < q.box.y]
    assert stacked, "a classic page stacks at least one pair"


def test_classic_spreads_the_last_panels_over_the_page():
    for seed in range(5):
        (page,) = plan_pages(["normal"] * 6, A4, template="classic", seed=seed)
        assert max(p.box.bottom for p in page.panels) == A4.content.bottom  # no empty tier at the bottom


def test_auto_counts_the_cells_spans_take():
    pages = plan_pages(["normal", "normal", "wide", "normal", "normal", "normal"], A4, template="auto")
    assert [len(p.panels) for p in pages] == [3, 3]  # 7 cells: two pages of 2 x 2, not 5 + a lonely 1


def test_strip_is_one_row_with_its_own_height():
    (page,) = plan_pages(["normal"] * 4, PageSpec(3000, 1000, 40, 20), template="strip", panel_aspect=1.0)
    ys = {p.box.y for p in page.panels}
    assert ys == {40} and page.width == 3000
    assert abs(page.panels[0].box.h - page.panels[0].box.w) <= 1  # square cells for square panels
    assert page.height == page.panels[0].box.h + 80


def test_impossible_pages_are_input_errors():
    with pytest.raises(InputError, match="margins"):
        plan_pages(["normal"], PageSpec(200, 200, 95, 10))
    with pytest.raises(InputError, match="fewer rows or columns"):
        plan_pages(["normal"] * 40, PageSpec(300, 300, 10, 10), template="grid", rows=12, columns=12)
    with pytest.raises(InputError):
        plan_pages(["normal"], A4, template="grid", rows=0)


def test_units_and_presets():
    assert length_px("25.4mm", 100) == 100
    assert length_px("1in", 150) == length_px("72pt", 150) == length_px("2.54cm", 150) == 150
    assert length_px("12px", 300) == 12
    assert page_px("a4", 150) == (1240, 1754)
    assert page_px("letter", 100) == (850, 1100)
    assert page_px("comic", 200) == (1325, 2050)
    assert page_px("1200x1800px", 72) == (1200, 1800)
    assert page_px("6x9in", 100) == (600, 900)
    assert color("#ff0000") == (255, 0, 0)
    for bad in ("10", "10 furlongs", "mm"):
        with pytest.raises(InputError, match="length"):
            length_px(bad, 150)
    with pytest.raises(InputError, match="page"):
        page_px("a5", 150)
    with pytest.raises(InputError, match="colour"):
        color("no-such-colour")
