"""The compiled discard XPaths select exactly what lxml selects, and extraction with them is unchanged."""

import random
import re

import pytest
import trafilatura
from lxml import etree, html
from trafilatura import core, external, htmlprocessing, main_extractor, xpaths

from bench.corpus_texts import web_pages
from data_pipeline.fast.discard_xpaths import (
    PRUNING_LISTS,
    CompiledDiscardXPath,
    UnsupportedXPath,
    compile_discard_xpath,
    compiled_discard_xpaths,
)

from ..conftest import SAMPLE

EXTRACT_OPTIONS = dict(favor_precision=True, include_comments=False, deduplicate=False, include_tables=True)
TRAFILATURA_MODULES = (core, external, htmlprocessing, main_extractor)


def pruning_expressions() -> list[tuple[str, etree.XPath]]:
    return [(f"{name}[{i}]", x) for name in PRUNING_LISTS for i, x in enumerate(getattr(xpaths, name, []))]


def test_the_expressions_that_dominate_extraction_are_compiled():
    compiled = {name for name, x in pruning_expressions() if isinstance(compile_discard_xpath(x), CompiledDiscardXPath)}
    assert {"OVERALL_DISCARD_XPATH[0]", "OVERALL_DISCARD_XPATH[1]", "PAYWALL_DISCARD_XPATH[0]"} <= compiled


@pytest.mark.parametrize("path", [".//header", ".//cite|.//quote", "(.//article)[1]", './/*[contains(@class, "")]',
                                  './/*[contains(translate(@class, "AB", "a"), "x")]', './/*[not(@class)]',
                                  './/*[contains(@class, "a") and contains(@id, "b")]', './/div[@class="x"]'])
def test_other_shapes_are_left_to_lxml(path):
    expression = etree.XPath(path)
    with pytest.raises(UnsupportedXPath):
        CompiledDiscardXPath(expression)
    assert compile_discard_xpath(expression) is expression


def random_tree(rng: random.Random, words: list[str], tags: list[str], attributes: list[str]) -> etree._Element:
    """A page of nested elements whose attribute values mix the expression's own literals, in varied case,
    with affixes and spaces, so that every test of the predicate is exercised both ways."""

    def value() -> str:
        parts = []
        for _ in range(rng.randint(1, 3)):
            word = rng.choice(words)
            if rng.random() < 0.3:
                word = "".join(c.upper() if rng.random() < 0.3 else c for c in word)
            if rng.random() < 0.3:
                word = word[: rng.randint(0, len(word))]
            parts.append(rng.choice(["", "x-", " ", "_"]) + word + rng.choice(["", "-y", " ", "s"]))
        return rng.choice([" ", "", "-"]).join(parts)

    root = html.fromstring("<html><body></body></html>")
    parents = [root.find("body")]
    for _ in range(150):
        element = etree.SubElement(rng.choice(parents), rng.choice(tags))
        for attribute in rng.sample(attributes, rng.randint(0, 3)):
            element.set(attribute, value() if rng.random() < 0.9 else rng.choice(words))
        parents.append(element)
    root.set("class", value())  # the context node's own attributes must not count
    return root


@pytest.mark.parametrize("name,expression", [e for e in pruning_expressions()
                                             if isinstance(compile_discard_xpath(e[1]), CompiledDiscardXPath)])
def test_compiled_selects_what_lxml_selects_on_generated_pages(name, expression):
    compiled = compile_discard_xpath(expression)
    words = sorted(set(re.findall(r"""["']([^"']+)["']""", expression.path)))
    tags = sorted(set(re.findall(r"self::(\w+)", expression.path))) + ["a", "main", "td"]
    attributes = sorted(set(re.findall(r"@([\w-]+)", expression.path))) + ["title", "href"]
    rng = random.Random(name)
    selected = 0
    for _ in range(60):
        tree = random_tree(rng, words, tags, attributes)
        expected = expression(tree)
        assert compiled(tree) == expected, name
        selected += len(expected)
    assert selected > 0, f"{name}: the generated pages never exercised a match"


def test_attribute_values_that_an_xml_text_node_cannot_hold_fall_back_to_lxml():
    tree = html.fromstring('<html><body><div class="nav&#12;bar">x</div><p id="footer">y</p></body></html>')
    for expression in xpaths.OVERALL_DISCARD_XPATH:
        assert compile_discard_xpath(expression)(tree) == expression(tree)
    assert len(compile_discard_xpath(xpaths.OVERALL_DISCARD_XPATH[0])(tree)) == 2


def test_extraction_is_identical_and_every_pruning_selection_matches_on_the_sample_pages(monkeypatch):
    pages = list(web_pages(SAMPLE / "web"))[::2]
    assert len(pages) > 20
    stock = [trafilatura.extract(page, **EXTRACT_OPTIONS) for page in pages]

    prune = htmlprocessing.prune_unwanted_nodes
    compared = []

    def checked_prune(tree, nodelist, with_backup=False):
        for expression in nodelist:
            if isinstance(expression, CompiledDiscardXPath):
                assert expression(tree) == expression._lxml(tree), expression.path
                compared.append(expression.path)
        return prune(tree, nodelist, with_backup)

    for module in TRAFILATURA_MODULES:
        monkeypatch.setattr(module, "prune_unwanted_nodes", checked_prune, raising=False)
    with compiled_discard_xpaths():
        fast = [trafilatura.extract(page, **EXTRACT_OPTIONS) for page in pages]
    assert fast == stock
    assert sum(bool(text) for text in stock) > len(pages) // 2
    assert len(compared) > 4 * len(pages)


def test_the_swap_lasts_only_for_the_block():
    original = main_extractor.OVERALL_DISCARD_XPATH
    with compiled_discard_xpaths():
        assert isinstance(main_extractor.OVERALL_DISCARD_XPATH[0], CompiledDiscardXPath)
        assert isinstance(external.OVERALL_DISCARD_XPATH[0], CompiledDiscardXPath)
    assert main_extractor.OVERALL_DISCARD_XPATH is original is xpaths.OVERALL_DISCARD_XPATH
