"""Re-encrypt every stored secret from one secret key to another (``certfleet secrets rotate``).

Secrets are stored sealed with :class:`~shared.secrets.SecretBox` in the columns of
:data:`SEALED_COLUMNS`. :func:`rotate_secrets` opens every one of them before it changes any:
a secret that opens with neither key stops it, naming the row, and nothing is written. One that
opens with the new key already is left as it is, so running it again with the same keys (after
an interrupted or repeated run, or once a service already on the new key stored more) re-seals
only what the old key still holds.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from sqlmodel import Session, SQLModel, select

from shared.errors import ConfigurationError
from shared.models import Device, EnrollmentObject, EnrollmentOverride, Webhook
from shared.secrets import SecretBox

#: Every table that stores sealed secrets, what its rows are called, and its sealed columns.
SEALED_COLUMNS: tuple[tuple[type[SQLModel], str, tuple[str, ...]], ...] = (
    (EnrollmentObject, "enrollment object", ("secret_blob", "pkcs12_blob")),
    (EnrollmentOverride, "enrollment override", ("secret_blob",)),
    (Webhook, "webhook", ("secret_blob",)),
    (Device, "device", ("endpoint_credential_blob",)),
)


class UnreadableSecret(ConfigurationError):
    """A stored secret opens with neither key: the old key given is not the one it was sealed with."""

    code = "secret_key_mismatch"


@dataclass
class RotationReport:
    #: Secrets re-sealed with the new key, and those found sealed with it already, per table.
    rotated: Counter[str] = field(default_factory=Counter)
    already: Counter[str] = field(default_factory=Counter)

    def describe(self) -> str:
        done, before = sum(self.rotated.values()), sum(self.already.values())
        tables = ", ".join(f"{table} {count}" for table, count in sorted(self.rotated.items()) if count)
        line = f"{done} stored secret{'' if done == 1 else 's'} re-encrypted with the new key"
        line += f" ({tables})" if tables else ""
        if before:
            line += f"; {before} already under the new key, left as they were"
        return line


def _named(row: SQLModel) -> str:
    name = getattr(row, "name", "")
    return f" ({name!r})" if name else ""


def rotate_secrets(session: Session, old: SecretBox, new: SecretBox) -> RotationReport:
    """Re-seal with ``new`` every secret sealed with ``old``, in ``session``'s transaction (the
    caller commits). Rows are locked for the transaction where the database can (PostgreSQL).
    Raises :class:`UnreadableSecret` before changing anything when a secret opens with neither."""
    report = RotationReport()
    changes: list[tuple[SQLModel, str, bytes]] = []
    for model, what, columns in SEALED_COLUMNS:
        table = model.__tablename__
        for row in session.exec(select(model).order_by(model.id).with_for_update()):
            for column in columns:
                token = getattr(row, column)
                if token is None:
                    continue
                if new.try_open(token) is not None:
                    report.already[table] += 1
                    continue
                plaintext = old.try_open(token)
                if plaintext is None:
                    raise UnreadableSecret(
                        f"the {column} of {what} {row.id}{_named(row)} opens with neither the old nor the "
                        "new key: the old key given is not the one it was stored with. Nothing was changed.")
                changes.append((row, column, plaintext))
                report.rotated[table] += 1
    for row, column, plaintext in changes:
        setattr(row, column, new.seal(plaintext))
        session.add(row)
    session.flush()
    return report
