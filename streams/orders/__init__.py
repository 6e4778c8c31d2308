"""The orders stage: an event checked against the contract (``contract``), turned into
the facts of one order (``facts``), folded into event-time windows (``windows``),
kept per source partition with its offsets (``ledger``), read as rolling views
(``snapshot``); what is rejected leaves as a dead letter (``dead_letters``).

Pure: nothing here imports Faust, Kafka or Prometheus.
"""
