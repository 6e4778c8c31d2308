"""The Faust wiring around the pure stages: the app with its topics, tables, agents and
web views (``app``), the processors that apply events and flush state
(``processors``), the table store (``store``), the batch delivery (``fastpath``)
and the Prometheus collector (``metrics``).
"""
