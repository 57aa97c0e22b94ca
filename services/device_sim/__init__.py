"""The device simulator: a fleet of simulated threat-defense devices behind one
device-management HTTP API (:mod:`shared.device_api`), with seeded latency and faults.

Start it in-process with :func:`services.device_sim.server.start_in_thread` or from the
command line with ``certfleet device-sim``.
"""
