"""Customer-level cross-sell: orders re-keyed by customer, per-customer state over a rolling horizon.

Pure: no Faust, Kafka or Prometheus import. outbox.py lays a flush's orders out
per customer partition; state.py folds a customer's orders; ledger.py keeps a
customer partition's states, their contributions to the rolling counts, and
what makes them exact after a crash.
"""
