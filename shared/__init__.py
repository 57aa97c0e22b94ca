"""Code every certfleet service uses: settings, models, the trustpoint state machine, events,
errors, PKI helpers, logging and metrics, the protocols a device and its CA speak
(:mod:`shared.protocols`), the device-management API and its client, and the thread that serves
an HTTP app in-process. It imports no service. Nothing here does I/O at import time."""
