"""Release tags as versions (semantic versioning): parsing, ordering, what is newer. Pure."""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass

_SEMVER = re.compile(
    r"^v?(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?(?:\+[0-9A-Za-z.-]+)?$"
)


@dataclass(frozen=True)
class Version:
    major: int
    minor: int
    patch: int
    pre: tuple[str, ...] = ()
    text: str = ""

    def key(self) -> tuple[int, int, int, int, tuple[tuple[int, int | str], ...]]:
        # A release sorts after its pre-releases; numeric identifiers before alphanumeric.
        pre = tuple((0, int(p)) if p.isdigit() else (1, p) for p in self.pre)
        return (self.major, self.minor, self.patch, 0 if self.pre else 1, pre)

    def __lt__(self, other: Version) -> bool:
        return self.key() < other.key()

    def __str__(self) -> str:
        base = f"{self.major}.{self.minor}.{self.patch}"
        return base + ("-" + ".".join(self.pre) if self.pre else "")


def parse(text: str) -> Version | None:
    """A version from "1.2.3", "v1.2.3-rc.1" (PEP 440 "1.2.3rc1" is not semver: None)."""
    m = _SEMVER.match(text.strip())
    if not m:
        return None
    pre = tuple(m.group(4).split(".")) if m.group(4) else ()
    return Version(int(m.group(1)), int(m.group(2)), int(m.group(3)), pre, text.strip())


@dataclass(frozen=True)
class Tag:
    name: str
    commit: str
    version: Version


def parse_ls_remote(output: str) -> dict[str, str]:
    """{tag name: commit} from `git ls-remote --tags` (peeled "^{}" lines win: the commit)."""
    tags: dict[str, str] = {}
    for line in output.splitlines():
        commit, _, ref = line.partition("\t")
        if not ref.startswith("refs/tags/"):
            continue
        name = ref.removeprefix("refs/tags/")
        if name.endswith("^{}"):
            tags[name[:-3]] = commit
        else:
            tags.setdefault(name, commit)
    return tags


def releases(tags: dict[str, str], pattern: str, prereleases: bool = False) -> list[Tag]:
    """The tags matching `pattern` that are versions, oldest first."""
    out = []
    for name, commit in tags.items():
        v = parse(name) if fnmatch.fnmatchcase(name, pattern) else None
        if v is not None and (prereleases or not v.pre):
            out.append(Tag(name, commit, v))
    return sorted(out, key=lambda t: t.version.key())


def newer_than(current: str, tags: list[Tag]) -> list[Tag]:
    """The releases after `current` (all of them if `current` is not a version)."""
    cur = parse(current)
    return [t for t in tags if cur is None or cur < t.version]


def pick(tags: list[Tag], to: str | None) -> Tag | None:
    """The tag to install: `to` (a version or tag name) if given, else the newest."""
    if to is None:
        return tags[-1] if tags else None
    want = parse(to)
    for t in tags:
        if t.name == to or (want is not None and t.version.key() == want.key()):
            return t
    return None
