"""The storage engine: checksummed records in segment files, recovery, checkpoint and compaction.

Rule 1: the log knows bytes, sequence numbers and record types, never jobs; it imports no `core`.
Rule 2: every file operation goes through the `fs` seam, so the fuzz harness can swap in its own.
"""
