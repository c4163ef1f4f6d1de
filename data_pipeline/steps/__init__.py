"""The per-document steps of the preprocessing pipeline, each built from its config dataclass."""

from data_pipeline.steps.extract import HtmlExtractor
from data_pipeline.steps.gutenberg import GutenbergStripper
from data_pipeline.steps.langid import LanguageIdentifier
from data_pipeline.steps.normalize import TextNormalizer
from data_pipeline.steps.pii import PiiRedactor

__all__ = ["GutenbergStripper", "HtmlExtractor", "LanguageIdentifier", "PiiRedactor", "TextNormalizer"]
