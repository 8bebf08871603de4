"""JSON that is too deeply nested is bad input (400), not a crash: the API's parser and a depth check for input."""

from __future__ import annotations

from typing import Any

from rest_framework import parsers
from rest_framework.exceptions import ParseError

from orchestrator_site.conf import orchestrator_setting


def max_json_depth() -> int:
    return int(orchestrator_setting("JSON_MAX_DEPTH"))


def too_deep_message(what: str, limit: int) -> str:
    return f"{what} is nested too deeply: at most {limit} levels of arrays and objects are accepted"


def nesting_depth(value: Any, *, stop_above: int) -> int:
    """How many levels of lists and dicts `value` holds (a scalar: 0, `[]`: 1, `{"a": []}`: 2).

    Iterative, so it cannot overflow the stack itself, and it stops counting once past `stop_above`: the
    caller only needs to know the value is too deep, not by how much.
    """
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        depth += 1
        deepest = max(deepest, depth)
        if deepest > stop_above:
            return deepest
        stack.extend((child, depth) for child in children)
    return deepest


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser, refusing with 400 a body nested deeper than ORCHESTRATOR["JSON_MAX_DEPTH"].

    Python's decoder recurses once per level: about 40 kB of brackets exhaust the interpreter's stack
    (RecursionError, a 500 without this). Shallower but still absurd nesting would parse, then break code
    further on that walks it recursively (rendering, copying, PostgreSQL's jsonb); it is refused here too.
    """

    def parse(self, stream: Any, media_type: str | None = None, parser_context: dict[str, Any] | None = None) -> Any:
        limit = max_json_depth()
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError(too_deep_message("the request body", limit)) from None
        if nesting_depth(data, stop_above=limit) > limit:
            raise ParseError(too_deep_message("the request body", limit))
        return data
