"""Attachments: files stored content-addressed (sha256) in a local folder, their type checked by
their first bytes, their size capped. Reports refer to them by hash."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from libs.common.events import AttachmentRef
from libs.common.web import ApiError

_SIGNATURES: tuple[tuple[str, int, bytes], ...] = (
    ("image/jpeg", 0, b"\xff\xd8\xff"),
    ("image/png", 0, b"\x89PNG\r\n\x1a\n"),
    ("image/webp", 8, b"WEBP"),
    ("application/pdf", 0, b"%PDF-"),
    ("video/mp4", 4, b"ftyp"),
)


def sniff(head: bytes) -> str | None:
    """The media type a file's first bytes announce, among the ones intake accepts."""
    for media_type, offset, magic in _SIGNATURES:
        if head[offset : offset + len(magic)] == magic:
            if media_type == "image/webp" and not head.startswith(b"RIFF"):
                continue
            return media_type
    return None


class AttachmentStore:
    def __init__(self, root: Path, *, max_bytes: int, allowed: frozenset[str]) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self.allowed = allowed

    def _path(self, sha256: str) -> Path:
        return self.root / sha256[:2] / sha256

    def check_type(self, declared: str, head: bytes) -> str:
        declared = declared.split(";", maxsplit=1)[0].strip().lower()
        if declared not in self.allowed:
            allowed = ", ".join(sorted(self.allowed))
            raise ApiError(
                415,
                "unsupported_media_type",
                f"{declared!r} is not one of: {allowed}",
                path="header.content-type",
            )
        found = sniff(head)
        if found != declared:
            raise ApiError(
                415,
                "unsupported_media_type",
                f"the content is {found or 'of an unknown type'}, not {declared}",
                path="body",
            )
        return declared

    def put(self, data: bytes, declared: str) -> tuple[AttachmentRef, bool]:
        """Store `data`; returns its reference and whether it was new."""
        if not data:
            raise ApiError(422, "invalid_request", "the file is empty", path="body")
        if len(data) > self.max_bytes:
            raise ApiError(413, "too_large", f"larger than {self.max_bytes} bytes", path="body")
        media_type = self.check_type(declared, data[:16])
        digest = hashlib.sha256(data).hexdigest()
        ref = AttachmentRef(sha256=digest, media_type=media_type, size=len(data))
        target = self._path(digest)
        if target.exists():
            return ref, False
        target.parent.mkdir(parents=True, exist_ok=True)
        # write beside, fsync, then rename: a crash never leaves a half file under the final name
        with tempfile.NamedTemporaryFile(dir=target.parent, delete=False) as tmp:
            tmp.write(data)
            tmp.flush()
            os.fsync(tmp.fileno())
        Path(tmp.name).replace(target)
        return ref, True

    def known(self, ref: AttachmentRef) -> bool:
        path = self._path(ref.sha256)
        try:
            if path.stat().st_size != ref.size:
                return False
            with path.open("rb") as handle:
                return sniff(handle.read(16)) == ref.media_type
        except FileNotFoundError:
            return False
