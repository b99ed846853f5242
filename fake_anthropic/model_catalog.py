"""The models `GET /v1/models` lists: every id family of the price table in anthropic-api.md.

Newest first, as the API lists them. Dated models can also be fetched by their undated alias
(`claude-haiku-4-5` -> `claude-haiku-4-5-20251001`), as the API allows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class CatalogModel:
    id: str
    display_name: str
    created_at: str  # RFC 3339
    lifecycle: str = "active"
    alias: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "type": "model",
            "id": self.id,
            "display_name": self.display_name,
            "created_at": self.created_at,
            "lifecycle": self.lifecycle,
        }


MODELS: tuple[CatalogModel, ...] = (
    CatalogModel("claude-fable-5-1", "Claude Fable 5.1", "2026-10-20T00:00:00Z"),
    CatalogModel("claude-mythos-5-1", "Claude Mythos 5.1", "2026-10-20T00:00:00Z"),
    CatalogModel("claude-opus-5-5", "Claude Opus 5.5", "2026-10-07T00:00:00Z"),
    CatalogModel("claude-sonnet-5-5", "Claude Sonnet 5.5", "2026-10-07T00:00:00Z"),
    CatalogModel("claude-haiku-5-5", "Claude Haiku 5.5", "2026-10-07T00:00:00Z"),
    CatalogModel("claude-fable-5", "Claude Fable 5", "2026-08-18T00:00:00Z"),
    CatalogModel("claude-mythos-5", "Claude Mythos 5", "2026-08-18T00:00:00Z"),
    CatalogModel("claude-opus-5", "Claude Opus 5", "2026-07-28T00:00:00Z"),
    CatalogModel("claude-sonnet-5", "Claude Sonnet 5", "2026-07-28T00:00:00Z"),
    CatalogModel("claude-opus-4-8", "Claude Opus 4.8", "2026-06-09T00:00:00Z"),
    CatalogModel("claude-opus-4-7", "Claude Opus 4.7", "2026-04-14T00:00:00Z"),
    CatalogModel("claude-sonnet-4-6", "Claude Sonnet 4.6", "2026-02-17T00:00:00Z"),
    CatalogModel("claude-opus-4-6", "Claude Opus 4.6", "2026-02-05T00:00:00Z"),
    CatalogModel("claude-opus-4-5-20251101", "Claude Opus 4.5", "2025-11-24T00:00:00Z", alias="claude-opus-4-5"),
    CatalogModel("claude-haiku-4-5-20251001", "Claude Haiku 4.5", "2025-10-15T00:00:00Z", alias="claude-haiku-4-5"),
    CatalogModel("claude-sonnet-4-5-20250929", "Claude Sonnet 4.5", "2025-09-29T00:00:00Z", alias="claude-sonnet-4-5"),
    CatalogModel("claude-opus-4-1-20250805", "Claude Opus 4.1", "2025-08-05T00:00:00Z", "retired", "claude-opus-4-1"),
    CatalogModel("claude-opus-4-20250514", "Claude Opus 4", "2025-05-22T00:00:00Z", "retired", "claude-opus-4-0"),
    CatalogModel("claude-sonnet-4-20250514", "Claude Sonnet 4", "2025-05-22T00:00:00Z", "deprecated", "claude-sonnet-4-0"),
    CatalogModel(
        "claude-3-7-sonnet-20250219", "Claude Sonnet 3.7", "2025-02-24T00:00:00Z", "retired", "claude-3-7-sonnet-latest"
    ),
    CatalogModel("claude-3-5-haiku-20241022", "Claude Haiku 3.5", "2024-10-22T00:00:00Z", "retired", "claude-3-5-haiku-latest"),
    CatalogModel("claude-3-haiku-20240307", "Claude Haiku 3", "2024-03-07T00:00:00Z", "deprecated"),
)

MODELS_JSON: tuple[dict[str, Any], ...] = tuple(model.as_json() for model in MODELS)
MODEL_BY_ID_OR_ALIAS: dict[str, CatalogModel] = {
    **{model.alias: model for model in MODELS if model.alias},
    **{model.id: model for model in MODELS},
}


def find_model(model_id: str) -> CatalogModel | None:
    return MODEL_BY_ID_OR_ALIAS.get(model_id)
