"""Safe YAML for the user's files: a key given twice is an error, and a 20,000-entry file loads in well under
a second.

PyYAML's safe loader keeps the last of two equal keys silently (a duplicated ``usable_bytes`` would go
unnoticed), and builds a node graph and resolves every scalar in Python, about 10 us a node. Here the data is
built straight from libyaml's events; only plain scalars that could be something other than a string (their
first character starts a bool, number, null or timestamp) go through PyYAML's resolver and constructors, so
the values are exactly what ``yaml.safe_load`` gives. Anything unusual (an explicit tag, a ``<<`` merge key,
a mapping or list used as a key) is loaded by the strict slow path instead.
"""

from __future__ import annotations

from functools import cache
from typing import Any

_STR = "tag:yaml.org,2002:str"


class _Unusual(Exception):
    """The fast path does not handle this document; the strict full loader does."""


def load_yaml(text: str) -> Any:
    """The document's data, as ``yaml.safe_load`` would give it, refusing duplicate keys (yaml.YAMLError)."""
    try:
        return _fast_load(text)
    except _Unusual:
        import yaml

        return yaml.load(text, Loader=_strict_loader())


def _duplicate(key: Any, mark: Any) -> Exception:
    import yaml

    return yaml.constructor.ConstructorError("while constructing a mapping", None, f"duplicate key {key!r}", mark)


def _fast_load(text: str) -> Any:
    import yaml
    from yaml import events as ev

    base: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    loader = base(text)
    scalar = _scalar_builder(loader)
    anchors: dict[str, Any] = {}
    # The stack holds [container, pending key or _NO_KEY, seen keys, anchor]; a document is a one-item list.
    stack: list[list[Any]] = []
    documents: list[Any] = []
    try:
        while loader.check_event():
            event = loader.get_event()
            if isinstance(event, ev.ScalarEvent):
                value: Any = scalar(event)
                if event.anchor:
                    anchors[event.anchor] = value
            elif isinstance(event, ev.AliasEvent):
                if event.anchor not in anchors:
                    raise _Unusual  # let the full loader report it with its own message
                value = anchors[event.anchor]
            elif isinstance(event, ev.MappingStartEvent | ev.SequenceStartEvent):
                if event.tag not in (None, "tag:yaml.org,2002:map", "tag:yaml.org,2002:seq", "!"):
                    raise _Unusual
                container: Any = {} if isinstance(event, ev.MappingStartEvent) else []
                if event.anchor:
                    anchors[event.anchor] = container
                _add(stack, container, event)
                stack.append([container, _NO_KEY, set(), event.start_mark])
                continue
            elif isinstance(event, ev.MappingEndEvent | ev.SequenceEndEvent):
                stack.pop()
                continue
            elif isinstance(event, ev.DocumentStartEvent):
                stack.append([documents, _NO_KEY, set(), None])
                continue
            elif isinstance(event, ev.DocumentEndEvent):
                stack.pop()
                continue
            else:
                continue  # stream start / end
            _add(stack, value, event)
    finally:
        loader.dispose()
    if len(documents) > 1:
        raise yaml.composer.ComposerError(
            "expected a single document in the stream", None, "but found another document", None
        )
    return documents[0] if documents else None


_NO_KEY = object()


def _add(stack: list[list[Any]], value: Any, event: Any) -> None:
    """Put ``value`` into the innermost open container (as a key, a value or a list item)."""
    if not stack:
        return
    top = stack[-1]
    container = top[0]
    if isinstance(container, list):
        container.append(value)
        return
    if top[1] is _NO_KEY:
        if isinstance(value, dict | list) or value == "<<":
            raise _Unusual  # complex key or merge key
        if value in top[2]:
            raise _duplicate(value, event.start_mark)
        top[2].add(value)
        top[1] = value
        return
    container[top[1]] = value
    top[1] = _NO_KEY


def _scalar_builder(loader: Any) -> Any:
    """A function from a ScalarEvent to its value, resolved and constructed as PyYAML's safe loader does."""
    from yaml.nodes import ScalarNode

    first_chars = set(loader.yaml_implicit_resolvers)
    constructors = loader.yaml_constructors

    def scalar(event: Any) -> Any:
        plain = event.implicit[0]
        value = event.value
        if event.tag in (None, "!") and not plain:
            return value  # quoted: a string
        if event.tag not in (None, "!", _STR):
            tag = event.tag
        elif event.tag == _STR or (value and value[0] not in first_chars):
            return value
        else:
            tag = loader.resolve(ScalarNode, value, event.implicit)
        if tag == _STR:
            return value
        construct = constructors.get(tag)
        if construct is None:
            raise _Unusual
        return construct(loader, ScalarNode(tag, value, event.start_mark, event.end_mark, event.style))

    return scalar


@cache
def _strict_loader() -> type[Any]:
    """The safe loader that refuses a key given twice in one mapping (the slow path for unusual documents)."""
    import yaml

    base: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

    class StrictLoader(base):  # type: ignore[misc]
        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            seen: set[Any] = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # merged keys may be overridden: only the mapping's own keys must differ
                key = self.construct_object(key_node, deep=True)
                if isinstance(key, list | dict):
                    continue  # unhashable: the base constructor reports it
                if key in seen:
                    raise _duplicate(key, key_node.start_mark)
                seen.add(key)
            return super().construct_mapping(node, deep=deep)

    return StrictLoader
