"""`evaluate`: output folders in, an EvalReport out. The Python API of `storyd eval`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from storyd.errors import InputError, StorydError, WeightsError
from storyd.eval import protocol
from storyd.eval.background import KEY, BackgroundRemover, panel_queries
from storyd.eval.images import pairwise_mean
from storyd.eval.report import EvalReport, ModelInfo, RunInfo, Skipped
from storyd.eval.runs import Run, StoryRun, identity_pairs, load_run
from storyd.eval.stats import bootstrap, paired_difference
from storyd.progress import NullProgress, Progress

TOY_READER = "toy-reader"


def select_metrics(spec: str, protocol_name: str = "storyd") -> tuple[list[str], bool]:
    """The metric names ``spec`` asks for, in protocol order, and whether they were named explicitly;
    ``auto`` is every metric of ``protocol_name``."""
    spec = spec.strip().lower()
    if protocol_name not in protocol.PROTOCOLS:
        raise InputError(f"unknown protocol '{protocol_name}'", f"choose from {', '.join(protocol.PROTOCOLS)}")
    if spec == "auto":
        return [name for name, m in protocol.METRICS.items() if m.protocol == protocol_name], False
    wanted: set[str] = set()
    for word in filter(None, (w.strip() for w in spec.split(","))):
        if word in protocol.GROUPS:
            wanted.update(protocol.GROUPS[word])
        elif word in protocol.METRICS:
            wanted.add(word)
        else:
            from storyd.weights.lock import did_you_mean

            raise InputError(f"unknown metric '{word}'",
                             did_you_mean(word, protocol.CHOICES) + f"choose from {', '.join(protocol.CHOICES)}")
    if not wanted:
        raise InputError("--metrics is empty", f"choose from {', '.join(protocol.CHOICES)}")
    return [m for m in protocol.METRICS if m in wanted], True


class _Models:
    """Loads each metric model once; in auto mode a missing one is recorded instead of raised."""

    def __init__(self, lock, weights_dir: Path | None, explicit: bool) -> None:
        self.lock, self.weights_dir, self.explicit = lock, weights_dir, explicit
        self.loaded: dict[str, object] = {}
        self.info: dict[str, ModelInfo] = {}
        self.missing: dict[str, str] = {}

    def get(self, name: str):
        if name in self.loaded or name in self.missing:
            return self.loaded.get(name)
        try:
            self.loaded[name] = self._load(name)
        except StorydError as exc:
            if self.explicit:
                raise
            self.missing[name] = exc.format()
            return None
        return self.loaded[name]

    def optional(self, name: str):
        """Like ``get``, but a missing model is never an error: the caller has a fallback."""
        explicit, self.explicit = self.explicit, False
        try:
            return self.get(name)
        finally:
            self.explicit = explicit

    def background(self, is_toy: bool) -> BackgroundRemover:
        """CLIPSeg where it is installed; the border-colour key for toy runs and where it is not."""
        if is_toy:
            return BackgroundRemover(method=f"{KEY} (toy model)")
        segmenter = self.optional(protocol.BACKGROUND_MODEL)
        if segmenter is None:
            return BackgroundRemover(method=f"{KEY} ({self.missing[protocol.BACKGROUND_MODEL]})")
        info = self.info[protocol.BACKGROUND_MODEL].describe()
        return BackgroundRemover(segmenter, f"{protocol.BACKGROUND_MODEL} {info}, threshold "
                                            f"{protocol.BACKGROUND_THRESHOLD}")

    def _load(self, name: str):
        if name == TOY_READER:
            from storyd.eval.toy_metrics import load_reader

            self.info[name] = ModelInfo(TOY_READER, None, None)
            return load_reader()
        from storyd.weights import load_lock, resolve

        lock = self.lock or load_lock()
        if name not in lock.entries:
            raise WeightsError(f"model '{name}' has no entry in {lock.path.name} yet",
                               "pin it there to compute this metric (docs/eval.md says which model)")
        entry = lock.get(name)
        folder = resolve(entry, self.weights_dir)
        if entry.url is not None:  # an archive pinned by sha256: shown as file@sha256[:12]
            self.info[name] = ModelInfo(name, entry.files[0].path, entry.files[0].sha256)
        else:
            self.info[name] = ModelInfo(name, entry.repo, entry.revision)
        if name in (protocol.CLIP_MODEL, protocol.CLIP_B16_MODEL):
            from storyd.eval.clip_metrics import ClipEncoder

            return ClipEncoder.load(folder)
        if name == protocol.DREAMSIM_MODEL:
            from storyd.eval.dreamsim import load_dreamsim

            return load_dreamsim(folder)
        if name == protocol.BACKGROUND_MODEL:
            from storyd.eval.background import ClipSegSegmenter

            return ClipSegSegmenter.load(folder)
        from storyd.eval.dino import ClsEncoder

        return ClsEncoder.load(folder)


def _is_toy(run: Run) -> bool:
    return all(s.model == protocol.TOY_MODEL for s in run.stories)


def evaluate(
    run_dirs: Sequence[Path | str],
    metrics: str = "auto",
    *,
    mask_background: bool = False,
    weights_dir: Path | None = None,
    lock=None,
    labels: Sequence[str] | None = None,
    progress: Progress | None = None,
    protocol_name: str = "storyd",
) -> EvalReport:
    """Score each run (a comic output folder, or a folder of them) with the pinned protocol.

    ``metrics`` is "auto" (everything whose model is on this machine; the rest are
    listed in ``report.skipped`` with the command that fetches them) or a comma list
    of names, whose missing models raise WeightsError. ``progress`` counts the stories scored.
    """
    if not run_dirs:
        raise InputError("no output folder given", "pass one or more folders written by `storyd comic`")
    runs = [load_run(d, labels[i] if labels else None) for i, d in enumerate(run_dirs)]
    if len({r.label for r in runs}) < len(runs):
        runs = [Run(r.folder, str(r.folder), r.stories) for r in runs]
    wanted, explicit = select_metrics(metrics, protocol_name)
    toy_runs = [_is_toy(r) for r in runs]
    skipped: list[Skipped] = []
    if not any(toy_runs) and any(protocol.METRICS[m].model == TOY_READER for m in wanted):
        if explicit:
            raise InputError(f"the toy metrics read only images of the '{protocol.TOY_MODEL}' model, "
                             "and no run was drawn by it", "leave toy-identity and toy-adherence out of --metrics")
        wanted = [m for m in wanted if protocol.METRICS[m].model != TOY_READER]
    models = _Models(lock, weights_dir, explicit)
    for name in wanted:
        if models.get(protocol.METRICS[name].model) is None:
            skipped.append(Skipped(name, models.missing[protocol.METRICS[name].model]))
    computed = [m for m in wanted if protocol.METRICS[m].model in models.loaded]
    if not computed:
        reasons = sorted({s.reason for s in skipped})
        raise WeightsError("no metric model is on this machine, so nothing can be scored", "; ".join(reasons))
    per_story: dict[str, dict[str, dict[str, float]]] = {}
    masked = (mask_background and bool({"clip-i", "dino-i", "dreamsim"} & set(computed))) \
        or bool({"cs-clip-i", "cs-dreamsim"} & set(computed))
    removers = {r.label: models.background(is_toy) for r, is_toy in zip(runs, toy_runs)} if masked else {}
    progress = progress or NullProgress()
    total, done = sum(len(r.stories) for r in runs), 0
    for run, is_toy in zip(runs, toy_runs):
        scores: dict[str, dict[str, float]] = {m: {} for m in computed}
        for story in run.stories:
            progress.update("scoring", done, total, unit="stories", detail=f"{run.label}/{story.name}")
            done += 1
            remover = removers.get(run.label)
            for name, value in _score_story(story, computed, models.loaded, mask_background, is_toy, remover).items():
                scores[name][story.name] = value
        per_story[run.label] = scores
    estimates = {
        m: [bootstrap(per_story[r.label][m].values()) if is_toy or protocol.METRICS[m].model != TOY_READER else None
            for r, is_toy in zip(runs, toy_runs)]
        for m in computed
    }
    differences = {}
    if len(runs) > 1:
        first = per_story[runs[0].label]
        differences = {
            m: [None] + [paired_difference(first[m], per_story[r.label][m])
                         if estimates[m][0] is not None and estimates[m][k] is not None else None
                         for k, r in enumerate(runs) if k > 0]
            for m in computed
        }
    return EvalReport(
        runs=[RunInfo(r.label, str(r.folder), r.models, r.csa, len(r.stories)) for r in runs],
        metrics=computed,
        models={m: models.info[protocol.METRICS[m].model] for m in computed},
        estimates=estimates,
        per_story=per_story,
        differences=differences,
        skipped=skipped,
        mask_background=mask_background,
        protocol=protocol_name,
        background={label: remover.method for label, remover in removers.items()},
    )


def _without_background(story: StoryRun, images, remover: BackgroundRemover) -> list:
    """Each panel with its background replaced by noise seeded by its index (so no two panels share noise)."""
    return [remover(im, panel_queries(story.descriptions, p.characters, p.base_prompt), (protocol.MASK_NOISE_SEED,
                                                                                           p.index))
            for im, p in zip(images, story.panels)]


def _score_story(story: StoryRun, metrics: list[str], loaded: dict, mask: bool, is_toy: bool,
                 remover: BackgroundRemover | None) -> dict[str, float]:
    images = story.load_images()
    masked = _without_background(story, images, remover) if remover is not None else None
    identity_images = masked if mask and masked is not None else images
    pairs = identity_pairs(story)
    out: dict[str, float] = {}
    if {"clip-t", "clipscore"} & set(metrics):
        from storyd.eval.clip_metrics import clipscore

        cosines = loaded[protocol.CLIP_MODEL].text_image_cosines(images, [p.base_prompt for p in story.panels])
        out["clip-t"] = sum(cosines) / len(cosines)
        out["clipscore"] = sum(clipscore(c) for c in cosines) / len(cosines)
    for name in ("clip-i", "dino-i", "dreamsim"):
        if name in metrics:
            embeddings = loaded[protocol.METRICS[name].model].embed_images(identity_images)
            similarity = pairwise_mean(embeddings, pairs)
            out[name] = 1.0 - similarity if name == "dreamsim" else similarity
    out.update(_consistory_scores(story, images, masked, metrics, loaded))
    if is_toy and {"toy-identity", "toy-adherence"} & set(metrics):
        from storyd.eval.toy_metrics import toy_scores

        out.update(toy_scores(story, images, loaded[TOY_READER]))
    return {k: v for k, v in out.items() if k in metrics}


def _consistory_scores(story: StoryRun, images, masked, metrics: list[str], loaded: dict) -> dict[str, float]:
    """ConsiStory+'s terms as 1Prompt1Story publishes them: CLIPScore with the prefix on ViT-B/32 on the whole
    panel; CLIP-I (ViT-B/16) and DreamSim over every image pair of the story's set, backgrounds removed."""
    import itertools

    out: dict[str, float] = {}
    pairs = list(itertools.combinations(range(len(images)), 2))
    if "cs-clip-t" in metrics:
        from storyd.eval.clip_metrics import clipscore

        cosines = loaded[protocol.CLIP_MODEL].text_image_cosines(images, [p.base_prompt for p in story.panels])
        out["cs-clip-t"] = sum(clipscore(c) for c in cosines) / len(cosines)
    if "cs-clip-i" in metrics:
        out["cs-clip-i"] = pairwise_mean(loaded[protocol.CLIP_B16_MODEL].embed_images(masked), pairs)
    if "cs-dreamsim" in metrics:
        out["cs-dreamsim"] = 1.0 - pairwise_mean(loaded[protocol.DREAMSIM_MODEL].embed_images(masked), pairs)
    return out
