"""Untrusted YAML and JSON text to plain Python values, within limits (sans-IO).

A manifest is small, but the text that claims to be one is not to be trusted: a
376-byte YAML alias bomb expands to millions of nodes, a 20,000-deep `[` makes
PyYAML's scanner quadratic and its composer recurse past the interpreter's limit,
and a 5,000-digit integer makes `int()` (and anything that prints it) raise. So
both loaders here refuse, before the cost is paid:

- aliases and anchors (YAML): a manifest never needs them, and they are the only
  way a document grows larger than its text;
- nesting deeper than `depth_max` (a YAML flow `[`/`{` is refused by the scanner,
  before it reads on; JSON is measured before it is parsed);
- more than `nodes_max` values, scalars longer than `scalar_max_chars`, integers
  longer than `int_max_chars` characters (checked on the text, before `int()`);
- NaN and Infinity (JSON), which no field accepts and JSON itself does not allow.

Errors are `DocumentError` with a short message that names the line and column
(YAML) and never echoes more than a few characters of the input.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import yaml
from yaml.events import AliasEvent, CollectionStartEvent, Event, ScalarEvent
from yaml.nodes import Node, ScalarNode


@dataclass(frozen=True, slots=True)
class DocumentLimits:
    """What one untrusted document may hold."""

    text_max_bytes: int = 64 * 1024
    depth_max: int = 16  # nested collections; a manifest needs 3
    nodes_max: int = 4096  # values (collections and scalars); a manifest needs ~600 at most
    scalar_max_chars: int = 1024
    int_max_chars: int = 32  # sign, digits, '_' and a base prefix; a manifest's largest is 2**50


DEFAULT_LIMITS = DocumentLimits()


class DocumentError(ValueError):
    """Text that does not parse, or parses beyond the limits. `path` names the value at fault when
    known (`replicas.regions[3]`, "" otherwise); `detail` is a short problem that never echoes
    more than a few characters of the input."""

    def __init__(self, detail: str, path: str = "") -> None:
        super().__init__(f"{path}: {detail}" if path else detail)
        self.detail = detail
        self.path = path


def load_yaml(text: str | bytes, limits: DocumentLimits = DEFAULT_LIMITS) -> Any:
    """YAML (or JSON, a subset) text to a Python value; DocumentError if it does not parse or is too big."""
    _check_size(text, limits)
    loader = _LimitedLoader(text, limits)
    try:
        return loader.get_single_data()
    except _OverLimit as exc:
        raise DocumentError(exc.detail, exc.path) from None
    except yaml.YAMLError as exc:
        raise DocumentError(_yaml_problem(exc)) from None
    finally:
        loader.dispose()


def load_json(text: str | bytes, limits: DocumentLimits = DEFAULT_LIMITS) -> Any:
    """JSON text to a Python value; DocumentError if it does not parse or is beyond the limits."""
    _check_size(text, limits)
    try:
        decoded = text.decode("utf-8") if isinstance(text, bytes) else text
    except UnicodeDecodeError:
        raise DocumentError("not UTF-8 text") from None
    # Each level opens with a bracket, so a text with few brackets (an inference request's
    # header; a flat list of numbers) needs no scan: counting them is ~100x cheaper.
    brackets = decoded.count("[") + decoded.count("{")
    depth = json_depth(decoded) if brackets > limits.depth_max else 0
    if depth > limits.depth_max:
        raise DocumentError(f"nested {depth} deep, over the limit of {limits.depth_max}")
    try:
        value = json.loads(decoded, parse_int=lambda s: _bounded_int(s, limits), parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise DocumentError(f"not valid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
    _check_values(value, limits)
    return value


# Strings first (so a bracket inside one is not counted), then the brackets themselves.
_JSON_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)


def json_depth(text: str) -> int:
    """The deepest nesting of `[`/`{` in JSON text, strings skipped; linear, without parsing."""
    depth = deepest = 0
    for match in _JSON_TOKENS.finditer(text):
        token = match.group()
        if token in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif token in "]}":
            depth -= 1
    return deepest


def _check_size(text: str | bytes, limits: DocumentLimits) -> None:
    # A str of n characters is at most 4n bytes: the common case needs no encoding.
    if isinstance(text, str) and len(text) * 4 <= limits.text_max_bytes:
        return
    size = len(text.encode("utf-8", errors="surrogatepass") if isinstance(text, str) else text)
    if size > limits.text_max_bytes:
        raise DocumentError(f"{size} bytes is over the limit of {limits.text_max_bytes} bytes")


@dataclass(frozen=True, slots=True)
class _LongInt:
    """Stands for an integer too long to convert, until the walk names where it is."""

    chars: int


def _bounded_int(text: str, limits: DocumentLimits) -> int | _LongInt:
    return _LongInt(len(text)) if len(text) > limits.int_max_chars else int(text)


def _no_constant(name: str) -> Any:
    raise DocumentError(f"{name} is not a number JSON allows")


# Where a value stands, built only when an error names it: (parent, key or list index).
_Where = tuple["_Where", str | int] | None
_NOTHING_TO_CHECK = frozenset((float, int, bool, type(None)))  # what json.loads makes of a number


def _check_values(value: Any, limits: DocumentLimits) -> None:
    """Count values, measure strings and find long integers in a parsed JSON value (iterative)."""
    nodes = 0
    pending: list[tuple[Any, _Where]] = [(value, None)]
    while pending:
        item, where = pending.pop()
        nodes += 1
        if nodes > limits.nodes_max:
            raise DocumentError(f"more than {limits.nodes_max} values")
        if type(item) in _NOTHING_TO_CHECK:
            continue  # most values of an inference request: numbers
        if isinstance(item, dict):
            for key, child in item.items():
                pending.append((key, (where, "(a key)")))
                pending.append((child, (where, key)))
        elif isinstance(item, list):
            if _NOTHING_TO_CHECK.issuperset(map(type, item)):
                # Only numbers (one C pass): they would be popped next, one by one, with nothing
                # to check but the count, so count them now.
                nodes += len(item)
                if nodes > limits.nodes_max:
                    raise DocumentError(f"more than {limits.nodes_max} values")
                continue
            pending.extend((child, (where, i)) for i, child in enumerate(item))
        elif isinstance(item, str) and len(item) > limits.scalar_max_chars:
            raise DocumentError(
                f"a string of {len(item)} characters is over the limit of {limits.scalar_max_chars}",
                _path(where),
            )
        elif isinstance(item, _LongInt):
            raise DocumentError(
                f"an integer of {item.chars} characters is over the limit of {limits.int_max_chars}",
                _path(where),
            )


def _path(where: _Where) -> str:
    """`where` as text: `a.b[3].c`."""
    segments: list[str | int] = []
    while where is not None:
        where, segment = where
        segments.append(segment)
    path = ""
    for segment in reversed(segments):
        path = f"{path}[{segment}]" if isinstance(segment, int) else _join(path, segment)
    return path


def _join(path: str, key: str) -> str:
    segment = key if len(key) <= _SEGMENT_MAX_CHARS else key[: _SEGMENT_MAX_CHARS - 3] + "..."
    return f"{path}.{segment}" if path else segment


class _OverLimit(yaml.YAMLError):
    """A document beyond the limits (not a syntax error), with where it stands."""

    def __init__(self, problem: str, mark: Any, path: str = "") -> None:
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        super().__init__(problem + where)
        self.detail = problem + where
        self.path = path


def _yaml_problem(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    problem = _short(str(getattr(exc, "problem", None) or exc))
    return f"not valid YAML or JSON{where}: {problem}"


def _short(text: str, max_chars: int = 120) -> str:
    return text if len(text) <= max_chars else text[: max_chars - 3] + "..."


_INT_TAG = "tag:yaml.org,2002:int"
_SEGMENT_MAX_CHARS = 64


class _LimitedLoader(yaml.SafeLoader):
    """PyYAML's safe loader with the limits: the scanner refuses deep flow nesting; the composer
    refuses aliases, anchors, depth, node count, long scalars and long integers (before the
    constructor calls int()), naming the path of the value at fault."""

    def __init__(self, stream: str | bytes, limits: DocumentLimits) -> None:
        super().__init__(stream)
        self._limits = limits
        self._path: list[str] = []  # the segments of the collection being composed
        self._nodes = 0

    def fetch_flow_collection_start(self, token_class: Any) -> None:
        # Each open flow level keeps a possible simple key the scanner re-checks on every
        # token: quadratic in the depth, before a single node is composed. Stop at the limit.
        if self.flow_level >= self._limits.depth_max:
            raise _OverLimit(f"nested deeper than {self._limits.depth_max} levels", self.get_mark())
        super().fetch_flow_collection_start(token_class)

    def _segment(self, index: Any) -> str:
        """The path segment of the value composed at `index`: a key node, a list position, or
        None (a mapping key itself, or the root)."""
        if isinstance(index, ScalarNode):
            key = str(index.value)
            return key if len(key) <= _SEGMENT_MAX_CHARS else key[: _SEGMENT_MAX_CHARS - 3] + "..."
        if isinstance(index, int):
            return f"[{index}]"
        return "(a key)" if self._path else ""

    def _path_to(self, index: Any) -> str:
        """The path of the value composed at `index`, e.g. `replicas.regions[3]`."""
        path = ""
        for segment in (*self._path, self._segment(index)):
            if segment:
                path += segment if segment.startswith("[") or not path else "." + segment
        return path

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        event: Event = self.peek_event()  # type: ignore[no-untyped-call]
        mark = event.start_mark
        if isinstance(event, AliasEvent):
            raise _OverLimit("aliases (*name) are not accepted", mark, self._path_to(index))
        if getattr(event, "anchor", None) is not None:
            raise _OverLimit("anchors (&name) are not accepted", mark, self._path_to(index))
        self._nodes += 1
        if self._nodes > self._limits.nodes_max:
            raise _OverLimit(f"more than {self._limits.nodes_max} values", mark)
        if isinstance(event, ScalarEvent) and len(event.value) > self._limits.scalar_max_chars:
            raise _OverLimit(
                f"a value of {len(event.value)} characters is over the limit of "
                f"{self._limits.scalar_max_chars}",
                mark,
                self._path_to(index),
            )
        if not isinstance(event, CollectionStartEvent):
            node = super().compose_node(parent, index)
            if (
                isinstance(node, ScalarNode)
                and node.tag == _INT_TAG
                and len(node.value) > self._limits.int_max_chars
            ):
                # The constructor would call int() on it (base 10, 2, 8, 16 or 60): refuse it first.
                raise _OverLimit(
                    f"an integer of {len(node.value)} characters is over the limit of "
                    f"{self._limits.int_max_chars}",
                    mark,
                    self._path_to(index),
                )
            return node
        if len(self._path) >= self._limits.depth_max:
            raise _OverLimit(f"nested deeper than {self._limits.depth_max} levels", mark)
        self._path.append(self._segment(index))
        try:
            return super().compose_node(parent, index)
        finally:
            self._path.pop()


def canonical_json(doc: Any) -> bytes:
    """A record payload's canonical bytes: compact UTF-8 JSON with sorted keys."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def load_canonical_object(
    payload: bytes, limits: DocumentLimits, name: str, schema_problem: Callable[[dict[str, Any]], str | None]
) -> dict[str, Any] | str:
    """A record payload as its JSON object, or what is wrong with it (prefixed by `name`): beyond
    `limits`, not an object, failing `schema_problem`, or not in its canonical form."""
    try:
        doc = load_json(payload, limits)
    except DocumentError as exc:
        where = f"{name}.{exc.path}" if exc.path else name
        return f"{where}: {exc.detail}"
    if not isinstance(doc, dict):
        return f"{name}: not a JSON object"
    problem = schema_problem(doc)
    if problem is not None:
        return problem
    if canonical_json(doc) != payload:
        return f"{name}: payload is not in canonical form (sorted keys, compact)"
    return doc
