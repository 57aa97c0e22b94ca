"""The Global domain: every database has it, with this fixed id, and it is the default domain
of the API and of every command. Apart from the table models, so that a command line can name
it without loading the database layer."""

from __future__ import annotations

import uuid

GLOBAL_DOMAIN_ID = uuid.UUID("e276abec-e0f2-11e3-8169-6d9ed49b625f")
GLOBAL_DOMAIN_NAME = "Global"
