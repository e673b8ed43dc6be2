"""The pure core: what a job is, which changes are allowed, and how ready jobs are ordered.

Rule 1: nothing here does I/O, reads a clock or starts a thread; time comes in as an argument.
Rule 2: core imports only `logq.errors` and itself; the log, the backends and the runtime build on it.
"""
