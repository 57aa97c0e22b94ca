"""The CA simulator: a root and an issuing CA kept in a state directory, certificate profiles
imitating the CA servers the seed names, and an EST server (RFC 7030) that real clients such as
strongSwan's ``pki`` enroll against.

    profiles.py     issuing policies per EST label, and check_ipsec_eku
    issuance.py     pure certificate building
    authority.py    the CA in its state directory (keys loaded once per process)
    pending.py      requests waiting for manual approval, and approve()
    est_codec.py    pure EST message codec (shared with the device's EST client)
    est_server.py   the EST endpoints (aiohttp, TLS client certificates)
    admin.py        admin endpoints (approve) on loopback, token-protected
    problems.py     errors to problem+json answers
    service.py      start_in_thread(): run it in this process
    cli.py          certfleet ca serve | requests | approve
"""
