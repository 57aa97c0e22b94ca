"""The scheduler: recurring runs (renewal passes, later CA-bundle updates and health checks)
fired by exactly one controller, the leader, from schedules kept in the database."""
