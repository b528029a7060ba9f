"""What a name may be: models, labels, machine ids and the parts of a queue's name.

Settings, request schemas, handlers and the fleet check names against these, and the
names reach Redis keys, queue names and logs, so they are defined once, here.
"""

from __future__ import annotations

import re

SAFE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,100}\Z")
MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}\Z")
LABEL_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,62}\Z")
LABEL_VALUE = re.compile(r"^[A-Za-z0-9._-]{0,63}\Z")
MACHINE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")
