"""The pairs stage, "frequently bought together": the basket of an order counted per
flush (``basket``), repartitioned by product (``outbox``), counted per pairs
partition in bounded memory (``sketch``, ``ledger``), and published as ranked
lists (``recommendations``).

Pure: nothing here imports Faust, Kafka or Prometheus.
"""
