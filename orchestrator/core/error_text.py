"""Error texts in one line: what a traceback, or Ray's report of a failed actor, says failed.

Pure. Used where a failure is shown in one line: a replica's start failure (the pool's worker records,
``ripple status``), a queued job's ``waitReason``, a version's error.
"""

from __future__ import annotations

import re

_SYNTAX_ERROR = re.compile(r"^(SyntaxError|IndentationError|TabError): ")
_TRACEBACK_FILE = re.compile(r'^\s*File "(?P<path>[^"]+)", line (?P<line>\d+)')
_PACKAGE_GONE = re.compile(r"Failed to download runtime_env file package (?P<uri>gcs://[\w.-]+\.zip)")
_PACKAGE_PATH = re.compile(r"/_ray_pkg_[0-9a-f]+/(?P<rest>.+)$")
_RUNTIME_ENV_FAILED = ("Failed to set up runtime environment", "RuntimeEnvSetupError")


def runtime_env_failed(text: str) -> bool:
    """Whether ``text`` (a replica's start failure) is its node failing to set up its runtime environment
    (a pip package that does not install, a code package it cannot fetch) rather than its handler."""
    return any(marker in text for marker in _RUNTIME_ENV_FAILED)


def error_line(text: str, limit: int = 300) -> str:
    """The line of an error text (a traceback, Ray's report of a failed actor) that says what failed:
    its last, at most ``limit`` characters. A syntax error's last line names no place, so the file and line
    of the traceback's last frame are added (``SyntaxError: expected ':' (handler.py, line 1)``), the file
    as the package has it (from its top, for code that ``ripple deploy`` uploaded). Ray's failure to fetch a
    version's package (gone with the head that held it) says what happened and what to do."""
    if gone := _PACKAGE_GONE.search(text):
        return (
            f"the code package {gone['uri']} is no longer in the Ray cluster (its head restarted since the "
            "deploy, and held it in memory only): deploy the folder again with `ripple deploy`"
        )[:limit]
    lines = text.strip().splitlines()
    if not lines:
        return ""
    last = lines[-1].strip()
    if _SYNTAX_ERROR.match(last):
        for line in reversed(lines[:-1]):
            if frame := _TRACEBACK_FILE.match(line):
                path = frame["path"]
                if packaged := _PACKAGE_PATH.search(path):
                    path = packaged["rest"]
                last = f"{last} ({path}, line {frame['line']})"
                break
    return last[:limit]
