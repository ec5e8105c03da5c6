"""Write pages out: a PNG per page, one PDF of all pages, optionally a CBZ. Every file atomically,
and byte-reproducibly: the same pages make the same files."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Sequence
from pathlib import Path
from xml.sax.saxutils import escape

from PIL import Image

from storyd.errors import InputError
from storyd.fsutil import atomic_open, atomic_write_bytes
from storyd.story.model import LayoutSettings

PAGE_NAME = "page-{:03d}.png"
PDF_JPEG_QUALITY = 92  # Pillow stores RGB pages in a PDF as JPEG; its default (75) smears lettering


def output_paths(out_dir: Path, count: int, settings: LayoutSettings) -> list[Path]:
    """Every file `write_pages` writes for `count` pages, in the order it writes them."""
    paths = [out_dir / "pages" / PAGE_NAME.format(n) for n in range(1, count + 1)]
    paths.append(out_dir / "comic.pdf")
    if settings.cbz:
        paths.append(out_dir / "comic.cbz")
    return paths


def write_pages(
    pages: Sequence[Image.Image],
    out_dir: Path,
    *,
    settings: LayoutSettings,
    force: bool = False,
    title: str | None = None,
) -> list[Path]:
    """Write `out_dir/pages/page-001.png`..., `out_dir/comic.pdf` and, if `settings.cbz`, `out_dir/comic.cbz`.

    Nothing is written if any of those files exists and `force` is false. With
    `force`, page PNGs left over from a longer earlier layout are removed, so the
    folder always matches the PDF.
    """
    if not pages:
        raise InputError("there are no pages to write", hint="give the story at least one panel")
    out_dir = Path(out_dir)
    paths = output_paths(out_dir, len(pages), settings)
    if not force:
        for path in paths:
            if path.exists():
                raise InputError(f"{path} already exists", hint="pass --force to overwrite it")
    encoded = [_png(page, settings.dpi) for page in pages]
    for path, data in zip(paths[: len(encoded)], encoded, strict=True):
        atomic_write_bytes(path, data)
    if force:
        keep = set(paths)
        for stale in (out_dir / "pages").glob("page-[0-9][0-9][0-9].png"):
            if stale not in keep:
                stale.unlink()
    pdf = out_dir / "comic.pdf"
    with atomic_open(pdf, "wb") as handle:
        first = pages[0].convert("RGB")
        rest = [page.convert("RGB") for page in pages[1:]]
        first.save(
            handle,
            format="PDF",
            save_all=True,
            append_images=rest,
            resolution=float(settings.dpi),
            title=title,
            creationDate=None,  # no timestamps: the same pages make a byte-identical PDF
            modDate=None,
            quality=PDF_JPEG_QUALITY,
            subsampling=0,  # full-resolution colour keeps lettering crisp
        )
    if settings.cbz:
        _write_cbz(out_dir / "comic.cbz", encoded, title=title, manga=settings.template == "manga")
    return paths


def _png(page: Image.Image, dpi: int) -> bytes:
    buffer = io.BytesIO()
    page.save(buffer, format="PNG", dpi=(dpi, dpi), optimize=False)
    return buffer.getvalue()


def _write_cbz(path: Path, encoded: Sequence[bytes], *, title: str | None, manga: bool) -> None:
    """A zip of the PNGs (stored, as PNG is already compressed) with a ComicInfo.xml readers understand."""
    info = ['<?xml version="1.0" encoding="utf-8"?>', "<ComicInfo>"]
    if title:
        info.append(f"  <Title>{escape(title)}</Title>")
    info.append(f"  <PageCount>{len(encoded)}</PageCount>")
    if manga:
        info.append("  <Manga>YesAndRightToLeft</Manga>")
    info.append("</ComicInfo>\n")
    with atomic_open(path, "wb") as handle:
        with zipfile.ZipFile(handle, "w", compression=zipfile.ZIP_STORED) as archive:
            for n, data in enumerate(encoded, start=1):
                archive.writestr(_entry(PAGE_NAME.format(n)), data)
            archive.writestr(_entry("ComicInfo.xml"), "\n".join(info), compress_type=zipfile.ZIP_DEFLATED)


def _entry(name: str) -> zipfile.ZipInfo:
    """A zip entry dated 1980-01-01 (zip's earliest date), not now, so the archive is reproducible."""
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.external_attr = 0o644 << 16
    return info
