"""Building blocks of plan files: the YAML they are written in, strict pydantic models and the
field types they share.

Every plan field is validated by one of these types, so a name that reaches SQL is a plain SQL
identifier and a text field is never blank. The YAML is read by ``read_yaml``, which refuses what
a plain mapping of fields never needs and a hostile file would use: a key written twice (YAML
would keep the last silently), nesting deeper than a plan goes, aliases that expand without
bound, and any tag beyond YAML's own plain types.
"""

import datetime as dt
import re
from typing import Annotated, Any

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")  # use with fullmatch


def identifier(value: str) -> str:
    """A plain SQL name (letters, digits, underscore); anything else is refused, not escaped."""
    if not IDENTIFIER.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a plain SQL name; use letters, digits and underscores only"
        )
    return value


def table_name(value: str) -> str:
    """``schema.table``, both parts plain SQL names."""
    parts = value.split(".")
    if len(parts) != 2 or not all(IDENTIFIER.fullmatch(p) for p in parts):
        raise ValueError(f"{value!r} is not a schema-qualified table name such as raw.events")
    return value


def distinct(values: list[str]) -> list[str]:
    """Names listed once each, ignoring case as DuckDB does; a repeat would count twice."""
    seen: set[str] = set()
    repeated = []
    for value in values:
        if value.casefold() in seen and value.casefold() not in repeated:
            repeated.append(value.casefold())
        seen.add(value.casefold())
    if repeated:
        raise ValueError(f"repeats {repeated}; list each once")
    return values


Identifier = Annotated[str, AfterValidator(identifier)]
TableName = Annotated[str, AfterValidator(table_name)]
Text = Annotated[str, Field(min_length=1)]
Scalar = str | int | float | bool | dt.date | None


class Strict(BaseModel):
    """A plan section: unknown fields are refused, values are frozen, text is never blank."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_blank_text(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            raise ValueError("is empty; write what it means in words")
        return value


# Far deeper than any plan (its deepest field is about six levels down), far shallower than
# Python's recursion limit, which PyYAML's recursive composer would otherwise hit.
MAX_DEPTH = 64
# Values in the file once its aliases are expanded: a plan has hundreds; a "billion laughs"
# file, a few lines long, has a billion.
MAX_VALUES = 100_000


class YamlError(ValueError):
    """A text that is not one plain YAML document; ``duplicates`` lists (key path, problem) for
    keys written twice in one mapping."""

    def __init__(self, message: str, duplicates: list[tuple[str, str]] | None = None) -> None:
        super().__init__(message)
        self.duplicates = duplicates or []


class _Loader(yaml.SafeLoader):
    """YAML's safe types only; refuses nesting deeper than ``MAX_DEPTH``; leaves an impossible
    date (2024-13-45) as text, so the field that holds it is named."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.depth = 0

    def compose_node(self, parent: Any, index: Any) -> yaml.Node:
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                raise yaml.composer.ComposerError(
                    None,
                    None,
                    f"values nested more than {MAX_DEPTH} levels deep",
                    self.peek_event().start_mark,
                )
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def _lenient_timestamp(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    try:
        return yaml.SafeLoader.construct_yaml_timestamp(loader, node)
    except ValueError:
        return loader.construct_scalar(node)


_Loader.add_constructor("tag:yaml.org,2002:timestamp", _lenient_timestamp)

_MERGE = "tag:yaml.org,2002:merge"


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _expanded_size(root: yaml.Node) -> int:
    """How many values ``root`` holds once every alias is expanded (capped past
    ``MAX_VALUES``), counted once per node, so a bomb costs no more than its text."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, closing = stack.pop()
        if closing:
            open_nodes.discard(id(node))
            size = 1 + sum(sizes[id(child)] for child in _children(node))
            sizes[id(node)] = min(size, MAX_VALUES + 1)
            continue
        if id(node) in sizes:
            continue
        if id(node) in open_nodes:
            raise YamlError(f"an alias refers to a value that contains it (line {_line(node)})")
        open_nodes.add(id(node))
        stack.append((node, True))
        stack.extend((child, False) for child in _children(node) if id(child) not in sizes)
    return sizes[id(root)]


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


def _duplicate_keys(root: yaml.Node) -> list[tuple[str, str]]:
    """(key path, problem) for every key written again in the same mapping, in file order.
    Keys a merge (``<<: *defaults``) brings in are meant to be overridden, so are not counted."""
    found: list[tuple[int, str, str]] = []
    visited: set[int] = set()
    stack: list[tuple[yaml.Node, str]] = [(root, "")]
    while stack:
        node, path = stack.pop()
        if id(node) in visited:
            continue
        visited.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            stack.extend((item, f"{path}.{i}".lstrip(".")) for i, item in enumerate(node.value))
        if not isinstance(node, yaml.MappingNode):
            continue
        first: dict[tuple[str, str], int] = {}
        for key, value in node.value:
            if key.tag == _MERGE:
                stack.append((value, path))
                continue
            name = key.value if isinstance(key, yaml.ScalarNode) else f"(key at line {_line(key)})"
            child = f"{path}.{name}".lstrip(".")
            if isinstance(key, yaml.ScalarNode):
                if (key.tag, key.value) in first:
                    line = first[(key.tag, key.value)]
                    found.append(
                        (
                            _line(key),
                            child,
                            f"is written twice: line {line} and line {_line(key)} (YAML would "
                            "silently keep the last)",
                        )
                    )
                else:
                    first[(key.tag, key.value)] = _line(key)
            stack.append((value, child))
    return [(path, problem) for _, path, problem in sorted(found)]


def read_yaml(text: str) -> Any:
    """The one YAML document in ``text`` (None when it has none), as plain Python values.

    Raises ``YamlError`` for anything else: a syntax error, a tag outside YAML's safe types
    (``!!python/object``), several documents, nesting deeper than ``MAX_DEPTH``, aliases that
    expand past ``MAX_VALUES`` values or into themselves, or a key written twice in one mapping.
    """
    try:
        loader = _Loader(text)  # checks the characters already
        try:
            root = loader.get_single_node()
            if root is None:
                return None
            if _expanded_size(root) > MAX_VALUES:
                raise YamlError(
                    f"its aliases (*name) expand it to more than {MAX_VALUES} values; write the "
                    "values out instead"
                )
            duplicates = _duplicate_keys(root)
            if duplicates:
                raise YamlError("a key is written twice", duplicates)
            return loader.construct_document(root)
        finally:
            loader.dispose()
    except yaml.YAMLError as error:
        raise YamlError(str(error)) from None
