"""trafilatura's discard XPaths, evaluated in a way that selects the same nodes several times faster.

Before it extracts a page's main text, trafilatura prunes the boilerplate: it removes every element that
one of its "discard" XPath expressions selects (`trafilatura.xpaths`). Most of those expressions are a tag
test followed by a long disjunction of attribute tests, such as

    .//*[(self::div or self::p or ...)][contains(translate(@id, "F", "f"), "footer") or starts-with(@class, "nav")
                                       or @aria-hidden="true" or @data-lp-replacement-content or ...]

libxml2 evaluates the hundred or so `contains()` calls of such a predicate one by one on every element,
which made `OVERALL_DISCARD_XPATH` alone about half of trafilatura's run time on the benchmark corpus.
`compile_discard_xpath` turns an expression of that shape into an equivalent selector that decides each
distinct attribute value once, with one regex per attribute, and remembers the verdict (pages of one site
repeat the same few class names thousands of times); lxml then only compares attribute values with the
passing ones. Expressions of any other shape are left to lxml.

`compiled_discard_xpaths()` swaps the compiled lists into trafilatura's modules for the duration of a
`with` block. tests/fast/test_discard_xpaths.py checks that every compiled expression selects exactly the nodes
lxml selects, on the sample's pages and on generated attribute values.
Verified against trafilatura 1.11 (the ranges `data_pipeline.fast.versions` checks at import).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache

from lxml import etree

Selector = Callable[[etree._Element], list]

# trafilatura's module-level XPath lists (defined in `trafilatura.xpaths`, imported by name into the modules of
# `_trafilatura_modules`) that it passes to `prune_unwanted_nodes`, which removes every node they select
PRUNING_LISTS = (
    "OVERALL_DISCARD_XPATH",
    "PAYWALL_DISCARD_XPATH",
    "TEASER_DISCARD_XPATH",
    "PRECISION_DISCARD_XPATH",
    "DISCARD_IMAGE_ELEMENTS",
    "COMMENTS_DISCARD_XPATH",
    "REMOVE_COMMENTS_XPATH",
    "AUTHOR_DISCARD_XPATHS",
)

_LITERAL = r"""(?:"[^"]*"|'[^']*')"""
_VALUE = rf"(?:@(?P<attr>[\w-]+)|translate\(\s*@(?P<tattr>[\w-]+)\s*,\s*(?P<src>{_LITERAL})\s*,\s*(?P<dst>{_LITERAL})\s*\))"
# one attribute test; the alternatives are tried in order, so the function forms come before a bare `@attr`
_TEST = re.compile(
    rf"""\s*(?:
        (?P<fn>contains|starts-with)\(\s*{_VALUE}\s*,\s*(?P<needle>{_LITERAL})\s*\)
      | @(?P<eq_attr>[\w-]+)\s*=\s*(?P<eq_value>{_LITERAL})
      | @(?P<has_attr>[\w-]+)
    )\s*(?:or\b|$)""",
    re.X,
)
_SHAPE = re.compile(r"\s*\.//\*(?:\[\s*\((?P<tags>[^()\[\]]*)\)\s*\])?\[(?P<tests>[^\[\]]*)\]\s*", re.S)
_TAG = re.compile(r"\s*self::([\w-]+)\s*(?:or\b|$)")


class UnsupportedXPath(ValueError):
    """The expression is not a tag test followed by or-ed attribute tests."""


def _unquote(literal: str) -> str:
    return literal[1:-1]


@dataclass(frozen=True)
class _AttributeTest:
    """All the tests of the predicate that read one attribute through the same `translate()`."""

    attribute: str
    table: dict | None  # str.translate table, or None to test the raw value
    search: Callable  # compiled regex search: a hit means the predicate is true

    def __call__(self, value: str) -> bool:
        return self.search(value.translate(self.table) if self.table is not None else value) is not None


class CompiledDiscardXPath:
    """Callable like an `lxml.etree.XPath` of the supported shape: `selector(tree)` is the list of elements,
    in document order, that the expression selects with `tree` as the context node.

    The predicate is an `or` of tests that each read one attribute, so an element is selected when it has a
    listed tag and the value of one of its attributes passes that attribute's tests. A call fetches the
    distinct values of the tested attributes (plain strings: no Python object per element), decides each new
    value once per attribute with one regex, and then asks lxml only for the attributes holding a passing
    value, by equality; their elements are the result.
    """

    # decided values remembered per attribute; a cache is dropped when it grows past this
    MAX_REMEMBERED = 100_000

    def __init__(self, expression: etree.XPath):
        self.path = expression.path
        self._lxml = expression  # for the rare page whose attribute values lxml cannot hold in a new element
        tags, tests, existence = _parse(self.path)
        self._tags = frozenset(tags)
        self._tests: dict[str, list[_AttributeTest]] = {}
        for test in tests:
            self._tests.setdefault(test.attribute, []).append(test)
        # attributes whose mere presence selects the element: no values to decide
        self._existence = tuple(dict.fromkeys(existence))
        # `.//*/@a`: attributes of the descendants, not of the context node itself (as in `.//*[...]`)
        self._values = etree.XPath("|".join(f".//*/@{a}" for a in self._tests), smart_strings=False)
        self._decided: dict[str, dict[str, bool]] = {a: {} for a in self._tests if a not in self._existence}
        # `$vN` is a node-set whose string values are the passing values of the N-th decided attribute:
        # one comparison against a set instead of one `or`-ed comparison per value
        selections = [f".//*/@{a}[.=$v{i}]" for i, a in enumerate(self._decided)]
        self._select = etree.XPath("|".join(selections + [f".//*/@{a}" for a in self._existence]))

    def _passes(self, attribute: str, value: str) -> bool:
        return any(test(value) for test in self._tests[attribute])

    def _passing_values(self, tree) -> dict[str, list[str]]:
        values = set(self._values(tree))
        passing = {}
        for attribute, decided in self._decided.items():
            if len(decided) > self.MAX_REMEMBERED:
                decided.clear()
            hits = []
            for value in values:
                verdict = decided.get(value)
                if verdict is None:
                    verdict = decided[value] = self._passes(attribute, value)
                if verdict:
                    hits.append(value)
            if hits:
                passing[attribute] = hits
        return passing

    def __call__(self, tree) -> list:
        passing = self._passing_values(tree)
        if not passing and not self._existence:
            return []
        try:
            variables = {f"v{i}": _string_nodes(passing.get(a, ())) for i, a in enumerate(self._decided)}
        except ValueError:  # a control character, legal in an HTML attribute but not in an XML text node
            return self._lxml(tree)
        selected = []
        for attribute in self._select(tree, **variables):  # in document order: an element's attributes are adjacent
            element = attribute.getparent()
            if (not self._tags or element.tag in self._tags) and not (selected and selected[-1] is element):
                selected.append(element)
        return selected

    def __repr__(self) -> str:
        return f"CompiledDiscardXPath({' '.join(self.path.split())[:80]!r}...)"


def _string_nodes(values: list[str]) -> list[etree._Element]:
    """Elements whose string values are `values`: what an XPath variable needs to stand for a set of strings."""
    holder = etree.Element("values")
    nodes = []
    for value in values:
        node = etree.SubElement(holder, "v")
        node.text = value
        nodes.append(node)
    return nodes


def _parse(path: str) -> tuple[list[str], list[_AttributeTest], list[str]]:
    shape = _SHAPE.fullmatch(path)
    if shape is None:
        raise UnsupportedXPath(f"not a tag test followed by attribute tests: {path.strip()[:60]!r}")
    tags = [match.group(1) for match in _split(_TAG, shape["tags"], path)] if shape["tags"] is not None else []
    patterns: dict[tuple, list[str]] = {}  # (attribute, translate source, translate target) -> regex alternatives
    existence: list[str] = []
    for test in _split(_TEST, shape["tests"], path):
        if test["has_attr"]:
            existence.append(test["has_attr"])
            continue
        if test["eq_attr"]:
            key, pattern = (test["eq_attr"], "", ""), rf"\A{re.escape(_unquote(test['eq_value']))}\Z"
        else:
            needle = _unquote(test["needle"])
            if not needle:  # contains(x, "") is true even without the attribute: not an attribute test
                raise UnsupportedXPath(f"empty string in {path.strip()[:60]!r}")
            if test["tattr"]:
                src, dst = _unquote(test["src"]), _unquote(test["dst"])
                if len(src) != len(dst) or len(set(src)) != len(src):
                    raise UnsupportedXPath(f"translate() that removes or remaps characters in {path.strip()[:60]!r}")
                key = (test["tattr"], src, dst)
            else:
                key = (test["attr"], "", "")
            pattern = (r"\A" if test["fn"] == "starts-with" else "") + re.escape(needle)
        patterns.setdefault(key, []).append(pattern)
    tests = [
        _AttributeTest(attribute, str.maketrans(src, dst) if src else None, re.compile("|".join(alternatives)).search)
        for (attribute, src, dst), alternatives in patterns.items()
    ]
    return tags, tests, existence


def _split(item: re.Pattern, text: str, path: str) -> list[re.Match]:
    """`text` as consecutive matches of `item` (each ends with `or` or the end of text), all of it consumed."""
    matches, position = [], 0
    while position < len(text) and text[position:].strip():
        match = item.match(text, position)
        if match is None:
            raise UnsupportedXPath(f"unsupported test {text[position:].strip()[:40]!r} in {path.strip()[:60]!r}")
        matches.append(match)
        position = match.end()
    if not matches:
        raise UnsupportedXPath(f"empty predicate in {path.strip()[:60]!r}")
    return matches


def compile_discard_xpath(expression: etree.XPath) -> Selector:
    """A faster selector equivalent to `expression`, or `expression` itself when its shape is not supported."""
    try:
        return CompiledDiscardXPath(expression)
    except UnsupportedXPath:
        return expression


@cache
def _compiled_lists() -> dict[int, list[Selector]]:
    """id of each pruning list of `trafilatura.xpaths` -> the same list, compiled."""
    from trafilatura import xpaths

    lists = [getattr(xpaths, name) for name in PRUNING_LISTS if hasattr(xpaths, name)]
    return {id(xpath_list): [compile_discard_xpath(x) for x in xpath_list] for xpath_list in lists}


def _trafilatura_modules() -> list:
    from trafilatura import core, external, htmlprocessing, main_extractor, metadata

    return [core, external, htmlprocessing, main_extractor, metadata]


@contextmanager
def compiled_discard_xpaths() -> Iterator[None]:
    """Within the block, trafilatura prunes with the compiled selectors. Only the pruning lists are swapped:
    the expressions that locate content are used for their first match, which lxml finds quickly."""
    compiled = _compiled_lists()
    swapped = []
    for module in _trafilatura_modules():
        for name in PRUNING_LISTS:
            original = getattr(module, name, None)
            if original is not None and id(original) in compiled:
                swapped.append((module, name, original))
                setattr(module, name, compiled[id(original)])
    try:
        yield
    finally:
        for module, name, original in swapped:
            setattr(module, name, original)
