"""The pairs stage, "frequently bought together": the basket of an order counted per
flush (``basket``), repartitioned by product (``outbox``), counted per pairs
partition (``sketch`` and its stored form ``sketch_state``, ``ledger``) exactly
while one memory budget per worker allows and within it beyond (``budget``),
and published as ranked lists (``recommendations``).

Pure: nothing here imports Faust, Kafka or Prometheus.
"""
