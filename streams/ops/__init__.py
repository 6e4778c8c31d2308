"""Running it: the command line (``cli``), the embedded broker (``broker``), topic
administration (``admin``), and demo traffic (``traffic``, ``generator``).
"""
