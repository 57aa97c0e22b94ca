"""Code every certfleet service uses: settings, models, the trustpoint state machine,
events, errors, PKI helpers, logging and metrics. Nothing here does I/O at import time."""
