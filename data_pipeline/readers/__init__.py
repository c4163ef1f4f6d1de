"""List the input files of the configured sources and read them into datatrove Documents, one module per format.

`list_source_files` resolves every source's paths (files, folders, globs) before any work starts, so a
typo in a path fails at once with a `ConfigError` instead of hours later. `SourceReader` is the first step
of the pipeline: it reads its task's share of those files and never stops on bad input. Each bad record
is counted, logged to the bad-record log with where it was found, and reading goes on with the next
record or file.

Formats, detected by extension (`listing.detect_format`), and the module that reads each:
    .warc .warc.gz                     warc.py     WARC: `response` records with an HTML payload, kept as raw HTML
    .wet .wet.gz                       warc.py     WET: `conversion` records, plain text
    .html .htm                         text.py     one HTML document per file
    .jsonl .jsonl.gz .jsonl.zst .json.gz   jsonl.py    JSON Lines, one document per line
    .parquet                           parquet.py  one document per row
    .txt .md, or no extension          text.py     plain text, one document per file
Shared by them: `compression` (.gz and .zst streams), `decoding` (bytes to text), `context` (reports,
counts, the Document fields); `step` holds the `SourceReader` step, which picks the reader by format.
"""

from data_pipeline.readers.decoding import decode_bytes
from data_pipeline.readers.listing import FORMAT_BY_SUFFIX, SourceFile, detect_format, list_source_files
from data_pipeline.readers.step import SourceReader

__all__ = ["FORMAT_BY_SUFFIX", "SourceFile", "SourceReader", "decode_bytes", "detect_format", "list_source_files"]
