"""The contenders (1)-(3), each run as ``python -m bench.contenders.NAME`` in its own process.

Each reads all ``--events`` events of ``--topic`` from offset 0 with a fresh
consumer group and reports through a small JSON progress file (see
:mod:`bench.contenders.progress`). Contender (4) is the project's own worker,
``python -m streams worker``, watched through its /metrics.
"""
