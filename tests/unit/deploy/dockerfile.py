"""A small reader for the Dockerfile and .dockerignore, enough for this project's checks."""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath


@dataclass(frozen=True, slots=True)
class Instruction:
    keyword: str
    arguments: str


@dataclass(slots=True)
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [item.arguments for item in self.instructions if item.keyword == keyword]


def parse_dockerfile(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the build stages; continuation lines joined, comments dropped."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, arguments = line.partition(" ")
        keyword, arguments = keyword.upper(), arguments.strip()
        if keyword == "FROM":
            words = arguments.split()
            base = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: global_args[m.group(1) or m.group(2)], words[0])
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base=base, name=name))
        elif not stages and keyword == "ARG":
            name, _, default = arguments.partition("=")
            global_args[name] = default
        else:
            stages[-1].instructions.append(Instruction(keyword, arguments))
    return global_args, stages


def dockerignore_exclusions(text: str) -> list[str]:
    """The exclusion patterns of a .dockerignore (comments, blank lines and '!' re-inclusions dropped)."""
    patterns = []
    for raw in text.splitlines():
        line = raw.strip()
        if line and not line.startswith(("#", "!")) and line != "*":
            patterns.append(line.rstrip("/"))
    return patterns


def is_excluded(relative: PurePosixPath, patterns: list[str]) -> bool:
    """Whether Docker would leave `relative` (or a folder above it) out of the build context."""
    parts = relative.parts
    for pattern in patterns:
        if pattern.startswith("**/"):
            if any(fnmatch.fnmatchcase(part, pattern[3:]) for part in parts):
                return True
        elif any(fnmatch.fnmatchcase("/".join(parts[: i + 1]), pattern) for i in range(len(parts))):
            return True
    return False


def builder_copy_sources(stage: Stage) -> list[str]:
    """Context paths the stage COPYs (COPY --from=... copies from another stage, not the context)."""
    sources: list[str] = []
    for arguments in stage.all("COPY"):
        words = [word for word in arguments.split() if not word.startswith("--")]
        if "--from=" not in arguments:
            sources.extend(words[:-1])
    return sources


def copy_context(repo_root: Path, sources: list[str], patterns: list[str], destination: Path) -> None:
    """Recreate what the COPY instructions see: the sources minus .dockerignore exclusions."""
    for source in sources:
        root = repo_root / source.rstrip("/")
        files = [root] if root.is_file() else sorted(path for path in root.rglob("*") if path.is_file())
        for path in files:
            relative = PurePosixPath(path.relative_to(repo_root).as_posix())
            if is_excluded(relative, patterns):
                continue
            target = destination / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())
