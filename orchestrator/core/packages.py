"""Code packages: the zip ``ripple deploy`` uploads, checked and named the way Ray names a job's working dir.

Pure (bytes in, facts out). Ray stores a working dir in its GCS as ``gcs://_ray_pkg_<sha1 of the zip>.zip``
(``ray._private.runtime_env.packaging.get_uri_for_package``): the same bytes give the same URI, so a
package is stored once. Ripple's ``codeDigest`` is the SHA-256 of the same bytes (``sha256:<hex>``).
A package's ``requirements.txt`` at its root becomes the replicas' ``runtimeEnv.pip``.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from dataclasses import dataclass

from orchestrator.core.errors import InvalidInput

RAY_PKG_PREFIX = "_ray_pkg_"
REQUIREMENTS = "requirements.txt"
MAX_REQUIREMENTS = 200
MAX_ENTRIES = 100_000


@dataclass(frozen=True)
class PackageInfo:
    """What an uploaded zip is: its Ray URI, digest, size, file count and requirements (None: no
    ``requirements.txt`` at its root)."""

    uri: str
    digest: str
    size_bytes: int
    files: int
    requirements: tuple[str, ...] | None

    def wire(self) -> dict[str, object]:
        return {
            "uri": self.uri,
            "codeDigest": self.digest,
            "sizeBytes": self.size_bytes,
            "files": self.files,
            "requirements": list(self.requirements) if self.requirements is not None else None,
        }


def package_uri(data: bytes) -> str:
    """Ray's content-addressed GCS URI of a zip package (as ``get_uri_for_package`` computes it)."""
    return f"gcs://{RAY_PKG_PREFIX}{hashlib.sha1(data).hexdigest()}.zip"


def package_digest(data: bytes) -> str:
    """The ``codeDigest`` of a package: ``sha256:<hex>`` of its bytes."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def parse_requirements(text: str) -> tuple[str, ...]:
    """Requirement lines of a ``requirements.txt``: comments and blank lines dropped. Options (``-r``,
    ``-e``, ``--index-url``) are refused: a replica installs named packages only. Raises InvalidInput."""
    out: list[str] = []
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("-"):
            raise InvalidInput(
                f"requirements.txt: {line!r}: options are not supported; list package requirements only",
                {"loc": ["body", REQUIREMENTS]},
            )
        out.append(line)
    if len(out) > MAX_REQUIREMENTS:
        raise InvalidInput(
            f"requirements.txt lists {len(out)} requirements; at most {MAX_REQUIREMENTS}",
            {"loc": ["body", REQUIREMENTS]},
        )
    return tuple(out)


def inspect_package(data: bytes, max_bytes: int) -> PackageInfo:
    """Check an uploaded package and describe it. Raises InvalidInput (422) when it is empty, over
    ``max_bytes``, not a zip, has an entry outside its root (absolute or ``..``), or a bad
    ``requirements.txt``."""
    where = {"loc": ["body"]}
    if not data:
        raise InvalidInput("the package is empty: send a zip file as the request body", where)
    if len(data) > max_bytes:
        raise InvalidInput(
            f"the package is {len(data)} bytes, over the limit of {max_bytes} bytes "
            "(exclude large files with .gitignore, or raise RIPPLE_MAX_PACKAGE_BYTES)",
            where,
        )
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            names = zf.namelist()
            if len(names) > MAX_ENTRIES:
                raise InvalidInput(f"the package has {len(names)} entries; at most {MAX_ENTRIES}", where)
            for name in names:
                parts = name.replace("\\", "/").split("/")
                if name.startswith(("/", "\\")) or ".." in parts or (len(name) > 1 and name[1] == ":"):
                    raise InvalidInput(f"the package has an entry outside its root: {name!r}", where)
            requirements = None
            if REQUIREMENTS in names:
                text = zf.read(REQUIREMENTS).decode("utf-8", "replace")
                requirements = parse_requirements(text)
    except zipfile.BadZipFile:
        raise InvalidInput("the package is not a zip file", where) from None
    files = sum(1 for n in names if not n.endswith("/"))
    if files == 0:
        raise InvalidInput("the package has no files", where)
    return PackageInfo(package_uri(data), package_digest(data), len(data), files, requirements)
