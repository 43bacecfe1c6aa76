"""JSON for the shim without the `json` package (it pulls in `re` and `enum`: 5 ms or more of
start-up on every ssh): lines are decoded with the C scanner from `_json` that `json` itself
uses, and encoded by hand."""


class ProtocolError(Exception):
    """The daemon sent something that is not a JSON-RPC line."""


try:
    from _json import encode_basestring_ascii as _quote
    from _json import make_scanner as _make_scanner
except ImportError:  # not CPython: the slower-to-import json package has the same pieces
    from json.encoder import encode_basestring_ascii as _quote
    from json.scanner import make_scanner as _make_scanner


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


class _ScanContext:
    # The attributes json.decoder.JSONDecoder hands to the scanner.
    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = staticmethod(_reject_constant)


_scan = _make_scanner(_ScanContext())  # type: ignore[arg-type]


def dumps(obj: object) -> str:
    """Compact, ASCII-only JSON for None, bool, int, float, str, list, tuple and str-keyed dict."""
    if obj is None:
        return "null"
    if obj is True:
        return "true"
    if obj is False:
        return "false"
    if isinstance(obj, str):
        return _quote(obj)
    if isinstance(obj, int):
        return int.__repr__(obj)
    if isinstance(obj, float):
        if obj - obj != 0.0:  # NaN and the infinities
            raise ValueError(f"{obj!r} is not JSON")
        return float.__repr__(obj)
    if isinstance(obj, dict):
        items = []
        for key, value in obj.items():
            if not isinstance(key, str):
                raise TypeError(f"JSON object keys must be str, not {type(key).__name__}")
            items.append(_quote(key) + ":" + dumps(value))
        return "{" + ",".join(items) + "}"
    if isinstance(obj, list | tuple):
        return "[" + ",".join(dumps(item) for item in obj) + "]"
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def loads(text: str) -> object:
    """Parse one JSON document; ValueError if it is not exactly one."""
    text = text.strip(" \t\r\n")
    try:
        value, end = _scan(text, 0)
    except StopIteration as stop:
        raise ValueError(f"expected a JSON value at offset {stop.value}") from None
    except (SystemError, RecursionError) as exc:
        # 3.11's C scanner fails this way when json.decoder (which we avoid) is not loaded.
        raise ValueError(f"invalid JSON: {exc}") from None
    if end != len(text):
        raise ValueError(f"extra data after the JSON value at offset {end}")
    return value


def message(line: bytes) -> dict[str, object]:
    try:
        value = loads(line.decode("utf-8"))
    except ValueError as exc:  # UnicodeDecodeError included
        raise ProtocolError(f"islurmd sent an unreadable line ({exc}): {line[:80]!r}") from None
    if not isinstance(value, dict):
        raise ProtocolError(f"islurmd sent a line that is not a JSON object: {line[:80]!r}")
    return value
