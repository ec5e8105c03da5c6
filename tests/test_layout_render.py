"""Drawing and writing pages: balloons, captions, borders, page files, PDF and CBZ."""

from __future__ import annotations

import itertools
import re
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from storyd.errors import InputError
from storyd.layout import load_panel_images, render_pages, write_pages
from storyd.layout.bubbles import draw_bubble, plan_bubbles
from storyd.layout.captions import plan_caption
from storyd.layout.fonts import Lettering
from storyd.layout.geometry import Box, plan_pages
from storyd.layout.render import PageStyle, fit_image
from storyd.story.model import DIALOGUE_KINDS, DialogueLine, LayoutSettings, Panel, Story

COLOURS = [(200, 40, 40), (40, 160, 60), (40, 60, 200), (220, 200, 40), (150, 60, 160), (40, 180, 190), (120, 90, 30)]


@pytest.fixture(scope="module")
def lettering():
    return Lettering()


def make_story(count: int, **layout) -> Story:
    panels = tuple(
        Panel(
            i,
            "a scene",
            ("Mara", "Tom"),
            caption="Night fell on the lighthouse." if i % 2 == 0 else None,
            dialogue=tuple(
                DialogueLine("Mara" if k % 2 == 0 else "Tom", f"Line {k} of panel {i}!", kind)
                for k, kind in enumerate(DIALOGUE_KINDS[: 1 + i % 4])
            ),
        )
        for i in range(count)
    )
    return Story(
        title="The Keeper", path=Path("keeper.yaml"), characters={}, panels=panels, layout=LayoutSettings(**layout)
    )


def solid_panels(count: int, size=(256, 256)) -> list[Image.Image]:
    return [Image.new("RGB", size, COLOURS[i % len(COLOURS)]) for i in range(count)]


DIALOGUE = st.lists(
    st.builds(
        DialogueLine,
        speaker=st.sampled_from(["Mara", "Tom", "Narrator"]),
        text=st.text(min_size=0, max_size=80),
        kind=st.sampled_from(DIALOGUE_KINDS),
        tail=st.sampled_from(["auto", "left", "right"]),
    ),
    min_size=1,
    max_size=4,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=DIALOGUE, w=st.integers(60, 900), h=st.integers(60, 900), rtl=st.booleans(), caption=st.booleans())
def test_balloons_never_overlap_and_stay_in_reading_order(lettering, lines, w, h, rtl, caption):
    panel = Box(30, 40, w, h)
    avoid = None
    if caption:
        cap = plan_caption(
            "Meanwhile, at the lighthouse.", panel, lettering, position="top", size=22, min_size=6, line=2
        )
        avoid = cap.box if cap else None
    bubbles = plan_bubbles(lines, ["Mara", "Tom"], panel, lettering, size=24, min_size=6, avoid=avoid, rtl=rtl)
    assert len(bubbles) <= len(lines)
    for bubble in bubbles:
        o = bubble.outer
        assert panel.x <= o.x and o.right <= panel.right and panel.y <= o.y and o.bottom <= panel.bottom
        assert avoid is None or not o.overlaps(avoid)
        assert bubble.block.width <= bubble.body.w and bubble.block.height <= bubble.body.h
        # the text block's corners are inside the balloon's ellipse
        a, b = bubble.body.w / 2, bubble.body.h / 2
        assert (bubble.block.width / 2 / a) ** 2 + (bubble.block.height / 2 / b) ** 2 <= 1.0
        tx, ty = bubble.tip
        assert panel.x <= tx <= panel.right and panel.y <= ty <= panel.bottom
    for first, second in itertools.combinations(bubbles, 2):
        assert not first.outer.overlaps(second.outer)
        assert first.outer.y < second.outer.y  # read top to bottom


def test_every_line_gets_a_balloon_in_a_roomy_panel(lettering):
    lines = [
        DialogueLine("Mara", "Did you hear that?"),
        DialogueLine("Tom", "Only the wind. Go back to sleep.", "whisper"),
    ]
    bubbles = plan_bubbles(lines, ["Mara", "Tom"], Box(0, 0, 600, 600), lettering, size=24, min_size=8)
    assert [b.kind for b in bubbles] == ["speech", "whisper"]
    mara, tom = bubbles
    assert mara.tip[0] < tom.tip[0]  # tails point at the speakers, Mara on the left
    rtl = plan_bubbles(lines, ["Mara", "Tom"], Box(0, 0, 600, 600), lettering, size=24, min_size=8, rtl=True)
    assert rtl[0].tip[0] > rtl[1].tip[0]
    hinted = plan_bubbles(
        [DialogueLine("X", "Hi", tail="right")], [], Box(0, 0, 600, 600), lettering, size=24, min_size=8
    )
    assert hinted[0].tip[0] > 300


def test_caption_stays_inside_its_panel(lettering):
    panel = Box(10, 10, 300, 200)
    cap = plan_caption("word " * 300, panel, lettering, position="bottom", size=30, min_size=6, line=2)
    assert cap.box.bottom <= panel.bottom and cap.box.x >= panel.x and cap.box.right <= panel.right
    assert cap.box.h <= panel.h * 0.34 + 1


def test_render_draws_panels_borders_and_background():
    story = make_story(
        4,
        page="800x1000px",
        dpi=100,
        margin="50px",
        gutter="20px",
        border="4px",
        border_color="#00ff00",
        background="#202020",
    )
    (page,) = render_pages(story, solid_panels(4))
    assert page.size == (800, 1000)
    assert page.getpixel((10, 10)) == (32, 32, 32)  # background in the margin
    assert page.getpixel((51, 600)) == (0, 255, 0)  # left border of the bottom-left panel
    assert page.getpixel((200, 900)) == COLOURS[2]  # the third panel's image, bottom left, below its balloons
    assert page.getpixel((600, 900)) == COLOURS[3]


def test_manga_puts_the_first_panel_top_right():
    story = make_story(4, template="manga", page="800x800px", dpi=100, margin="20px", gutter="20px")
    (page,) = render_pages(story, solid_panels(4))
    assert page.getpixel((700, 380)) == COLOURS[0]
    assert page.getpixel((100, 380)) == COLOURS[1]


def test_pages_title_page_and_numbers():
    story = make_story(
        7, page="600x800px", dpi=100, rows=2, columns=2, template="grid", page_numbers=True, title_page=True
    )
    pages = render_pages(story, solid_panels(7))
    assert len(pages) == 3  # title + 4 + 3
    title, first, _ = pages
    assert title.getcolors(1_000_000) and len(title.getcolors(1_000_000)) > 1  # the title is drawn
    band = first.crop((0, first.height - 40, first.width, first.height))
    assert band.convert("L").getextrema()[0] < 128  # a page number in the bottom margin


def test_contain_letterboxes_and_cover_crops():
    wide = Image.new("RGB", (400, 100), (255, 0, 0))
    cover = fit_image(wide, 100, 100, "cover", (0, 0, 0))
    assert cover.size == (100, 100) and cover.getpixel((50, 2)) == (255, 0, 0)
    contain = fit_image(wide, 100, 100, "contain", (0, 0, 0))
    assert contain.getpixel((50, 2)) == (0, 0, 0) and contain.getpixel((50, 50)) == (255, 0, 0)
    clear = fit_image(Image.new("RGBA", (50, 50), (0, 0, 0, 0)), 20, 20, "cover", (9, 9, 9))
    assert clear.getpixel((5, 5)) == (9, 9, 9)  # transparency lands on the background


def test_render_refuses_a_count_mismatch():
    with pytest.raises(InputError, match="3 panels but 2"):
        render_pages(make_story(3), solid_panels(2))


def pdf_pages(path: Path) -> list[tuple[float, float]]:
    data = path.read_bytes()
    assert re.search(rb"/Count\s+(\d+)", data)
    boxes = re.findall(rb"/MediaBox\s*\[\s*0\s+0\s+([\d.]+)\s+([\d.]+)\s*\]", data)
    return [(float(w), float(h)) for w, h in boxes]


def test_write_pages_png_pdf_cbz(tmp_path):
    settings_ = LayoutSettings(dpi=100, cbz=True, template="manga")
    pages = [Image.new("RGB", (850, 1100), c) for c in COLOURS[:3]]
    written = write_pages(pages, tmp_path, settings=settings_, title="The Keeper & Co")
    names = [p.relative_to(tmp_path).as_posix() for p in written]
    assert names == ["pages/page-001.png", "pages/page-002.png", "pages/page-003.png", "comic.pdf", "comic.cbz"]
    assert Image.open(tmp_path / "pages" / "page-002.png").getpixel((5, 5)) == COLOURS[1]
    assert pdf_pages(tmp_path / "comic.pdf") == [(612.0, 792.0)] * 3  # 8.5 x 11 in at 72 pt/in
    with zipfile.ZipFile(tmp_path / "comic.cbz") as archive:
        assert archive.namelist() == ["page-001.png", "page-002.png", "page-003.png", "ComicInfo.xml"]
        info = archive.read("ComicInfo.xml").decode()
        assert "<PageCount>3</PageCount>" in info and "YesAndRightToLeft" in info and "&amp;" in info
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]


def test_existing_files_are_kept_unless_forced(tmp_path):
    settings_ = LayoutSettings(dpi=100)
    write_pages([Image.new("RGB", (100, 100), "red")] * 3, tmp_path, settings=settings_)
    before = (tmp_path / "comic.pdf").read_bytes()
    with pytest.raises(InputError, match=r"page-001\.png already exists.*--force"):
        write_pages([Image.new("RGB", (100, 100), "blue")], tmp_path, settings=settings_)
    assert (tmp_path / "comic.pdf").read_bytes() == before
    write_pages([Image.new("RGB", (100, 100), "blue")], tmp_path, settings=settings_, force=True)
    assert sorted(p.name for p in (tmp_path / "pages").iterdir()) == ["page-001.png"]  # stale pages removed
    assert len(pdf_pages(tmp_path / "comic.pdf")) == 1


def test_load_panel_images_names_the_bad_file(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_panel_images(tmp_path / "nope", 2)
    for i, image in enumerate(solid_panels(2), start=1):
        image.save(tmp_path / f"{i:03d}.png")
    assert [im.getpixel((0, 0)) for im in load_panel_images(tmp_path, 2)] == COLOURS[:2]
    with pytest.raises(InputError, match=r"003\.png is missing"):
        load_panel_images(tmp_path, 3)
    with pytest.raises(InputError, match=r"002\.png has no panel"):
        load_panel_images(tmp_path, 1)
    (tmp_path / "002.png").write_bytes(b"not a png")
    with pytest.raises(InputError, match=r"002\.png: panel is not a readable image"):
        load_panel_images(tmp_path, 2)


def test_balloon_kinds_look_different(lettering):
    """Speech is a solid ellipse, whisper a dashed one, thought and shout reach past the ellipse."""
    ink = {}
    for kind in DIALOGUE_KINDS:
        (bubble,) = plan_bubbles([DialogueLine("A", "", kind)], [], Box(0, 0, 400, 400), lettering, size=20, min_size=6)
        page = Image.new("RGB", (400, 400), (128, 128, 128))
        draw_bubble(page, bubble, line=3)
        dark = (np.asarray(page.convert("L")) < 60).sum()
        white = (np.asarray(page.convert("L")) > 250).sum()
        ink[kind] = dark, white, bubble
    speech_dark, speech_white, speech = ink["speech"]
    assert 0 < ink["whisper"][0] < 0.8 * speech_dark  # dashes: part of the outline only
    assert ink["thought"][2].outer.w > ink["thought"][2].body.w and ink["shout"][2].outer.w > ink["shout"][2].body.w
    for kind in DIALOGUE_KINDS:
        assert ink[kind][1] > 0.5 * speech_white  # every balloon is filled white


PANELS = st.lists(
    st.builds(
        dict,
        span=st.sampled_from(["normal", "wide", "tall", "large"]),
        caption=st.one_of(st.none(), st.text(max_size=60)),
        dialogue=st.lists(
            st.builds(
                DialogueLine,
                speaker=st.sampled_from(["A", "B"]),
                text=st.text(max_size=40),
                kind=st.sampled_from(DIALOGUE_KINDS),
            ),
            max_size=3,
        ),
        size=st.tuples(st.integers(8, 64), st.integers(8, 64)),
    ),
    min_size=1,
    max_size=9,
)


@settings(max_examples=25, deadline=None)
@given(
    panels=PANELS,
    template=st.sampled_from(["auto", "grid", "classic", "strip", "manga"]),
    position=st.sampled_from(["top", "bottom"]),
    fit=st.sampled_from(["cover", "contain"]),
    extras=st.booleans(),
)
def test_any_story_renders(panels, template, position, fit, extras):
    story = Story(
        title="T",
        path=Path("t.yaml"),
        characters={},
        panels=tuple(
            Panel(i, "p", ("A", "B"), caption=p["caption"], dialogue=tuple(p["dialogue"]), span=p["span"])
            for i, p in enumerate(panels)
        ),
        layout=LayoutSettings(
            template=template,
            page="400x560px",
            dpi=72,
            margin="10px",
            gutter="6px",
            caption_position=position,
            fit=fit,
            page_numbers=extras,
            title_page=extras,
        ),
    )
    images = [Image.new("RGB", p["size"], COLOURS[i % len(COLOURS)]) for i, p in enumerate(panels)]
    pages = render_pages(story, images)
    assert len(pages) >= 1 + extras
    assert all(page.mode == "RGB" and page.width == 400 for page in pages)
    if template != "strip":
        assert all(page.height == 560 for page in pages)


def test_nothing_is_drawn_outside_the_panels():
    """Captions, balloons and tails stay inside their panels: gutters and margins are pure background."""
    story = make_story(7, page="700x900px", dpi=110, margin="30px", gutter="12px", background="#102030", rows=2)
    panels = [Image.new("RGB", (64, 64), (255, 255, 255))] * 7  # white like the balloons, to catch any spill
    pages = render_pages(story, panels)
    style = PageStyle.from_settings(story.layout)
    layouts = plan_pages([p.span for p in story.panels], style.spec, rows=2)
    assert len(pages) == len(layouts)
    for page, layout in zip(pages, layouts, strict=True):
        outside = np.ones((page.height, page.width), dtype=bool)
        for placed in layout.panels:
            b = placed.box
            outside[b.y : b.bottom, b.x : b.right] = False
        pixels = np.asarray(page)[outside]
        assert (pixels == (16, 32, 48)).all()


def test_a_tail_past_the_clip_is_cut(lettering):
    (bubble,) = plan_bubbles([DialogueLine("A", "Hi")], [], Box(0, 0, 200, 200), lettering, size=20, min_size=6)
    bubble = replace(bubble, tip=(100, 260))  # a tail reaching out of its panel
    page = Image.new("RGB", (200, 300), (128, 128, 128))
    draw_bubble(page, bubble, line=2, clip=Box(0, 0, 200, 200))
    assert (np.asarray(page)[200:] == 128).all()
