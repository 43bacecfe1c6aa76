"""JSON for the session hook's start path, without importing `json`: json imports `re` and
`enum`, 7-10 ms of every job start (python -X importtime). The same C codec `json` uses
(`_json`, with json's defaults: ASCII output, ", " and ": ", NaN refused on reading); errors
are ValueError (JSONDecodeError, which json.decoder defines, on a syntax error)."""

from __future__ import annotations

import _json

_WHITESPACE = " \t\n\r"


class _Decoding:
    """What `_json.make_scanner` reads off json.decoder.JSONDecoder; nothing else is needed."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int

    @staticmethod
    def parse_constant(name: str) -> object:
        raise ValueError(f"JSON: {name} is not a number this reads")


def _unserializable(value: object) -> object:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


# typeshed types the context as make_scanner itself; any object with JSONDecoder's fields works
_scan = _json.make_scanner(_Decoding())  # type: ignore[arg-type]
_encoders = {
    sort: _json.make_encoder(
        None, _unserializable, _json.encode_basestring_ascii, None, ": ", ", ", sort, False, True
    )
    for sort in (False, True)
}


def loads(text: str) -> object:
    """The value `text` holds, as json.loads reads it."""
    body = text.strip(_WHITESPACE)
    try:
        value, end = _scan(body, 0)
    except StopIteration as stop:
        raise ValueError(f"JSON: expecting a value at character {stop.value}") from None
    if end != len(body):
        raise ValueError(f"JSON: extra data at character {end}")
    return value


def dumps(value: object, *, sort_keys: bool = False) -> str:
    """`value` as json.dumps writes it (with sort_keys)."""
    return "".join(_encoders[sort_keys](value, 0))
