"""Backends: engines that keep jobs and carry out the job operations the `Queue` facade asks for.

Rule 1: a backend decides nothing of its own: retries, expiry and the order of ready jobs come from `core`.
Rule 2: backends import `core`, `log` and `errors`; never the facade, the runtime or the cli.
"""
