"""The bundled demo: a small multitask ranking model with deterministic weights and data."""
