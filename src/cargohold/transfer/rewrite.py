"""Reference rewriting: point Dockerfiles, Kubernetes/compose YAML and Helm values at cargohold.

``docker.io/library/alpine:3.20`` becomes ``HOST/hub/alpine:3.20`` when a cache
rule ``docker.io/library/* → hub/*`` exists (or a ``--map`` prefix mapping
says so), optionally pinned: ``HOST/hub/alpine:3.20@sha256:…``. A sync rule
``docker.io/library/alpine → base/alpine`` makes it ``HOST/base/alpine:3.20``.

Which local name wins, when several could serve a reference:

1. ``--map`` mappings, in the order given: the user said so for this run.
2. A sync rule whose source is exactly the reference's repository. A sync
   rule always names one repository, so it is at least as specific as any
   cache rule; on a tie with an exact cache rule it still wins, because its
   repository is an ordinary local copy that answers without the upstream.
   Two sync rules from the same source: the one whose name sorts first
   (the finding's note names the others).
3. The most specific cache rule (exact source, then the longest prefix), as
   the server routes mirror requests.

Files are edited line by line, in place: only the characters of a reference
(or of the ARG default / Helm value that holds it) change, so comments,
quoting, indentation and line endings survive. Nothing is re-dumped.

Pure logic: the rules, the host and a ``pin`` callable (which resolves a
rewritten reference to a digest, e.g. with a HEAD to the registry) are passed
in; this module does no I/O of its own.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..cache.rules import CacheRule, InvalidRule, RuleSet, Source, normalize_registry
from ..oci.errors import RegistryError
from ..oci.names import is_valid_name
from ..oci.reference import DOCKER_HUB, Reference

# ---- mapping references -----------------------------------------------------------------------------


class PinError(Exception):
    """The ``pin`` callable could not resolve a reference to a digest; the message says why."""


@dataclass(frozen=True, slots=True)
class PrefixMap:
    """``--map docker.io/library=hub``: upstream ``registry[/path]`` prefix → local namespace."""

    registry: str
    path: str
    target: str

    @classmethod
    def parse(cls, value: str) -> PrefixMap:
        source, sep, target = value.partition("=")
        source, target = source.strip().rstrip("/").removesuffix("/*"), target.strip().strip("/").removesuffix("/*")
        if not sep or not source or not target:
            raise ValueError(f"--map {value!r}: expected SOURCE=TARGET, e.g. docker.io/library=hub")
        registry, _, path = source.partition("/")
        if "." not in registry and ":" not in registry and registry != "localhost":
            raise ValueError(f"--map {value!r}: the source must start with a registry host (docker.io/library, ghcr.io/org)")
        if path and not is_valid_name(path):
            raise ValueError(f"--map {value!r}: {path!r} is not a repository path")
        if not is_valid_name(target):
            raise ValueError(f"--map {value!r}: {target!r} is not a local repository name")
        registry = normalize_registry(registry)
        if registry == DOCKER_HUB and path and "/" not in path and path != "library":
            path = f"library/{path}"
        return cls(registry, path, target)

    def local(self, ref: Reference) -> str | None:
        if normalize_registry(ref.registry) != self.registry:
            return None
        repository = ref.repository
        if not self.path:
            if self.registry == DOCKER_HUB and repository.startswith("library/"):
                repository = repository[len("library/"):]  # as the cache rules do for a whole docker.io
            return f"{self.target}/{repository}"
        if repository == self.path:
            return self.target
        if repository.startswith(self.path + "/"):
            return f"{self.target}/{repository[len(self.path) + 1:]}"
        return None


def rules_from_api(items: Iterable[dict[str, Any]]) -> tuple[RuleSet, list[str]]:
    """The ``GET /api/v1/cache-rules`` answer as a :class:`RuleSet`, and a warning per rule that does not parse."""
    rules: list[CacheRule] = []
    warnings: list[str] = []
    for item in items:
        try:
            rules.append(CacheRule.build(
                str(item["name"]), str(item["source"]), str(item["target"]),
                insecure=bool(item.get("insecure")), dockerhub_mirror=bool(item.get("dockerhub_mirror")),
            ))
        except (KeyError, InvalidRule) as exc:
            warnings.append(f"cache rule {item.get('name')!r} ignored: {exc}")
    return RuleSet(rules), warnings


@dataclass(frozen=True, slots=True)
class SyncTarget:
    """A sync rule as a source of local names: upstream ``registry``/``repository`` is copied into local ``target``."""

    name: str
    registry: str
    repository: str
    target: str


def sync_rules_from_api(items: Iterable[dict[str, Any]]) -> tuple[list[SyncTarget], list[str]]:
    """The ``GET /api/v1/sync-rules`` answer as :class:`SyncTarget` s, and a warning per rule that does not parse.

    ``source`` is read the way cache rules read theirs (``docker.io/alpine`` is
    ``docker.io/library/alpine``); a source that is not one repository, or a
    target that is not a repository name, is skipped with a warning.
    """
    out: list[SyncTarget] = []
    warnings: list[str] = []
    for item in items:
        name = item.get("name") if isinstance(item, dict) else None
        try:
            source = Source.parse(str(item["source"]))
            target = str(item["target"]).strip()
        except (KeyError, TypeError, InvalidRule) as exc:
            warnings.append(f"sync rule {name!r} ignored: {exc}")
            continue
        if source.wildcard:
            warnings.append(f"sync rule {name!r} ignored: its source {source} is not one repository")
        elif not is_valid_name(target):
            warnings.append(f"sync rule {name!r} ignored: {target!r} is not a local repository name")
        else:
            out.append(SyncTarget(str(name), source.registry, source.path, target))
    return out, warnings


@dataclass(frozen=True, slots=True)
class LocalName:
    """Where a reference lives in cargohold, and what said so (for reports)."""

    local: str
    via: str  # "--map SRC=DST" | "sync rule NAME" | "cache rule NAME"
    note: str = ""


def bare_host(value: str) -> str:
    """``https://Reg.example.com:443/`` → ``reg.example.com:443``: what goes in front of a reference."""
    text = value.strip()
    if "://" in text:
        text = text.split("://", 1)[1]
    return text.strip("/").lower()


@dataclass
class Finding:
    """One image reference found in a file."""

    line: int  # 1-based
    text: str  # as written (with variables expanded)
    reference: Reference | None
    status: str  # rewritten | private | public | skipped
    new: str | None = None
    note: str = ""
    error: bool = False  # pinning failed
    via: str | None = None  # what gave the local name: "--map …", "sync rule …", "cache rule …"

    @property
    def public(self) -> bool:
        """Still pointing at a registry other than cargohold (before this rewrite)."""
        return self.reference is not None and self.status != "private"


@dataclass
class Result:
    text: str
    findings: list[Finding] = field(default_factory=list)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.error]


class Rewriter:
    """Maps references to their cargohold names (``--map``, then sync rules, then cache rules) and optionally pins them."""

    def __init__(
        self, host: str, rules: RuleSet | None = None, maps: Sequence[PrefixMap] = (),
        pin: Callable[[Reference], str] | None = None, sync: Sequence[SyncTarget] = (),
    ) -> None:
        self.host = bare_host(host)
        self.rules = rules or RuleSet([])
        self.maps = list(maps)
        self.pin = pin
        self.sync: dict[tuple[str, str], list[SyncTarget]] = {}
        for rule in sorted(sync, key=lambda r: r.name):
            self.sync.setdefault((rule.registry, rule.repository), []).append(rule)

    def mapping(self, ref: Reference) -> LocalName | None:
        """The local name for ``ref`` by the precedence in the module docstring; None when nothing serves it."""
        for prefix in self.maps:
            local = prefix.local(ref)
            if local is not None and is_valid_name(local):
                source = f"{prefix.registry}/{prefix.path}" if prefix.path else prefix.registry
                return LocalName(local, f"--map {source}={prefix.target}")
        registry, repository = normalize_registry(ref.registry), ref.repository
        if registry == DOCKER_HUB and "/" not in repository:
            repository = f"library/{repository}"
        synced = self.sync.get((registry, repository))
        if synced:
            first, others = synced[0], synced[1:]
            note = ""
            if others:
                note = "also synced by " + ", ".join(f"{o.name} (→ {o.target})" for o in others)
            return LocalName(first.target, f"sync rule {first.name}", note)
        route = self.rules.route_upstream(ref.registry, ref.repository)
        return LocalName(route.local, f"cache rule {route.rule.name}") if route else None

    def is_private(self, ref: Reference) -> bool:
        return ref.registry.lower() == self.host

    def decide(self, text: str, line: int) -> Finding:
        """What to do with reference ``text``: status ``rewritten`` (``new`` set, not pinned yet), ``private``, ``public`` or ``skipped``."""
        ref = parse_reference(text)
        if ref is None:
            return Finding(line, text, None, "skipped", note="not an image reference")
        if self.is_private(ref):
            return Finding(line, text, ref, "private")
        found = self.mapping(ref)
        if found is None:
            return Finding(line, text, ref, "public", note="no cache rule, sync rule or --map for it")
        return Finding(line, text, ref, "rewritten", new=f"{self.host}/{found.local}", note=found.note, via=found.via)

    def digest_for(self, finding: Finding) -> str | None:
        """The digest to pin ``finding``'s new reference to; None when not pinning, already pinned, or failed (noted)."""
        assert finding.reference is not None and finding.new is not None
        if self.pin is None or finding.reference.digest is not None:
            return None
        name = finding.new.split("/", 1)[1]
        try:
            return self.pin(Reference(self.host, name, finding.reference.tag or "latest"))
        except PinError as exc:
            finding.error, finding.note = True, f"cannot pin: {exc}"
            return None

    def full(self, finding: Finding, pinned: bool = True) -> str:
        """The whole new reference: ``HOST/hub/alpine:3.20[@sha256:…]``."""
        assert finding.reference is not None and finding.new is not None
        out = finding.new
        if finding.reference.tag:
            out += f":{finding.reference.tag}"
        digest = finding.reference.digest or (self.digest_for(finding) if pinned else None)
        if digest:
            out += f"@{digest}"
        return out


def parse_reference(text: str) -> Reference | None:
    if not text or "$" in text or "{" in text or any(c.isspace() for c in text):
        return None
    try:
        return Reference.parse(text)
    except (RegistryError, ValueError):
        return None


# ---- shared text helpers ----------------------------------------------------------------------------

_VAR = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-+])([^}]*))?\}|([A-Za-z_][A-Za-z0-9_]*))")


def expand(text: str, env: dict[str, str | None]) -> str:
    """Dockerfile/compose variable expansion: ``$V``, ``${V}``, ``${V:-word}``, ``${V-word}``, ``${V:+word}``, ``${V+word}``."""

    def one(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(4)
        op, word = match.group(2), match.group(3) or ""
        value = env.get(name)
        if op == ":-":
            return value if value else word
        if op == "-":
            return value if value is not None else word
        if op == ":+":
            return word if value else ""
        if op == "+":
            return word if value is not None else ""
        return value or ""

    return _VAR.sub(one, text)


def _name_end(token: str) -> int:
    """Where the repository name of ``token`` ends (at its ``:tag`` or ``@digest``), ignoring ``${…}``."""
    depth, last_slash, end = 0, -1, len(token)
    for i, char in enumerate(token):
        if char == "{" and i and token[i - 1] == "$":
            depth += 1
        elif char == "}" and depth:
            depth -= 1
        elif depth == 0 and char == "/":
            last_slash, end = i, len(token)
        elif depth == 0 and char == "@":
            return min(end, i)
        elif depth == 0 and char == ":" and i > last_slash and end == len(token):
            end = i
    return end


def _split_lines(text: str) -> list[tuple[str, str]]:
    out = []
    for raw in text.splitlines(keepends=True):
        content = raw.rstrip("\r\n")
        out.append((content, raw[len(content):]))
    return out


@dataclass(order=True)
class _Edit:
    line: int  # 0-based
    start: int
    end: int
    text: str = field(compare=False)


def _apply(lines: list[tuple[str, str]], edits: list[_Edit]) -> str:
    contents = [c for c, _ in lines]
    for edit in sorted(edits, reverse=True):
        content = contents[edit.line]
        contents[edit.line] = content[:edit.start] + edit.text + content[edit.end:]
    return "".join(c + e for c, (_, e) in zip(contents, lines))


def _rewrite_token(
    rw: Rewriter, token: str, env: dict[str, str | None], line: int, start: int, edits: list[_Edit], findings: list[Finding],
) -> None:
    """A reference as written at ``start`` on ``line``, possibly with variables in its tag."""
    expanded = expand(token, env) if "$" in token else token
    finding = rw.decide(expanded, line + 1)
    findings.append(finding)
    if finding.status == "skipped" and "$" in token:
        finding.text, finding.note = token, "a variable with no value here; left alone"
    if finding.status != "rewritten":
        return
    if "$" not in token:
        edits.append(_Edit(line, start, start + len(token), rw.full(finding)))
        return
    name_end = _name_end(token)
    if "$" in token[:name_end]:
        finding.status, finding.new = "skipped", None
        finding.note = "the image name uses a variable; left alone"
        return
    if rw.pin is not None and finding.reference is not None and finding.reference.digest is None:
        finding.note = "the tag uses a variable; not pinned"
    edits.append(_Edit(line, start, start + name_end, finding.new or ""))


# ---- Dockerfiles ---------------------------------------------------------------------------------------

_FROM = re.compile(r"^(\s*FROM\s+)((?:--\S+\s+)*)(\S+)(?:\s+AS\s+(\S+))?\s*$", re.IGNORECASE)
_COPY_FROM = re.compile(r"^\s*COPY\s+(?:--\S+\s+)*?--from=(\S+)", re.IGNORECASE)
_ARG = re.compile(r"^\s*ARG\s+(.*)$", re.IGNORECASE)
_ARG_ITEM = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?:=(\"(?:[^\"\\]|\\.)*\"|'[^']*'|[^\s]*))?")
_WHOLE_VAR = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")
_DEFAULT_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:?-)([^}]*)\}")


@dataclass
class _Arg:
    line: int
    start: int  # of the value (inside quotes)
    end: int
    value: str | None


def rewrite_dockerfile(text: str, rw: Rewriter) -> Result:
    """``FROM`` and ``COPY --from=`` images; a ``FROM ${BASE}`` rewrites ``ARG BASE=…``'s default (once).

    ``FROM ${BASE:-alpine:3.20}`` rewrites the fallback word in place and, when
    the global ``ARG BASE`` has a default, that default too: every image the
    build can resolve to should point at cargohold. Stage aliases (any case),
    stage numbers and ``scratch`` are not images.
    """
    lines = _split_lines(text)
    edits: list[_Edit] = []
    findings: list[Finding] = []
    args: dict[str, _Arg] = {}  # global ARGs (before the first FROM): the only ones FROM can use
    stages: set[str] = set()
    seen_from = False
    done_args: set[tuple[int, int]] = set()  # (line, start) of ARG defaults already handled
    for index, (content, _) in enumerate(lines):
        stripped = content.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if not seen_from and (arg := _ARG.match(content)):
            offset = arg.start(1)
            for item in _ARG_ITEM.finditer(arg.group(1)):
                raw = item.group(2)
                if raw is None:
                    args[item.group(1)] = _Arg(index, -1, -1, None)
                    continue
                start, end = offset + item.start(2), offset + item.end(2)
                if raw[:1] in "\"'" and len(raw) >= 2:
                    start, end, raw = start + 1, end - 1, raw[1:-1]
                args[item.group(1)] = _Arg(index, start, end, raw)
            continue
        env = {name: a.value for name, a in args.items()}
        if match := _FROM.match(content):
            seen_from = True
            token, alias = match.group(3), match.group(4)
            known_stage = token.lower() in stages or token.lower() == "scratch"
            if alias:
                stages.add(alias.lower())
            if known_stage:
                continue
            whole = _WHOLE_VAR.fullmatch(token)
            fallback = _DEFAULT_VAR.fullmatch(token)
            if whole or fallback:
                name = (whole.group(1) or whole.group(2)) if whole else fallback.group(1)  # type: ignore[union-attr]
                arg_ = args.get(name)
                # An ARG with an empty default (ARG BASE=) names no image: ${BASE-word} builds FROM an empty
                # string, ${BASE:-word} from the word; neither has a default to rewrite.
                used = arg_ is not None and bool(arg_.value)
                if fallback is not None:  # ${BASE:-alpine:3.20}: the word is used when the ARG is unset (or empty)
                    word = fallback.group(3)
                    if word and word.lower() not in stages and word.lower() != "scratch":
                        _rewrite_token(rw, word, env, index, match.start(3) + fallback.start(3), edits, findings)
                if not used:
                    if whole is not None:
                        empty = arg_ is not None and arg_.value == ""
                        findings.append(Finding(index + 1, token, None, "skipped",
                                                note=f"${name}'s ARG default is empty" if empty else f"${name} has no ARG default"))
                    continue
                assert arg_ is not None and arg_.value is not None
                if arg_.value.lower() in stages or arg_.value.lower() == "scratch":
                    continue
                if (arg_.line, arg_.start) in done_args:
                    continue  # another FROM uses the same ARG: rewritten (or reported) once
                done_args.add((arg_.line, arg_.start))
                before = len(findings)
                _rewrite_token(rw, arg_.value, {n: a.value for n, a in args.items() if n != name},
                               arg_.line, arg_.start, edits, findings)
                for finding in findings[before:]:
                    finding.note = "; ".join(filter(None, (f"ARG {name} default, used by FROM on line {index + 1}", finding.note)))
                continue
            _rewrite_token(rw, token, env, index, match.start(3), edits, findings)
        elif match := _COPY_FROM.match(content):
            token = match.group(1)
            if token.lower() in stages or token.isdigit() or "/" not in token and ":" not in token and "@" not in token:
                continue  # a stage (by name or number); a bare word is most likely a stage defined later
            _rewrite_token(rw, token, env, index, match.start(1), edits, findings)
    return Result(_apply(lines, edits), findings)


# ---- YAML: Kubernetes, compose, Helm values ------------------------------------------------------------

_FLOW_IMAGE = re.compile(r"[{,]\s*[\"']?image[\"']?\s*:")
_KEY = re.compile(r"^(\s*(?:-\s+)*)([\"']?)([A-Za-z_][\w.-]*)\2\s*:(?=\s|$)")


@dataclass
class _Scalar:
    start: int  # of the text, inside quotes
    end: int
    text: str
    quote: str


def _scalar(content: str, pos: int) -> _Scalar | None:
    """The plain or quoted scalar starting at or after ``pos`` (after ``key:``); None if empty or not a scalar."""
    rest = content[pos:]
    skip = len(rest) - len(rest.lstrip(" \t"))
    start = pos + skip
    if start >= len(content) or content[start] == "#":
        return None
    first = content[start]
    if first in "\"'":
        close = content.find(first, start + 1)
        if close < 0:
            return None
        return _Scalar(start + 1, close, content[start + 1:close], first)
    if first in "{[|>&*!%@`":
        return None
    comment = re.search(r"\s#", content[start:])
    end = start + comment.start() if comment else len(content)
    text = content[start:end].rstrip()
    return _Scalar(start, start + len(text), text, "") if text else None


@dataclass
class _Line:
    col: int  # column of the key, or of the content for non-key lines
    key: str | None
    value_pos: int  # just after the colon
    item: bool = False  # "- key: …": starts a list item


def _yaml_lines(lines: list[tuple[str, str]]) -> list[_Line | None]:
    out: list[_Line | None] = []
    for content, _ in lines:
        stripped = content.strip()
        if not stripped or stripped.startswith("#"):
            out.append(None)
            continue
        match = _KEY.match(content)
        if match:
            out.append(_Line(len(match.group(1)), match.group(3), match.end(), "-" in match.group(1)))
        else:
            out.append(_Line(len(content) - len(content.lstrip()), None, -1))
    return out


def _siblings(info: list[_Line | None], index: int) -> tuple[dict[str, int], str | None]:
    """The keys beside line ``index``'s key in the same mapping (key → line index), and the parent key."""
    here = info[index]
    assert here is not None
    col = here.col
    found: dict[str, int] = {}
    parent = None
    for step in (-1, 1):
        if step < 0 and here.item:
            continue  # "- repository: x" starts its item: nothing before it belongs to it
        i = index + step
        while 0 <= i < len(info):
            line = info[i]
            if line is not None:
                if line.col < col:
                    if step < 0:
                        parent = line.key
                    break
                if line.col == col and line.key is not None:
                    if step > 0 and line.item:
                        break  # the next list item
                    found.setdefault(line.key, i)
                    if step < 0 and line.item:
                        break  # the dash line that starts this item
            i += step
    return found, parent


def rewrite_yaml(text: str, rw: Rewriter) -> Result:
    """``image:`` values at any depth, and Helm-style ``repository:`` + ``tag:`` (+ ``registry:``/``digest:``) mappings."""
    lines = _split_lines(text)
    info = _yaml_lines(lines)
    edits: list[_Edit] = []
    findings: list[Finding] = []
    for index, line in enumerate(info):
        if line is None:
            continue
        content = lines[index][0]
        if line.key != "image" and "{" in content:  # a flow mapping: - {name: x, image: busybox}
            for flow in _FLOW_IMAGE.finditer(content):
                value = _scalar(content, flow.end())
                if value is not None and "{{" not in value.text:
                    if not value.quote:  # a plain scalar in a flow mapping ends at , or }
                        cut = re.search(r"[,}\]]", value.text)
                        if cut:
                            value = _Scalar(value.start, value.start + cut.start(), value.text[:cut.start()].rstrip(), "")
                    _rewrite_token(rw, value.text, {}, index, value.start, edits, findings)
            continue
        if line.key is None:
            continue
        if line.key == "image":
            value = _scalar(content, line.value_pos)
            if value is None or "{{" in value.text:
                continue
            _rewrite_token(rw, value.text, {}, index, value.start, edits, findings)
        elif line.key == "repository":
            _helm(rw, lines, info, index, edits, findings)
    return Result(_apply(lines, edits), findings)


def _helm(rw: Rewriter, lines: list[tuple[str, str]], info: list[_Line | None], index: int,
          edits: list[_Edit], findings: list[Finding]) -> None:
    repo = _scalar(lines[index][0], info[index].value_pos)  # type: ignore[union-attr]
    if repo is None or "{{" in repo.text or "://" in repo.text or repo.text.startswith("@"):
        return
    siblings, parent = _siblings(info, index)
    if not ({"tag", "registry", "digest"} & siblings.keys() or (parent and "image" in parent.lower())):
        return  # some other "repository" (a chart repository, a git repository …)

    def value_of(key: str) -> _Scalar | None:
        i = siblings.get(key)
        found = _scalar(lines[i][0], info[i].value_pos) if i is not None else None  # type: ignore[union-attr]
        return found if found and found.text else None  # "" is no value

    registry, tag, digest = value_of("registry"), value_of("tag"), value_of("digest")
    if (registry and "{{" in registry.text) or (tag and "{{" in tag.text):
        return
    text = (f"{registry.text}/" if registry else "") + repo.text
    if tag:
        text += ("@" if tag.text.startswith("sha256:") else ":") + tag.text
    if digest:
        text += "@" + digest.text
    finding = rw.decide(text, index + 1)
    findings.append(finding)
    if finding.status != "rewritten":
        return
    assert finding.new is not None
    local = finding.new.split("/", 1)[1]
    if registry:
        edits.append(_Edit(siblings["registry"], registry.start, registry.end, rw.host))
        edits.append(_Edit(index, repo.start, repo.end, local))
    else:
        edits.append(_Edit(index, repo.start, repo.end, finding.new))
    if rw.pin is None:
        return
    if tag is None and digest is None:
        finding.note = "no tag: beside repository (the chart's appVersion?); not pinned"
        return
    pinned = rw.digest_for(finding)
    if pinned is None:
        return
    if "digest" in siblings:
        i = siblings["digest"]
        if digest is not None:
            edits.append(_Edit(i, digest.start, digest.end, pinned))
        else:  # "digest:" or 'digest: ""'
            content = lines[i][0]
            pos = info[i].value_pos  # type: ignore[union-attr]
            empty = re.match(r"\s*(\"\"|'')", content[pos:])
            if empty:
                edits.append(_Edit(i, pos + empty.end() - 1, pos + empty.end() - 1, pinned))
            else:
                edits.append(_Edit(i, pos, pos, f" {pinned}"))
    elif tag is not None:
        edits.append(_Edit(siblings["tag"], tag.end, tag.end, f"@{pinned}"))


# ---- dispatch ----------------------------------------------------------------------------------------------


def kind_of(name: str, text: str) -> str:
    """``dockerfile`` or ``yaml``: by file name, else by content."""
    base = name.rsplit("/", 1)[-1].lower()
    if base.endswith((".yaml", ".yml")):
        return "yaml"
    if "dockerfile" in base or "containerfile" in base:
        return "dockerfile"
    if re.search(r"^\s*FROM\s+\S", text, re.IGNORECASE | re.MULTILINE):
        return "dockerfile"
    return "yaml"


def rewrite_text(name: str, text: str, rw: Rewriter) -> Result:
    return rewrite_dockerfile(text, rw) if kind_of(name, text) == "dockerfile" else rewrite_yaml(text, rw)
