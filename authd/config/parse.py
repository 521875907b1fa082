"""Build the frozen `Config` from YAML, reporting every problem at once.

The builder is generic: it walks the dataclasses of `authd.config.model`, driven by
their type hints and `meta()` field metadata, so a new field needs no parser code. It
reads the composed YAML node tree (not plain Python objects) so every problem carries
the line it came from. A field with a problem keeps its default and the walk goes on,
then the cross-field checks run on the result; problems under a path that already
failed are not reported twice. Anything wrong raises one `ConfigErrors`.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import os
import re
import stat
import types
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import cache
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from authd.config.durations import format_duration, parse_duration
from authd.config.errors import ConfigErrors, ConfigProblem, ConfigValueError
from authd.config.model import (
    PORTAL_ACTIONS,
    PORTAL_ACTIONS_OFF,
    SQLITE_MIN_POOL,
    SQLITE_POOL_PROBLEM,
    Config,
    PrimaryBackend,
    Secret,
)
from authd.core.username import name_attribute, realm_problem

__all__ = [
    "CONFIG_ENV",
    "DEFAULT_CONFIG_PATH",
    "Check",
    "load_config",
    "parse_config",
    "resolve_config_path",
]

DEFAULT_CONFIG_PATH = "/etc/authd/authd.yaml"
CONFIG_ENV = "AUTHD_CONFIG"

#: A secret or key file larger than this is surely the wrong file.
MAX_SECRET_FILE = 64 * 1024

_TAG = "tag:yaml.org,2002:"
_NULL, _BOOL, _INT, _FLOAT, _STR = (_TAG + t for t in ("null", "bool", "int", "float", "str"))
_MERGE = _TAG + "merge"
#: Plain scalars a text field takes as written (`issuer: 2024-01-01` is text there).
_TEXT_TAGS = frozenset({_STR, _INT, _FLOAT, _BOOL, _TAG + "timestamp"})
_MAX_MERGE_DEPTH = 8
_KIND = {
    _NULL: "nothing",
    _BOOL: "true/false",
    _INT: "an integer",
    _FLOAT: "a number",
    _STR: "text",
}


#: A check beyond the YAML (a part building its state from the config, as `serve` will):
#: yields (key path, what is wrong) for each problem; the loader adds the file and line.
Check = Callable[[Config], Iterable[tuple[str, str]]]


class _Bad:
    """Marks a value that could not be built; its problem is already recorded."""


_BAD = _Bad()


def resolve_config_path(cli_value: str | None, environ: Mapping[str, str] | None = None) -> str:
    """`-c FILE`, else `$AUTHD_CONFIG`, else /etc/authd/authd.yaml (CONTRACT)."""
    if cli_value:
        return cli_value
    env = (os.environ if environ is None else environ).get(CONFIG_ENV)
    return env or DEFAULT_CONFIG_PATH


def load_config(path: str, checks: Sequence[Check] = ()) -> Config:
    """Read and validate the config file at `path`; raise ConfigErrors listing everything.

    `checks` run on the parsed config too, and their problems join the list."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigErrors([ConfigProblem(path, 0, "(file)", f"cannot read: {reason}")]) from None
    return parse_config(data, source=path, checks=checks)


def parse_config(text: str | bytes, source: str, checks: Sequence[Check] = ()) -> Config:
    """Validate YAML `text` as if read from `source` (relative paths resolve next to it)."""
    builder = _Builder(source)
    root = builder.compose(text)
    config = Config(source=source)
    if isinstance(root, Node):
        line = root.start_mark.line + 1 if root.start_mark else 0
        built = builder.build(Config, root, "", line)
        if isinstance(built, Config):
            config = _resolve_store_url(dataclasses.replace(built, source=source), builder)
            _check(config, builder)
            for check in checks:
                for path, message in check(config):
                    builder.check_failed(path, message)
    if builder.problems:
        raise ConfigErrors(builder.problems)
    return config


# ---------------------------------------------------------------- type introspection
@cache
def _hints(cls: type) -> dict[str, Any]:
    return get_type_hints(cls)


def _fields(cls: type) -> dict[str, dataclasses.Field[Any]]:
    return {
        f.name: f
        for f in dataclasses.fields(cls)
        if f.init and not f.metadata.get("internal", False)
    }


def _describe(node: Node) -> str:
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    return _KIND.get(node.tag, f"a {node.tag!r} value")


def _suggest(word: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _show(text: str) -> str:
    """A short quoted rendering of a non-secret value for a message."""
    return repr(text if len(text) <= 40 else text[:37] + "...")


def _join(path: str, name: str) -> str:
    """`a.b`, or `a['odd key']` when the key is not a plain word (so it is never empty)."""
    if not re.fullmatch(r"[A-Za-z0-9_-]+", name):
        return f"{path}[{name!r}]"
    return f"{path}.{name}" if path else name


_PARENT = re.compile(r"(.*)(?:\.[^.\[\]]*|\[\d+\])$")


class _Builder:
    """One pass over one document: builds values and collects problems."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.base_dir = os.path.dirname(os.path.abspath(source))
        self.problems: list[ConfigProblem] = []
        self.lines: dict[str, int] = {}
        self.failed: set[str] = set()
        self._scalars = SafeConstructor()

    # ------------------------------------------------------------ reporting
    def problem(self, path: str, line: int, message: str) -> None:
        """Record a problem found while building; later checks under `path` stay quiet."""
        self.failed.add(path)
        self.problems.append(ConfigProblem(self.source, line, path, message))

    def check_failed(self, path: str, message: str) -> None:
        """Record a cross-field problem unless `path` (or a parent) already failed."""
        probe = path
        while probe:
            if probe in self.failed:
                return
            match = _PARENT.fullmatch(probe)
            probe = match.group(1) if match else ""
        self.problem(path, self.line_of(path), message)

    def has_failed(self, *paths: str) -> bool:
        """Whether any of `paths` already has a problem (to avoid a second, derived one)."""
        return any(p in self.failed for p in paths)

    def line_of(self, path: str) -> int:
        """The line of `path`, or of its nearest parent written in the file."""
        probe = path
        while probe:
            if probe in self.lines:
                return self.lines[probe]
            match = _PARENT.fullmatch(probe)
            probe = match.group(1) if match else ""
        return 0

    # ------------------------------------------------------------ YAML
    def compose(self, text: str | bytes) -> Node | _Bad:
        """The document's root node (an empty file is an empty mapping), or _BAD."""
        loader: yaml.SafeLoader | None = None
        try:
            loader = yaml.SafeLoader(text)  # the reader already decodes the first chunk
            node = loader.get_single_node()
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = mark.line + 1 if mark is not None else 0
            what = " ".join(p for p in (exc.context, exc.problem) if p)
            self.problem("(yaml)", line, f"invalid YAML: {what or 'syntax error'}")
            return _BAD
        except yaml.YAMLError:
            # ReaderError: bytes that are not UTF-8/UTF-16 or forbidden control characters.
            self.problem("(yaml)", 0, "invalid YAML: not UTF-8 text or a forbidden character")
            return _BAD
        except RecursionError:
            self.problem("(yaml)", 0, "invalid YAML: nested too deeply")
            return _BAD
        finally:
            if loader is not None:
                loader.dispose()
        if node is None:
            return MappingNode(_TAG + "map", [])
        return node

    def pairs(self, node: MappingNode, path: str, depth: int = 0) -> list[tuple[str, Node, Node]]:
        """Key/value nodes of a mapping with `<<` merges applied; keys must be text, once."""
        own: dict[str, tuple[str, Node, Node]] = {}
        merged: list[tuple[str, Node, Node]] = []
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            if key_node.tag == _MERGE:
                merged.extend(self._merge(value_node, path, line, depth))
                continue
            if not isinstance(key_node, ScalarNode) or key_node.tag != _STR:
                self.problem(
                    path or "(yaml)", line, f"keys must be text, not {_describe(key_node)}"
                )
                continue
            key = key_node.value
            if key in own:
                first = own[key][1].start_mark.line + 1
                self.problem(_join(path, key), line, f"duplicate key (first on line {first})")
                continue
            own[key] = (key, key_node, value_node)
        result: dict[str, tuple[str, Node, Node]] = {}
        for item in merged:  # YAML merge: earlier sources win, explicit keys win over all
            result.setdefault(item[0], item)
        result.update(own)
        return list(result.values())

    def _merge(self, node: Node, path: str, line: int, depth: int) -> list[tuple[str, Node, Node]]:
        if depth >= _MAX_MERGE_DEPTH:
            self.problem(path or "(yaml)", line, "`<<` merges nest too deeply")
            return []
        sources = node.value if isinstance(node, SequenceNode) else [node]
        out: list[tuple[str, Node, Node]] = []
        for source in sources:
            if not isinstance(source, MappingNode):
                self.problem(path or "(yaml)", line, "`<<` needs a mapping or a list of them")
                continue
            out.extend(self.pairs(source, path, depth + 1))
        return out

    def scalar(self, node: ScalarNode) -> Any:
        """The Python value of a scalar by its resolved tag; raises ConfigValueError."""
        try:
            if node.tag == _NULL:
                return None
            if node.tag == _BOOL:
                return self._scalars.construct_yaml_bool(node)
            if node.tag == _INT:
                return self._scalars.construct_yaml_int(node)
            if node.tag == _FLOAT:
                return self._scalars.construct_yaml_float(node)
        except (ValueError, ArithmeticError, LookupError, yaml.YAMLError) as exc:
            # The library's message may quote the value: do not pass it on.
            raise ConfigValueError(f"not a valid {_KIND[node.tag]}") from exc
        if node.tag == _STR:
            return node.value
        raise ConfigValueError(f"unsupported YAML tag {node.tag!r}")

    # ------------------------------------------------------------ typed building
    def build(
        self,
        tp: Any,
        node: Node,
        path: str,
        line: int,
        fmeta: Mapping[str, Any] | None = None,
        base: Any = None,
    ) -> Any:
        """The value of type `tp` at `path`, or _BAD after recording why not.

        `base` is the field's default; a section given in part keeps the rest of it.
        """
        fmeta = fmeta or {}
        if fmeta.get("duration"):
            return self._duration(node, path, line, fmeta)
        origin = get_origin(tp)
        args = get_args(tp)
        if origin in (Union, types.UnionType):
            inner = [a for a in args if a is not type(None)]
            if len(inner) != 1:
                raise TypeError(f"config type {tp} at {path}: only `X | None` is supported")
            if isinstance(node, ScalarNode) and node.tag == _NULL:
                return None
            return self.build(inner[0], node, path, line, fmeta, base)
        if dataclasses.is_dataclass(tp) and isinstance(tp, type):
            return self._dataclass(tp, node, path, line, base if isinstance(base, tp) else None)
        if origin is tuple:
            return self._tuple(args, node, path, line, fmeta)
        if origin is dict:
            return self._dict(args, node, path, line, fmeta)
        if origin is Literal:
            return self._literal(args, node, path, line)
        if tp is Secret:
            return self._secret(node, path, line)
        if tp in (str, int, float, bool):
            return self._plain(tp, node, path, line, fmeta)
        raise TypeError(f"config type {tp} at {path} is not supported by the loader")

    def _dataclass(self, cls: type, node: Node, path: str, line: int, base: Any = None) -> Any:
        if isinstance(node, ScalarNode) and node.tag == _NULL:
            node = MappingNode(_TAG + "map", [])  # `section:` with all keys commented out
        if not isinstance(node, MappingNode):
            self.problem(path or "(yaml)", line, f"expected a mapping, got {_describe(node)}")
            return _BAD
        fields = _fields(cls)
        hints = _hints(cls)
        file_keys = {f"{n}_file": n for n, f in fields.items() if f.metadata.get("secret_file")}
        given: dict[str, tuple[Node, int]] = {}
        given_files: dict[str, tuple[Node, int]] = {}
        for key, key_node, value_node in self.pairs(node, path):
            key_line = key_node.start_mark.line + 1
            self.lines.setdefault(_join(path, key), key_line)
            if key in fields:
                given[key] = (value_node, key_line)
            elif key in file_keys:
                given_files[file_keys[key]] = (value_node, key_line)
            else:
                known = sorted([*fields, *file_keys])
                self.problem(_join(path, key), key_line, f"unknown key{_suggest(key, known)}")
        kwargs: dict[str, Any] = {}
        for name, (value_node, key_line) in given.items():
            field_path = _join(path, name)
            if name in given_files:
                self.problem(field_path, key_line, f"give either {name} or {name}_file, not both")
                continue
            field_meta = fields[name].metadata
            default = _default(fields[name])
            value = self.build(hints[name], value_node, field_path, key_line, field_meta, default)
            if value is not _BAD:
                kwargs[name] = value
        for name, (value_node, key_line) in given_files.items():
            if name not in given:
                self.lines.setdefault(_join(path, name), key_line)
                value = self._secret_file(value_node, _join(path, f"{name}_file"), key_line)
                if value is _BAD:
                    self.failed.add(_join(path, name))  # no second "needs a secret"
                else:
                    kwargs[name] = value
        return dataclasses.replace(base, **kwargs) if base is not None else cls(**kwargs)

    def _tuple(
        self, args: tuple[Any, ...], node: Node, path: str, line: int, fmeta: Mapping[str, Any]
    ) -> Any:
        if len(args) != 2 or args[1] is not Ellipsis:
            raise TypeError(f"config type tuple{list(args)} at {path}: use tuple[X, ...]")
        if isinstance(node, ScalarNode) and node.tag == _NULL:
            return ()  # `key:` with every item commented out
        if not isinstance(node, SequenceNode):
            self.problem(path, line, f"expected a list, got {_describe(node)}")
            return _BAD
        item_type = args[0]
        items: list[Any] = []
        ok = True
        for index, item in enumerate(node.value):
            item_path = f"{path}[{index}]"
            item_line = item.start_mark.line + 1
            self.lines.setdefault(item_path, item_line)
            value = self.build(item_type, item, item_path, item_line, fmeta)
            if value is _BAD:
                if not (dataclasses.is_dataclass(item_type) and isinstance(item_type, type)):
                    ok = False
                    continue
                value = item_type()  # keep later indexes aligned with the file
            items.append(value)
        return tuple(items) if ok else _BAD

    def _dict(
        self, args: tuple[Any, ...], node: Node, path: str, line: int, fmeta: Mapping[str, Any]
    ) -> Any:
        if args[0] is not str:
            raise TypeError(f"config type dict{list(args)} at {path}: keys must be str")
        if isinstance(node, ScalarNode) and node.tag == _NULL:
            return {}
        if not isinstance(node, MappingNode):
            self.problem(path, line, f"expected a mapping, got {_describe(node)}")
            return _BAD
        out: dict[str, Any] = {}
        ok = True
        for key, key_node, value_node in self.pairs(node, path):
            key_line = key_node.start_mark.line + 1
            self.lines.setdefault(_join(path, key), key_line)
            value = self.build(args[1], value_node, _join(path, key), key_line, fmeta)
            if value is _BAD:
                ok = False
            else:
                out[key] = value
        return out if ok else _BAD

    def _checked_scalar(self, node: Node, path: str, line: int, expected: str) -> Any:
        """The scalar's value, or _BAD after reporting why it cannot be read (`expected`
        names what belongs here, for a mapping or list in its place)."""
        if not isinstance(node, ScalarNode):
            self.problem(path, line, f"expected {expected}, got {_describe(node)}")
            return _BAD
        try:
            return self.scalar(node)
        except ConfigValueError as exc:
            self.problem(path, line, str(exc))
            return _BAD

    def _literal(self, args: tuple[Any, ...], node: Node, path: str, line: int) -> Any:
        value = self._checked_scalar(node, path, line, f"one of {_choices(args)}")
        if isinstance(value, _Bad):
            return value
        for choice in args:
            if type(choice) is type(value) and choice == value:
                return value
        words = [str(a) for a in args]
        shown = _show(str(value)) if isinstance(value, str) else _describe(node)
        hint = _suggest(value, words) if isinstance(value, str) else ""
        self.problem(path, line, f"{shown} is not one of {_choices(args)}{hint}")
        return _BAD

    def _text(self, node: Node, path: str, line: int, what: str) -> str | _Bad:
        """The text of a plain scalar exactly as written (YAML would turn 0123 into 83)."""
        if not isinstance(node, ScalarNode) or node.tag not in _TEXT_TAGS:
            self.problem(path, line, f"expected {what}, got {_describe(node)}")
            return _BAD
        return str(node.value)

    def _secret(self, node: Node, path: str, line: int) -> Secret | _Bad:
        text = self._text(node, path, line, "the secret as text")
        if isinstance(text, _Bad):
            return text
        if not text:
            self.problem(path, line, "is empty")
            return _BAD
        return Secret(text)

    def _secret_file(self, node: Node, path: str, line: int) -> Secret | _Bad:
        name = self._text(node, path, line, "a file name")
        if isinstance(name, _Bad):
            return name
        content = self._read_private(name, path, line)
        if isinstance(content, _Bad):
            return content
        return Secret(content)

    def _abs(self, name: str) -> str:
        return os.path.normpath(os.path.join(self.base_dir, os.path.expanduser(name)))

    def _read_private(self, name: str, path: str, line: int) -> str | _Bad:
        """A file only its owner may read (like ssh keys), trailing newline stripped."""
        if not name:
            self.problem(path, line, "needs a file name")
            return _BAD
        full = self._abs(name)
        try:
            fd = os.open(full, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | os.O_NONBLOCK)
        except OSError as exc:
            self.problem(path, line, f"cannot read {full}: {exc.strerror or 'error'}")
            return _BAD
        try:
            # fstat after open, not stat before: the checked file is the one read.
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                self.problem(path, line, f"{full} is not a regular file")
                return _BAD
            mode = stat.S_IMODE(info.st_mode)
            if mode & 0o077:
                self.problem(
                    path,
                    line,
                    f"{full} is readable or writable by group or others "
                    f"(mode {mode:04o}); chmod 600 it",
                )
                return _BAD
            with os.fdopen(fd, "rb", closefd=False) as f:
                data = f.read(MAX_SECRET_FILE + 1)
        finally:
            os.close(fd)
        if len(data) > MAX_SECRET_FILE:
            self.problem(path, line, f"{full} is larger than {MAX_SECRET_FILE} bytes")
            return _BAD
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            self.problem(path, line, f"{full} is not UTF-8 text")
            return _BAD
        text = text.rstrip("\r\n")
        if not text:
            self.problem(path, line, f"{full} is empty")
            return _BAD
        return text

    def _plain(self, tp: type, node: Node, path: str, line: int, fmeta: Mapping[str, Any]) -> Any:
        if tp is str:
            value = self._text(node, path, line, "text")
            if isinstance(value, _Bad):
                return value
            return self._text_checks(value, path, line, fmeta)
        value = self._checked_scalar(node, path, line, _KIND[_type_tag(tp)])
        if isinstance(value, _Bad):
            return value
        if tp is bool:
            if type(value) is bool:
                return value
        elif tp is int:
            if type(value) is int:
                return self._bounds(value, path, line, fmeta, str)
        elif type(value) in (int, float):  # tp is float
            try:
                number = float(value)
            except OverflowError:
                self.problem(path, line, "number is too large")
                return _BAD
            if number != number or number in (float("inf"), float("-inf")):
                self.problem(path, line, "must be a finite number")
                return _BAD
            return self._bounds(number, path, line, fmeta, _number)
        quoted = isinstance(node, ScalarNode) and node.tag == _STR and node.style in ("'", '"')
        quote = "; remove the quotes" if quoted else ""
        self.problem(path, line, f"expected {_KIND[_type_tag(tp)]}, got {_describe(node)}{quote}")
        return _BAD

    def _text_checks(self, value: str, path: str, line: int, fmeta: Mapping[str, Any]) -> Any:
        choices = fmeta.get("choices")
        if choices and value not in choices:
            self.problem(
                path,
                line,
                f"{_show(value)} is not one of {_choices(choices)}{_suggest(value, list(choices))}",
            )
            return _BAD
        kind = fmeta.get("path", "")
        if not kind or not value:
            return value
        full = self._abs(value)
        if kind == "existing" and not os.path.isfile(full):
            self.problem(path, line, f"no such file: {full}")
            return _BAD
        if kind == "private" and isinstance(self._read_private(value, path, line), _Bad):
            return _BAD
        return full

    def _bounds(
        self, value: Any, path: str, line: int, fmeta: Mapping[str, Any], show: Callable[[Any], str]
    ) -> Any:
        low, high = fmeta.get("minimum"), fmeta.get("maximum")
        if low is not None and value < low:
            self.problem(path, line, f"must be at least {show(low)}, got {show(value)}")
            return _BAD
        if high is not None and value > high:
            self.problem(path, line, f"must be at most {show(high)}, got {show(value)}")
            return _BAD
        return value

    def _duration(self, node: Node, path: str, line: int, fmeta: Mapping[str, Any]) -> Any:
        never = bool(fmeta.get("never"))
        if not isinstance(node, ScalarNode) or node.tag == _NULL:
            hint = " or never" if never else ""
            self.problem(path, line, f"expected a duration (e.g. 10m){hint}, got {_describe(node)}")
            return _BAD
        try:
            raw = node.value if node.tag == _STR else self.scalar(node)
            seconds = parse_duration(raw, allow_never=never)
        except ConfigValueError as exc:
            self.problem(path, line, str(exc))
            return _BAD
        if seconds is None:
            return None
        return self._bounds(seconds, path, line, fmeta, _duration_text)


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None if f.default is dataclasses.MISSING else f.default


def _type_tag(tp: type) -> str:
    return {bool: _BOOL, int: _INT, float: _FLOAT, str: _STR}[tp]


def _choices(options: tuple[Any, ...]) -> str:
    return ", ".join(str(o) for o in options)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)


def _duration_text(value: float) -> str:
    return format_duration(float(value))


# ---------------------------------------------------------------- derived values
def _resolve_store_url(config: Config, b: _Builder) -> Config:
    """`sqlite:///rel/path` is relative to the config file's folder; spell it absolute."""
    url = config.store.url
    scheme, sep, rest = url.partition("://")
    if scheme != "sqlite" or not sep:
        return config
    if not rest.startswith("/"):
        b.check_failed("store.url", "write sqlite:///PATH (three slashes, then the path)")
        return config
    file_part, q, query = rest[1:].partition("?")
    if file_part in ("", ":memory:"):
        # The store runs on several threads; each would see its own empty database.
        b.check_failed("store.url", "SQLite needs a file path (sqlite:///PATH), not memory")
        return config
    if file_part.startswith("/"):
        return config  # already absolute (four slashes)
    absolute = os.path.normpath(os.path.join(b.base_dir, file_part))
    store = dataclasses.replace(config.store, url=f"sqlite:///{absolute}{q}{query}")
    return dataclasses.replace(config, store=store)


# ---------------------------------------------------------------- cross-field checks
def _check(config: Config, b: _Builder) -> None:
    """Rules that involve more than one field, or a field's meaning rather than its type."""
    scheme = config.store.url.partition("://")[0]
    if scheme not in ("sqlite", "postgresql") or "://" not in config.store.url:
        # Never echo the URL: a postgresql URL may hold a password.
        b.check_failed("store.url", "must start with sqlite:/// or postgresql://")
    if scheme == "sqlite" and config.store.pool_size < SQLITE_MIN_POOL:
        b.check_failed("store.pool_size", SQLITE_POOL_PROBLEM)
    pin = config.otp.pin
    if pin.min_length > pin.max_length:
        b.check_failed(
            "otp.pin.min_length",
            f"{pin.min_length} is more than otp.pin.max_length ({pin.max_length})",
        )
    for i, rule in enumerate(config.policy.groups):
        if not rule.group:
            b.check_failed(f"policy.groups[{i}].group", "needs a group name")
    _check_primary(config, b)
    _check_radius(config, b)
    _check_radsec(config, b)
    _check_http(config, b)
    if config.selfservice.enabled:
        if not re.fullmatch(r"[A-Za-z0-9_-]+", config.selfservice.alias):
            b.check_failed("selfservice.alias", "use only letters, digits, - and _")
        if not config.http.enabled:
            b.check_failed("selfservice.enabled", "the portal needs http.enabled: true")
    for action in config.selfservice.actions:
        if action not in PORTAL_ACTIONS + PORTAL_ACTIONS_OFF:
            b.check_failed("selfservice.actions", f"unknown action {action!r}; known: "
                           + ", ".join(PORTAL_ACTIONS + PORTAL_ACTIONS_OFF))
    if len(set(config.selfservice.actions)) != len(config.selfservice.actions):
        b.check_failed("selfservice.actions", "lists an action twice")
    if config.smtp.host and "@" not in config.smtp.from_address:
        b.check_failed("smtp.from_address", "needs an address when smtp.host is set")
    for entry in config.selfservice.listen:
        if entry not in config.http.listen:
            b.check_failed("selfservice.listen", f"{entry!r} is not one of http.listen")
    for kind in config.selfservice.token_types:
        if kind not in ("totp", "hotp"):
            b.check_failed("selfservice.token_types", f"unknown token type {kind!r}")


def _check_primary(config: Config, b: _Builder) -> None:
    backends = config.primary.backends
    if not backends:
        b.check_failed("primary.backends", "needs at least one first-factor backend")
    names: dict[str, int] = {}
    for i, backend in enumerate(backends):
        path = f"primary.backends[{i}]"
        if backend.name:
            if backend.name in names:
                b.check_failed(
                    f"{path}.name",
                    f"duplicate backend name {_show(backend.name)} "
                    f"(also primary.backends[{names[backend.name]}])",
                )
            names.setdefault(backend.name, i)
        if backend.type == "ldap":
            _check_ldap(backend, path, b)
    if config.store.token_storage == "ldap" and not any(  # noqa: S105 - not a password
        x.type == "ldap" and x.token_attribute for x in backends
    ):
        b.check_failed(
            "store.token_storage",
            "ldap needs an ldap backend in primary.backends with token_attribute",
        )


def _check_ldap(backend: PrimaryBackend, path: str, b: _Builder) -> None:
    if not backend.servers:
        b.check_failed(f"{path}.servers", "an ldap backend needs at least one server")
    for j, server in enumerate(backend.servers):
        if not re.fullmatch(r"ldaps?://[^/\s]+/?", server.url):
            b.check_failed(
                f"{path}.servers[{j}].url",
                "must look like ldap://host[:port] or ldaps://host[:port]",
            )
    if not backend.user_search.base:
        b.check_failed(f"{path}.user_search.base", "an ldap backend needs a search base DN")
    search = backend.user_search
    if name_attribute(search.filter, search.name_attribute) is None:
        if search.name_attribute:
            b.check_failed(
                f"{path}.user_search.name_attribute",
                f"the filter must compare {_show(search.name_attribute)} with {{user}}, "
                f"e.g. ({search.name_attribute}={{user}})",
            )
        else:
            b.check_failed(
                f"{path}.user_search.filter",
                "compares no attribute with {user}: set user_search.name_attribute to one it does",
            )
    if backend.groups.mode == "search" and not backend.groups.base:
        b.check_failed(f"{path}.groups.base", "groups.mode search needs a base DN")
    if backend.bind_dn and backend.bind_password is None:
        b.check_failed(f"{path}.bind_password", "bind_dn needs bind_password or bind_password_file")
    if backend.bind_password is not None and not backend.bind_dn:
        b.check_failed(f"{path}.bind_dn", "bind_password is set but bind_dn is empty")


def _check_radius(config: Config, b: _Builder) -> None:
    _check_listen(config.radius.listen, "radius.listen", b)
    names: dict[str, int] = {}
    networks: dict[ipaddress.IPv4Network | ipaddress.IPv6Network, int] = {}
    for i, client in enumerate(config.radius.clients):
        path = f"radius.clients[{i}]"
        if not client.name:
            b.check_failed(f"{path}.name", "a client needs a name")
        elif client.name in names:
            b.check_failed(
                f"{path}.name",
                f"duplicate client name {_show(client.name)} "
                f"(also radius.clients[{names[client.name]}])",
            )
        else:
            names[client.name] = i
        network = _network(client.address, f"{path}.address", b, "a client needs an address")
        if network is not None:
            if network in networks:
                b.check_failed(
                    f"{path}.address", f"same address as radius.clients[{networks[network]}]"
                )
            networks.setdefault(network, i)
        if client.secret is None:
            b.check_failed(f"{path}.secret", "a client needs a secret (secret or secret_file)")
        for j, reply in enumerate(client.reply_attributes):
            if not reply.attribute:
                b.check_failed(f"{path}.reply_attributes[{j}].attribute", "needs an attribute name")
        _check_realms(client.realms, f"{path}.realms", b)


def _check_radsec(config: Config, b: _Builder) -> None:
    """radius.tls: the keys' shape here, then the files themselves with the same
    `prepare` the listener runs at start and on reload."""
    tls = config.radius.tls
    if tls is None:
        return
    _check_listen(tls.listen, "radius.tls.listen", b)
    for i, client in enumerate(tls.clients):
        path = f"radius.tls.clients[{i}]"
        if client.address:
            b.check_failed(f"{path}.address", "RadSec clients are matched by certificate")
        if client.secret is not None:
            b.check_failed(f"{path}.secret", "the RadSec secret is fixed: radsec (RFC 6614)")
    # Problems on keys already reported are not repeated (check_failed skips them).
    from authd.radius.codec import RadiusDictionary
    from authd.radius.tls_context import RadsecConfigError, prepare

    try:
        prepare(config.radius, RadiusDictionary(config.radius.dictionary))
    except RadsecConfigError as errors:
        for path, why in errors.problems:
            b.check_failed(path, why)
    except OSError as exc:
        b.check_failed("radius.dictionary", str(exc))


def _check_http(config: Config, b: _Builder) -> None:
    http = config.http
    _check_listen(http.listen, "http.listen", b)
    if http.tls is not None:
        for name in ("cert_file", "key_file"):
            if not getattr(http.tls, name):
                b.check_failed(f"http.tls.{name}", "TLS needs cert_file and key_file")
    for i, proxy in enumerate(http.trusted_proxies):
        _network(proxy, f"http.trusted_proxies[{i}]", b, "needs an address or CIDR")
    _check_realms(http.realms, "http.realms", b)
    names: dict[str, int] = {}
    for i, key in enumerate(http.api_keys):
        path = f"http.api_keys[{i}]"
        if not key.name:
            b.check_failed(f"{path}.name", "an API key needs a name")
        elif key.name in names:
            b.check_failed(
                f"{path}.name",
                f"duplicate API key name {_show(key.name)} (also http.api_keys[{names[key.name]}])",
            )
        else:
            names[key.name] = i
        if not b.has_failed(f"{path}.key_file", f"{path}.key_sha256"):  # no derived problem
            if bool(key.key_sha256) == bool(key.key_file):
                b.check_failed(f"{path}.key_sha256", "give exactly one of key_sha256 or key_file")
            elif key.key_sha256 and not re.fullmatch(r"[0-9a-fA-F]{64}", key.key_sha256):
                b.check_failed(f"{path}.key_sha256", "must be 64 hex digits (a SHA-256)")
        if not key.scopes:
            b.check_failed(f"{path}.scopes", "needs at least one scope")


def _check_realms(realms: tuple[str, ...], path: str, b: _Builder) -> None:
    for i, realm in enumerate(realms):
        problem = realm_problem(realm)
        if problem is not None:
            b.check_failed(f"{path}[{i}]", problem)


def _check_listen(listen: tuple[str, ...], path: str, b: _Builder) -> None:
    seen: dict[tuple[str, int], int] = {}
    for i, entry in enumerate(listen):
        try:
            address = listen_address(entry)
        except ConfigValueError as exc:
            b.check_failed(f"{path}[{i}]", str(exc))
            continue
        if address[1] != 0 and address in seen:  # port 0: the kernel picks, never a clash
            b.check_failed(
                f"{path}[{i}]", f"duplicate listen address (also {path}[{seen[address]}])"
            )
        seen.setdefault(address, i)


def listen_address(entry: str) -> tuple[str, int]:
    """("ip", port) from `1.2.3.4:1812` or `[::1]:1812`; raises ConfigValueError.

    The one parser of `radius.listen` / `http.listen` entries: the listeners call it on
    entries this module already validated."""
    match = re.fullmatch(r"\[([^\]]+)\]:([0-9]{1,5})|([^:\[\]]+):([0-9]{1,5})", entry)
    if match is None:
        raise ConfigValueError(f"{_show(entry)} is not ADDRESS:PORT (IPv6: [ADDRESS]:PORT)")
    host = match.group(1) or match.group(3)
    port = int(match.group(2) or match.group(4))
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise ConfigValueError(f"{_show(host)} is not an IP address") from None
    if port > 65535:
        raise ConfigValueError(f"port {port} is larger than 65535")
    return (str(ip), port)


def _network(
    text: str, path: str, b: _Builder, missing: str
) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    if not text:
        b.check_failed(path, missing)
        return None
    try:
        return ipaddress.ip_network(text, strict=True)
    except ValueError:
        pass
    try:
        loose = ipaddress.ip_network(text, strict=False)
    except ValueError:
        b.check_failed(path, f"{_show(text)} is not an IP address or CIDR")
        return None
    b.check_failed(path, f"{_show(text)} has host bits set; did you mean {loose}?")
    return None
