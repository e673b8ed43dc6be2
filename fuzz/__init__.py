"""Crash-recovery fuzz harness for logq: `python -m fuzz --help`.

Theory of operation
-------------------
`simfs` simulates the file system behind logq's FileSystem seam and produces
post-crash images; `oracle` holds the model of the jobs and the ledger that
decides which recovered states are acceptable; `driver` runs one queue on
simulated files and checks every call and recovery; the three modes build on
them: `model` (hypothesis state machine), `points` (a crash after every file
operation of a workload) and `soak` (a real process killed with SIGKILL).
See fuzz/README.md.
"""
