"""Draw comic pages with Pillow: panel images fitted to their boxes, captions, balloons, borders."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageOps

from storyd.errors import InputError
from storyd.layout.bubbles import draw_bubble, plan_bubbles
from storyd.layout.captions import draw_caption, plan_caption
from storyd.layout.fonts import Lettering
from storyd.layout.geometry import Box, PageLayout, PageSpec, plan_pages
from storyd.layout.text import clean, fit_text
from storyd.layout.units import check_page_pixels, color, length_px, page_px
from storyd.story.model import LayoutSettings, Panel, Story

INK = (0, 0, 0)
# Lettering in points, so a page prints the same at any DPI (comic lettering is about 8-12 pt).
SPEECH_PT, CAPTION_PT, MIN_PT, NUMBER_PT, LINE_PT = 12, 11, 5, 9, 0.9


@dataclass(frozen=True)
class PageStyle:
    """LayoutSettings resolved to pixels and RGB at the page's DPI."""

    spec: PageSpec
    border: int
    border_color: tuple[int, int, int]
    background: tuple[int, int, int]
    line: int  # balloon and caption outlines
    speech_px: int  # lettering size
    caption_px: int
    min_px: int  # smallest lettering before text is cut
    number_px: int
    fit: str
    caption_position: str
    page_numbers: bool

    @classmethod
    def from_settings(cls, settings: LayoutSettings) -> PageStyle:
        dpi = settings.dpi
        if not 30 <= dpi <= 1200:
            raise InputError(f"layout dpi {dpi} is out of range", hint="use a value from 30 to 1200, e.g. 150 or 300")
        width, height = page_px(settings.page, dpi)
        margin = length_px(settings.margin, dpi, field="margin")
        pt = dpi / 72
        number_px = max(8, round(NUMBER_PT * pt))
        footer = max(0, round(number_px * 1.8) - margin) if settings.page_numbers else 0
        return cls(
            spec=PageSpec(width, height, margin, length_px(settings.gutter, dpi, field="gutter"), footer),
            border=length_px(settings.border, dpi, field="border"),
            border_color=color(settings.border_color, field="border_color"),
            background=color(settings.background, field="background"),
            line=max(1, round(LINE_PT * pt)),
            speech_px=max(8, round(SPEECH_PT * pt)),
            caption_px=max(8, round(CAPTION_PT * pt)),
            min_px=max(6, round(MIN_PT * pt)),
            number_px=number_px,
            fit=settings.fit,
            caption_position=settings.caption_position,
            page_numbers=settings.page_numbers,
        )


def check_layout(story: Story, panel_aspect: float = 1.0) -> None:
    """Raise the InputError `render_pages` would raise for the story's layout (lengths, page size,
    panels with no room), without drawing: so a bad layout fails before any panel is drawn."""
    _page_layouts(story, PageStyle.from_settings(story.layout), panel_aspect)


def _page_layouts(story: Story, style: PageStyle, panel_aspect: float) -> list[PageLayout]:
    settings = story.layout
    layouts = plan_pages(
        [p.span for p in story.panels],
        style.spec,
        template=settings.template,
        rows=settings.rows,
        columns=settings.columns,
        seed=story.seed if settings.seed is None else settings.seed,
        panel_aspect=panel_aspect,
    )
    for layout in layouts:  # a strip's page takes its height from the panels
        check_page_pixels(layout.width, layout.height, "a page of the layout", settings.dpi)
    return layouts


def lettering_warnings(story: Story) -> list[str]:
    """One warning for each caption, dialogue line or title with characters that no font can draw
    (emoji, say, with no colour emoji font): the main face draws them as gaps or boxes."""
    lettering = Lettering(story.layout.font)
    texts = [("the title", story.title)] if story.layout.title_page else []
    for panel in story.panels:
        if panel.caption:
            texts.append((f"panel {panel.index + 1}'s caption", panel.caption))
        texts += [(f"panel {panel.index + 1}'s dialogue line {k}", d.text) for k, d in enumerate(panel.dialogue, 1)]
    warnings = []
    for where, text in texts:
        missing = lettering.missing(clean(text))
        if missing:
            chars = ", ".join(f"'{c}' (U+{ord(c):04X})" for c in missing)
            warnings.append(f"{where}: no font has {chars}; it shows as a gap or a box, so rephrase without it")
    return warnings


def render_pages(story: Story, panel_images: Sequence[Image.Image]) -> list[Image.Image]:
    """One image per page (the title page first, if asked for), from one image per story panel."""
    if len(panel_images) != len(story.panels):
        raise InputError(
            f"the story has {len(story.panels)} panels but {len(panel_images)} panel images were given",
            hint="give one image per panel, in story order",
        )
    settings = story.layout
    style = PageStyle.from_settings(settings)
    lettering = Lettering(settings.font)
    first = panel_images[0] if panel_images else None
    aspect = first.width / first.height if first is not None and first.height else 1.0
    layouts = _page_layouts(story, style, aspect)
    pages = []
    if settings.title_page:
        size = (layouts[0].width, layouts[0].height) if layouts else (style.spec.width, style.spec.height)
        pages.append(title_page(story.title, size, style, lettering))
    for number, layout in enumerate(layouts, start=1):
        page = draw_page(layout, story.panels, panel_images, style, lettering)
        if style.page_numbers:
            draw_page_number(page, number, style, lettering)
        pages.append(page)
    return pages


def draw_page(
    layout: PageLayout,
    panels: Sequence[Panel],
    images: Sequence[Image.Image],
    style: PageStyle,
    lettering: Lettering,
) -> Image.Image:
    page = Image.new("RGB", (layout.width, layout.height), style.background)
    for placed in layout.panels:
        panel, box = panels[placed.index], placed.box
        page.paste(fit_image(images[placed.index], box.w, box.h, style.fit, style.background), (box.x, box.y))
        caption = None
        if panel.caption:
            caption = plan_caption(
                panel.caption,
                box,
                lettering,
                position=style.caption_position,
                size=style.caption_px,
                min_size=style.min_px,
                line=style.line,
                rtl=layout.rtl,
            )
            if caption is not None:
                draw_caption(page, caption, line=style.line)
        bubbles = plan_bubbles(
            panel.dialogue,
            panel.characters,
            box,
            lettering,
            size=style.speech_px,
            min_size=style.min_px,
            avoid=caption.box if caption else None,
            rtl=layout.rtl,
        )
        for bubble in bubbles:
            draw_bubble(page, bubble, line=style.line, clip=box)
        if style.border > 0:
            ImageDraw.Draw(page).rectangle(
                (box.x, box.y, box.right - 1, box.bottom - 1), outline=style.border_color, width=style.border
            )
    return page


def fit_image(image: Image.Image, width: int, height: int, fit: str, background) -> Image.Image:
    """Scale keeping the aspect ratio: `cover` crops the overflow (a little above centre,
    where faces usually are); `contain` letterboxes on the page background."""
    if image.mode != "RGB":
        flat = Image.new("RGB", image.size, background)
        rgba = image.convert("RGBA")
        flat.paste(rgba, (0, 0), rgba)
        image = flat
    if fit == "contain":
        inner = ImageOps.contain(image, (width, height), Image.Resampling.LANCZOS)
        cell = Image.new("RGB", (width, height), background)
        cell.paste(inner, ((width - inner.width) // 2, (height - inner.height) // 2))
        return cell
    return ImageOps.fit(image, (width, height), Image.Resampling.LANCZOS, centering=(0.5, 0.4))


def title_page(title: str, size: tuple[int, int], style: PageStyle, lettering: Lettering) -> Image.Image:
    page = Image.new("RGB", size, style.background)
    spec = style.spec
    area = Box(spec.margin, spec.margin, size[0] - 2 * spec.margin, size[1] - 2 * spec.margin)
    block = fit_text(title, lettering, area.w * 0.85, area.h * 0.4, max_size=style.speech_px * 5, min_size=style.min_px)
    draw = ImageDraw.Draw(page)
    top = area.y + round(area.h * 0.3)
    block.draw(draw, area.x, top, area.w, block.height, fill=_ink_on(style.background))
    rule_y = top + block.height + style.speech_px
    if rule_y < area.bottom:
        half = round(area.w * 0.25)
        mid = area.x + area.w // 2
        draw.line((mid - half, rule_y, mid + half, rule_y), fill=style.border_color, width=max(1, style.line * 2))
    return page


def draw_page_number(page: Image.Image, number: int, style: PageStyle, lettering: Lettering) -> None:
    spec = style.spec
    band_top = page.height - spec.margin - spec.footer
    block = fit_text(str(number), lettering, page.width / 4, page.height - band_top, max_size=style.number_px)
    block.draw(ImageDraw.Draw(page), 0, band_top, page.width, page.height - band_top, fill=_ink_on(style.background))


def _ink_on(background: tuple[int, int, int]) -> tuple[int, int, int]:
    r, g, b = background
    return INK if 0.299 * r + 0.587 * g + 0.114 * b > 128 else (255, 255, 255)
