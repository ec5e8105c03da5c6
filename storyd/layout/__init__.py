"""The comic layout engine: panels and their lettering laid out on real-size pages.

`render_pages` draws the pages; `write_pages` writes PNGs, a PDF and a CBZ.
Geometry (`plan_pages`) is pure and separate from drawing.
"""

from storyd.layout.export import write_pages
from storyd.layout.geometry import Box, PageLayout, PageSpec, PanelBox, plan_pages
from storyd.layout.panel_files import load_panel_images
from storyd.layout.render import check_layout, lettering_warnings, render_pages

__all__ = [
    "Box",
    "check_layout",
    "PageLayout",
    "PageSpec",
    "PanelBox",
    "lettering_warnings",
    "load_panel_images",
    "plan_pages",
    "render_pages",
    "write_pages",
]
