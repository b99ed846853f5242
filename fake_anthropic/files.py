"""A minimal Files API (upload, list, metadata, download, delete) so a gateway can be tested on multipart bodies.

The multipart body is parsed from the bytes already read for the request log, with the standard
library's MIME parser: the fake never needs a second pass over the socket.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any

from .errors import invalid_request, not_found
from .ids import new_id


@dataclass(frozen=True, slots=True)
class StoredFile:
    id: str
    filename: str
    mime_type: str
    size_bytes: int
    created_at: str

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "file",
            "filename": self.filename,
            "mime_type": self.mime_type,
            "size_bytes": self.size_bytes,
            "created_at": self.created_at,
            "downloadable": False,
        }


def uploaded_file_part(content_type: str, body: bytes) -> EmailMessage:
    if not content_type.lower().startswith("multipart/form-data"):
        raise invalid_request("Expected a multipart/form-data body with a `file` part")
    document = BytesParser(policy=HTTP).parsebytes(b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body)
    if not isinstance(document, EmailMessage) or not document.is_multipart():
        raise invalid_request("Malformed multipart body")
    for part in document.iter_parts():
        if part.get_param("name", header="content-disposition") == "file":
            return part
    raise invalid_request("file: Field required")


class FileStore:
    """Uploaded files and their content; used only from the event-loop thread."""

    def __init__(self) -> None:
        self._files: dict[str, StoredFile] = {}
        self._contents: dict[str, bytes] = {}

    def upload(self, content_type: str, body: bytes) -> StoredFile:
        part = uploaded_file_part(content_type, body)
        content = part.get_payload(decode=True)
        stored = StoredFile(
            id=new_id("file_011C"),
            filename=part.get_filename() or "upload",
            mime_type=part.get_content_type(),
            size_bytes=len(content) if isinstance(content, bytes) else 0,
            created_at=datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        )
        self._files[stored.id] = stored
        self._contents[stored.id] = content if isinstance(content, bytes) else b""
        return stored

    def get(self, file_id: str) -> StoredFile:
        stored = self._files.get(file_id)
        if stored is None:
            raise not_found(f"File not found: {file_id}")
        return stored

    def content(self, file_id: str) -> bytes:
        return self._contents[self.get(file_id).id]

    def delete(self, file_id: str) -> dict[str, str]:
        self.get(file_id)
        del self._files[file_id]
        del self._contents[file_id]
        return {"id": file_id, "type": "file_deleted"}

    def newest_first(self) -> list[StoredFile]:
        return list(reversed(self._files.values()))
