"""The device simulator: a fleet of simulated threat-defense devices behind one
device-management HTTP API (:mod:`shared.device_api`), with seeded latency and faults.

Devices enroll EST and SCEP trustpoints by talking to the CA themselves, over the network as a
real device does (:mod:`.ca_client`: :mod:`.ca_client.est_client`, :mod:`.ca_client.scep_client`,
trusting the CA as :mod:`.ca_client.trust` says); the CA simulator they can talk to is
:mod:`services.ca_sim`, run as its own service.

Start it in-process with :func:`services.device_sim.server.start_in_thread` or from the
command line with ``certfleet device-sim``.
"""
