"""Backends: engines that keep jobs and carry out the job operations the `Queue` facade asks for.

Rule 1: a backend decides nothing of its own: retries, expiry and the order of ready jobs come from `core`.
Rule 2: backends import `core`, `log` and `errors`; never the facade, the runtime or the cli.

Where a new backend plugs in
----------------------------
- `base.Backend` is the protocol: enqueue (one, many), lease up to n, complete a
  batch (with a periodic task's next run), change one job (ack, fail, release,
  extend, cancel, retry), get/select/stats, wait, compact, sync, close; with
  `capabilities` (`base.Capabilities`: durable, compaction, inspectable) that the
  facade and the tests read. Arguments arrive checked by the facade.
- `engine.Engine` carries these out over the pure `core.index.Index` and a record
  `Store`; `local.LocalBackend` gives it the log, `memory.MemoryBackend` a store in
  memory. A backend that keeps jobs elsewhere (a server) implements `Backend` itself
  and takes its decisions from `core.policy`.
- `logq.queue.Queue.__init__` picks the backend from the path (a directory,
  ":memory:"): add the new one's address form there.
- tests/conftest.py's `queue_factory` fixture lists the backends the contract suite
  runs on: add one param (and how to open it); tests that need `durable` skip elsewhere.
"""
