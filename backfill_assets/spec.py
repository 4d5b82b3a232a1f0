"""Building blocks of plan files: strict pydantic models and the field types they share.

Every plan field is validated by one of these types, so a name that reaches SQL is a plain SQL
identifier and a text field is never blank.
"""

import datetime as dt
import re
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")  # use with fullmatch


def identifier(value: str) -> str:
    """A plain SQL name (letters, digits, underscore); anything else is refused, not escaped."""
    if not IDENTIFIER.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a plain SQL name; use letters, digits and underscores only"
        )
    return value


def table_name(value: str) -> str:
    """``schema.table``, both parts plain SQL names."""
    parts = value.split(".")
    if len(parts) != 2 or not all(IDENTIFIER.fullmatch(p) for p in parts):
        raise ValueError(f"{value!r} is not a schema-qualified table name such as raw.events")
    return value


Identifier = Annotated[str, AfterValidator(identifier)]
TableName = Annotated[str, AfterValidator(table_name)]
Text = Annotated[str, Field(min_length=1)]
Scalar = str | int | float | bool | dt.date | None


class Strict(BaseModel):
    """A plan section: unknown fields are refused, values are frozen, text is never blank."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_blank_text(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            raise ValueError("is empty; write what it means in words")
        return value
