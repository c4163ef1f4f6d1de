"""Quality filters with per-source thresholds.

Each source names a quality profile (by default the profile named like its kind). The step builds
datatrove's Gopher quality, Gopher repetition, C4 and FineWeb filters once per profile and runs a
document through the filters of its own profile, recording which filter removed it and why. With the
"fast" components, the filters split words with FastWordTokenizer, the Gopher repetition counts are those
of fast/repetition.py and the Gopher quality and C4 filters those of fast/heuristics.py: the same
decisions as the stock ones.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict

from datatrove.data import DocumentsPipeline
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.filters import (
    C4QualityFilter,
    FineWebQualityFilter,
    GopherQualityFilter,
    GopherRepetitionFilter,
)
from datatrove.pipeline.filters.base_filter import BaseFilter

from data_pipeline.config import QualityProfile
from data_pipeline.fast.heuristics import FastC4QualityFilter, FastGopherQualityFilter
from data_pipeline.fast.repetition import FastGopherRepetitionFilter
from data_pipeline.fast.word_tokenizer import get_word_tokenizer
from data_pipeline.removed_sample import RemovedSample


def build_filters(profile: QualityProfile, components: str) -> list[tuple[str, BaseFilter]]:
    """The enabled filters of a profile, in the order they run (cheapest decisions first)."""
    language = get_word_tokenizer(components)
    fast = components == "fast"
    repetition_filter = FastGopherRepetitionFilter if fast else GopherRepetitionFilter
    quality_filter = FastGopherQualityFilter if fast else GopherQualityFilter
    c4_filter = FastC4QualityFilter if fast else C4QualityFilter
    filters: list[tuple[str, BaseFilter]] = []

    def options(section) -> dict:
        opts = asdict(section)
        opts.pop("enabled")
        return opts

    if profile.gopher_repetition.enabled:
        opts = options(profile.gopher_repetition)
        opts["top_n_grams"] = tuple(sorted(opts["top_n_grams"].items()))
        opts["dup_n_grams"] = tuple(sorted(opts["dup_n_grams"].items()))
        filters.append(("gopher_repetition", repetition_filter(**opts, language=language)))
    if profile.gopher_quality.enabled:
        filters.append(("gopher_quality", quality_filter(**options(profile.gopher_quality), language=language)))
    if profile.c4.enabled:
        filters.append(("c4", c4_filter(**options(profile.c4), language=language)))
    if profile.fineweb.enabled:
        filters.append(("fineweb", FineWebQualityFilter(**options(profile.fineweb), language=language)))
    return filters


class QualityFilters(PipelineStep):
    """Routes each document through the filters of `metadata["quality_profile"]`.

    Stats: `removed/<profile>/<filter>` per removed document and `reason/<filter>/<reason>` with the
    filter's own reason, so the report can say what each filter removed; `removed` (optional) keeps the
    removed documents' counts per source and a sample of them.
    """

    name = "quality filters"
    type = "🔻 - FILTER"

    def __init__(self, profiles: dict[str, QualityProfile], components: str = "fast", removed: RemovedSample | None = None):
        super().__init__()
        self.profiles = profiles
        self.components = components
        self.removed = removed
        self._filters: dict[str, list[tuple[str, BaseFilter]]] | None = None

    def _filters_for(self, profile: str) -> list[tuple[str, BaseFilter]]:
        if self._filters is None:
            self._filters = {name: build_filters(p, self.components) for name, p in self.profiles.items()}
        return self._filters[profile]

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        with self.removed if self.removed is not None else contextlib.nullcontext():
            yield from self._filter(data, rank)

    def _filter(self, data: DocumentsPipeline, rank: int) -> DocumentsPipeline:
        for doc in data:
            profile = doc.metadata["quality_profile"]
            with self.track_time():
                verdict = None
                for filter_name, doc_filter in self._filters_for(profile):
                    result = doc_filter.filter(doc)
                    keep, reason = result if isinstance(result, tuple) else (result, None)
                    if not keep:
                        verdict = (filter_name, reason or "rejected")
                        break
            if verdict is not None:
                filter_name, reason = verdict
                self.stat_update(f"removed/{profile}/{filter_name}", "dropped")
                self.stat_update(f"reason/{filter_name}/{reason}")
                if self.removed is not None:
                    self.removed.add(doc, filter_name, reason, rank)
                continue
            self.stat_update("forwarded")
            yield doc
