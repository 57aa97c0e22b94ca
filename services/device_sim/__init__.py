"""The device simulator: a fleet of simulated threat-defense devices behind one
device-management HTTP API (:mod:`shared.device_api`), with seeded latency and faults.

Devices enroll EST and SCEP trustpoints by talking to the CA themselves (:mod:`.est_client`,
trusting it as :mod:`.ca_trust` says; :mod:`.scep_client`); the CA simulator they can talk to
lives in :mod:`.ca`.

Start it in-process with :func:`services.device_sim.server.start_in_thread` or from the
command line with ``certfleet device-sim``.
"""
