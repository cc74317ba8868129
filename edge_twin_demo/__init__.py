"""The demo: a simulated home (firmware_sim) through the whole gateway (edge_twin).

``run.run_demo`` is the library; ``cli`` the ``edge-twin-demo`` command.
"""
