"""The CA simulator: a root and an issuing CA kept in a state directory, certificate profiles
imitating the CA servers threat-defense devices enroll with (a Microsoft 2012 CA, an ASA's
local CA, an IOS router's CA server), EST (RFC 7030) and SCEP (RFC 8894) servers that real
clients such as strongSwan's ``pki`` enroll against, and the CRL and OCSP responder that relying
parties check its certificates with. The message codecs it shares with the device's clients are
in :mod:`shared.protocols`.

    profiles.py     issuing policies per EST label
    issuance.py     pure certificate building
    authority.py    the CA in its state directory (keys loaded once per process)
    ledger.py       what the issuing CA signed and revoked, and its newest CRL (SQLite)
    crl.py          the issuing CA's CRL, reissued after a revocation and halfway through its life
    ocsp.py         the OCSP responder (RFC 6960), bytes in and out
    revocations.py  revoke and list revocations from any process (certfleet ca revoke | revocations)
    revocation_server.py  GET /crl/issuing.crl, /ocsp GET and POST (aiohttp, plain HTTP)
    pending.py      requests waiting for manual approval, and approve()
    est_server.py   the EST endpoints (aiohttp, TLS client certificates)
    scep_dialects.py  what each SCEP profile advertises and accepts (legacy-des: DES/SHA-1)
    scep_identity.py  who speaks SCEP for the CA: the issuing CA or an RA
    scep_transactions.py  SCEP transactions and sender nonces (SQLite)
    challenges.py   one-time SCEP challenge passwords (SQLite)
    sqlite_store.py the SQLite files those keep their state in (WAL, one write transaction per decision)
    scep_service.py the answer to each SCEP message
    scep_server.py  the SCEP endpoints (aiohttp, plain HTTP)
    admin.py        admin endpoints (approve) on loopback, token-protected
    bundle_store.py the CA bundles it publishes as a bundle source (signed, versioned, on disk)
    bundle_server.py  GET /ca-bundle/latest (aiohttp, HTTPS)
    problems.py     errors to problem+json answers, and each error's HTTP status
    service.py      start_in_thread(): run it in this process
    processes.py    serve it from N forked processes on one CA and one set of ports (--processes)
    cli.py          certfleet ca serve | revoke | revocations | requests | approve | challenge |
                    bundle publish | bundle show
"""
