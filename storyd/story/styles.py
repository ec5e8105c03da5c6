"""Style templates: how a panel prompt is dressed for a look. Ours, written for storyd.

Each template wraps the panel's prompt (`{prompt}`) and adds to the negative prompt.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Style:
    name: str
    template: str  # contains "{prompt}"
    negative: str = ""


STYLES: dict[str, Style] = {
    s.name: s
    for s in (
        Style("none", "{prompt}"),
        Style(
            "anime",
            "{prompt}, japanese anime style, cel shading, clean line art, vivid colours, detailed eyes",
            "photograph, realistic, 3d render, western cartoon",
        ),
        Style(
            "digital-painting",
            "{prompt}, digital painting, painterly brush strokes, soft lighting, concept art",
            "photograph, flat colours, line art",
        ),
        Style(
            "oil-painting",
            "{prompt}, oil painting on canvas, visible impasto brushwork, rich pigments, classical composition",
            "photograph, digital art, flat shading",
        ),
        Style(
            "3d-animation",
            "{prompt}, 3d animated film still, soft global illumination, expressive stylised characters",
            "photograph, 2d, sketch, flat shading",
        ),
        Style(
            "photographic",
            "{prompt}, photograph, 35mm lens, natural light, sharp focus, film grain",
            "drawing, painting, cartoon, anime, 3d render",
        ),
        Style(
            "comic-book",
            "{prompt}, comic book art, bold ink outlines, halftone shading, dynamic composition, flat bright colours",
            "photograph, realistic, blurry, 3d render",
        ),
        Style(
            "line-art",
            "{prompt}, black ink line art, clean contours, white background shading, no colour",
            "colour, painting, photograph, gradient",
        ),
        Style(
            "film-noir",
            "{prompt}, black and white film noir, hard low-key lighting, deep shadows, venetian blind light, 1940s",
            "colour, bright, cheerful, cartoon",
        ),
        Style(
            "isometric",
            "{prompt}, isometric view, 30 degree axonometric projection, miniature diorama, clean edges",
            "perspective distortion, close-up, photograph",
        ),
    )
}
