"""Pydantic models of the three object files, and errors a person can act on.

Object files are written by people and by older Thot versions, so every model keeps unknown
fields (``extra="allow"``) and treats ``null`` as "use the default". These models are the
definition (JSON Schemas, error messages, every lax case); :mod:`thotd.project.objectfile` reads the
common well-formed file without importing pydantic and defers to them for anything else (it
imports this module, never the other way: both take their names from
:mod:`thotd.project.vocabulary`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    ValidatorFunctionWrapHandler,
    field_validator,
)

from thotd.project.jsonpos import position
from thotd.project.vocabulary import (
    ASSET_FILE,
    CONTAINER_FILE,
    KNOWN_EXTRAS,
    NOTES_DIR,
    OBJECT_FILES,
    SCRIPTS_FILE,
    ObjectError,
    ObjectFileError,
    check_depth,
    format_loc,
)

__all__ = [  # with the vocabulary, re-exported: the models' public names
    "ASSET_FILE", "CONTAINER_FILE", "KNOWN_EXTRAS", "NOTES_DIR", "OBJECT_FILES", "SCRIPTS_FILE",
    "SCRIPTS_ADAPTER", "AssetFile", "ContainerFile", "ObjectError", "ObjectFileError",
    "ScriptAssociation", "extra_keys", "format_loc", "json_schemas", "parse", "write_schemas",
]


def _none_to(default: Any) -> Any:
    """A ``mode="before"`` validator body: ``null`` in the file means the default."""

    def fix(value: Any) -> Any:
        return default() if value is None else value

    return fix


class _Common(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)

    schema_: str | None = Field(
        default=None, alias="$schema", description="JSON Schema URL, for editors; ignored."
    )
    name: str | None = Field(default=None, description="Display name; default: folder name.")
    type: str | None = Field(default=None, description="Class of the object, used in searches.")
    description: str | None = Field(default=None, description="Free text.")
    tags: list[str] = Field(default_factory=list, description="Labels used in searches.")
    metadata: dict[str, Any] = Field(
        default_factory=dict,
        description="Key-value data; children inherit it, the nearer object winning.",
    )

    _tags_default = field_validator("tags", mode="before")(_none_to(list))
    _metadata_default = field_validator("metadata", mode="before")(_none_to(dict))


class ContainerFile(_Common):
    """``_container.json``: marks a folder as a container."""


class AssetFile(_Common):
    """``_asset.json``: marks a folder as an asset; ``file`` points at the data."""

    file: str = Field(
        description="The data: relative to the asset folder, absolute, or 'root:/…'.",
        min_length=1,
    )
    creator: str | None = Field(default=None, description="Who or what made it.")
    creator_type: str | None = Field(
        default=None, description="'script' for outputs; unset for data put there by a person."
    )


class ScriptAssociation(BaseModel):
    """One entry of ``_scripts.json``."""

    model_config = ConfigDict(extra="allow")

    script: str = Field(
        description="Script path: relative to the container, absolute, or 'root:/…'.",
        min_length=1,
    )
    priority: float = Field(default=0, description="Lower runs first; ties keep file order.")
    autorun: bool = Field(default=True, description="Run when the project is evaluated.")
    schedule: str | None = Field(
        default=None,
        description="thotd extension: a crontab line ('*/15 * * * *') to also run it on a timetable.",
    )
    resources: dict[str, int | float | str] | None = Field(
        default=None,
        description="thotd extension: resources a run needs on a Dask worker, e.g. "
        "{'memory': '8GB', 'GPU': 1} (Dask resource restrictions; sizes in bytes).",
    )
    executor: Literal["local", "dask"] | None = Field(
        default=None,
        description="thotd extension: 'local' keeps this script on the daemon's machine even "
        "when the project runs on a Dask cluster.",
    )

    _priority_default = field_validator("priority", mode="before")(_none_to(lambda: 0))

    @field_validator("priority", mode="wrap")
    @classmethod
    def _int_stays_int(cls, value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        """``1`` stays ``1`` (the original handed scripts the number as written)."""
        return value if type(value) is int else handler(value)
    _autorun_default = field_validator("autorun", mode="before")(_none_to(lambda: True))


SCRIPTS_ADAPTER: TypeAdapter[list[ScriptAssociation]] = TypeAdapter(list[ScriptAssociation])

MODELS: dict[str, type[BaseModel] | TypeAdapter[Any]] = {
    CONTAINER_FILE: ContainerFile,
    ASSET_FILE: AssetFile,
    SCRIPTS_FILE: SCRIPTS_ADAPTER,
}


def parse(filename: str, data: bytes, path: str = "") -> Any:
    """Validate one object file's bytes; return the model (a list for ``_scripts.json``).

    Raises :class:`ObjectFileError` naming the file, the JSON path of each bad field, its
    line and column (:mod:`thotd.project.jsonpos`) and the reason.
    """
    shown = path or filename
    check_depth(data, shown)
    try:
        if filename == SCRIPTS_FILE:
            return SCRIPTS_ADAPTER.validate_json(data)
        model = MODELS[filename]
        assert isinstance(model, type)
        return model.model_validate_json(data)
    except ValidationError as exc:
        errors: list[ObjectError] = []
        for err in exc.errors(include_url=False):
            if err["type"] == "json_invalid":
                errors.append(_json_error(shown, data))
                break
            line, column = position(data, err["loc"]) or (None, None)
            errors.append(ObjectError(shown, format_loc(err["loc"]), _reason(err), line, column))
        raise ObjectFileError(errors) from None


def _reason(err: Any) -> str:
    msg = str(err["msg"])
    if err["type"] == "missing":
        return "required field is missing"
    if "input" in err and err["type"] not in ("model_type", "list_type", "dict_type"):
        return f"{msg} (got {json.dumps(err['input'], default=str)[:80]})"
    return msg


def _json_error(path: str, data: bytes) -> ObjectError:
    try:
        json.loads(data)
    except UnicodeDecodeError as exc:
        return ObjectError(path, None, f"not UTF-8 text: {exc.reason} at byte {exc.start}")
    except json.JSONDecodeError as exc:
        return ObjectError(path, None, f"invalid JSON: {exc.msg}", exc.lineno, exc.colno)
    return ObjectError(path, None, "invalid JSON")


def extra_keys(parsed: Any) -> list[str]:
    """Unknown top-level keys of an already parsed file (no second parse on the hot path)."""
    if isinstance(parsed, list):
        return [
            f"[{i}].{k}" for i, item in enumerate(parsed)
            for k in (item.model_extra or {}) if k not in KNOWN_EXTRAS
        ]
    return [k for k in (parsed.model_extra or {}) if k not in KNOWN_EXTRAS]


def json_schemas() -> dict[str, dict[str, Any]]:
    """The JSON Schemas of the three object files, for editors."""
    return {
        "container.schema.json": ContainerFile.model_json_schema(by_alias=True),
        "asset.schema.json": AssetFile.model_json_schema(by_alias=True),
        "scripts.schema.json": SCRIPTS_ADAPTER.json_schema(by_alias=True),
    }


def write_schemas(out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in json_schemas().items():
        target = out_dir / name
        target.write_text(json.dumps(schema, indent=2) + "\n")
        written.append(target)
    return written
