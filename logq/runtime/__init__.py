"""The runtime: tasks, their handles and serializers, periodic jobs and the workers that run them.

Rule 1: the runtime knows no storage; it talks to a queue through the `JobSource` protocol only.
Rule 2: it imports `core` and `errors`, never a backend, the `Queue` facade or the cli.
"""
