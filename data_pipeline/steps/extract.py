"""Replace the HTML of web documents with their main text, using datatrove's trafilatura extractor."""

from __future__ import annotations

from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.extractors.base import ExtractorSandbox
from datatrove.pipeline.extractors.trafilatura import Trafilatura
from datatrove.utils.typeshelper import StatHints

from data_pipeline.bad_records import BadRecord, BadRecordLog
from data_pipeline.config import ExtractConfig
from data_pipeline.fast.discard_xpaths import compiled_discard_xpaths


class HtmlExtractor(Trafilatura):
    """Extracts the main text of documents whose `metadata["is_html"]` is true; other documents pass untouched.

    Extraction runs in datatrove's sandbox process, so a page that hangs or crashes trafilatura costs one
    document, not the task. Such pages are dropped and logged as bad records; a page with no main text is
    dropped and counted (a normal outcome for index and navigation pages, not bad input). With
    `compiled_xpaths`, trafilatura prunes boilerplate with the selectors of fast/discard_xpaths.py (same
    text, faster); without, it runs as stock.
    """

    name = "⛏ HTML extraction"

    def __init__(self, config: ExtractConfig | None = None, bad_records: BadRecordLog | None = None,
                 compiled_xpaths: bool = True):
        config = config or ExtractConfig()
        super().__init__(
            favour_precision=config.favour_precision,
            timeout=config.timeout_s,
            # trafilatura's deduplication keeps a process-wide cache, so a page's text would depend on which
            # pages the task extracted before it; the dedup stages remove repetition reproducibly
            deduplicate=False,
            include_tables=config.include_tables,
        )
        self.bad_records = bad_records or BadRecordLog(None)
        self.compiled_xpaths = compiled_xpaths

    def extract(self, text: str) -> str:
        if not self.compiled_xpaths:
            return super().extract(text)
        with compiled_discard_xpaths():
            return super().extract(text)

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        self.bad_records.start_task(rank)
        with ExtractorSandbox(timeout=self.timeout) as sandbox:
            for doc in data:
                self.stat_update(StatHints.total, value=1)
                if not doc.metadata.get("is_html"):
                    self.stat_update("passed_through")
                    yield doc
                    continue
                with self.track_time():
                    text = self._extract(sandbox, doc, rank)
                if text is None:
                    continue
                if not text.strip():
                    self.stat_update(StatHints.dropped, "dropped_empty")
                    continue
                doc.text = text
                doc.metadata["is_html"] = False
                self.stat_update(StatHints.forwarded, "extracted")
                self.update_doc_stats(doc)
                yield doc
        self.bad_records.close()

    def _extract(self, sandbox: ExtractorSandbox, doc: Document, rank: int) -> str | None:
        """The extracted text ("" when trafilatura finds none), or None when extraction failed (counted and logged)."""
        try:
            return sandbox.process_document(doc.text, self.extract) or ""
        except TimeoutError:
            reason, error = "timeout", f"HTML extraction took longer than {self.timeout:g} s"
        except EOFError:
            reason, error = "broken_process", "the HTML extraction process died (trafilatura crashed or ran out of memory)"
        except Exception as e:  # whatever trafilatura raises on one page must not end the task
            first_line = str(e).partition("\n")[0]
            reason, error = "extract_error", f"HTML extraction failed: {type(e).__name__}: {first_line}"
        self.stat_update(StatHints.dropped, f"dropped_{reason}")
        self.bad_records.add(BadRecord("extract", doc.metadata.get("file", ""), str(doc.id), error), rank)
        return None
