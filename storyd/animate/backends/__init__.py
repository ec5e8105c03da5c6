"""One module per video backend, plus the registry that names the models and picks a backend.

``registry`` and ``framing`` import no torch; ``wan`` and ``animatediff`` load diffusers when they run.
"""
