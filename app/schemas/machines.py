"""Machine registration (the seed's POST /machines)."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from app.schemas.jobs import labels_field
from tasks.core.names import MACHINE_ID


class MachineRegisterSchema(Schema):
    id = fields.String(required=True, validate=validate.Regexp(
        MACHINE_ID, error="must be 1-128 letters, digits, . _ - (starting with one of the "
                          "first two)"), error_messages={"required": "Machine id is required"})
    labels = labels_field(load_default=dict)


MACHINE_REGISTER = MachineRegisterSchema()
