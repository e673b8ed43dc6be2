"""The command line: `python -m logq` or the `logq` script (inspect, verify, stats, requeue-dead, compact, demo, worker).

Rule 1: each subcommand is one function; parsing lives in `main`, output formatting in `inspect_text`.
Rule 2: read-only commands never write; the cli may import anything below it, nothing imports the cli.
"""
