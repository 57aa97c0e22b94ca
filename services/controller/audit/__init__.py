"""The audit log: every change asked of certfleet, made or refused, with who asked, when, in which
domain, what and how it ended; never a request body, so never a secret.

API requests are recorded by one middleware (:mod:`services.controller.api.audit_trail`) from
the route they match (:mod:`.routes`); the commands that change the database directly record
themselves (:mod:`.commands`). Entries are built by :mod:`.entries`, stored, listed and pruned by
:mod:`.store`."""
