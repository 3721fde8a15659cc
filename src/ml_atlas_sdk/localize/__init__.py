"""Where a failed round-trip starts: the first module whose output ONNX Runtime gets wrong.

`locate.localize_failure` is the entry point; `report.describe` puts a result in one line.
"""
