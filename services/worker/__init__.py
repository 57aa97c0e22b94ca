"""The workers: Dramatiq actors that carry out jobs on devices.

    actors.py         one job actor per job kind, declared on a broker made at runtime
    runner.py         one job, start to end: claim, exchange, fenced outcome
    exchanges.py      the conversations with a device, per job kind (no database)
    parameters.py     enrollment object -> trustpoint configuration
    jobstore.py       claiming and fencing job rows
    persist.py        certificates and statuses from what the device reports
    health.py         devices' default keyrings read in batches (no job rows) and recorded; the keyring policy
    ca_waiting.py     enrollments through their CA's gate; waiting for a CA without failing
    ca_gate.py        the CA gate's rules (concurrency, rate, outage), kept in the process
    ca_gate_redis.py  the same rules in Redis, shared by every worker process
    retry_policy.py   jittered exponential backoff
    steps.py          the timestamped record of what a job did
    job_metrics.py    Prometheus counters for outcomes
    log_context.py    middleware: job id, actor and message id on every log line
    context.py        what a worker process needs, built once
    main.py, cli.py   `certfleet worker` (the dramatiq CLI) and the embedded worker

Devices are reached through :mod:`shared.device_client`.
"""
