"""Toy model: identity agreement and prompt adherence, CSA off / write / read (issue 5's measure).

20 stories of 4 to 8 panels about one kid whose prompts name hair and skin and trousers
but leave shirt colour, shirt pattern, hat and glasses to the model. `agreement`: the
fraction of panel pairs of a story whose free attributes all match, as the attribute
reader reads them; `agree_*`: per attribute. `adherence_*`: the fraction of panels whose
setting and action are what the prompt names. Two CSA settings: the published defaults
(up blocks, rate 0.5, warm-up 1, random skip) and storyd's toy defaults.
"""

from __future__ import annotations

from storyd.story import ConsistencySettings

SETTINGS = {
    "published": ConsistencySettings(),
    "all layers, rate 1, no skip": ConsistencySettings(layers="all", sampling_rate=(1.0,), random_skip=False),
}


def run() -> list[dict]:
    from storyd.models import get_preset, load_pipeline
    from storyd.toy.consistency import make_cases, measure

    pipe = load_pipeline(get_preset("toy"), device="cpu")
    cases = make_cases(20, seed=0)
    rows = []
    for label, settings in SETTINGS.items():
        modes = ("off", "write", "read") if label == "published" else ("write", "read")
        for row in measure(pipe, cases, settings, modes=modes):
            rows.append({"csa": label if row["mode"] != "off" else "-", **_fmt(row)})
    return rows


def _fmt(row: dict) -> dict:
    return {k: (f"{v:.2f}" if isinstance(v, float) else v) for k, v in row.items()}


if __name__ == "__main__":
    from bench.__main__ import print_table

    print_table("toy consistency", run())
