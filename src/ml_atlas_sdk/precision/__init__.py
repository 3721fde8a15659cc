"""FP16 and INT8 readiness, on CPU: activation ranges, a half-precision run, calibration coverage.

Atlas builds TensorRT engines in FP16 and INT8; these figures say beforehand which modules would
overflow or flush to zero, where a half-precision run first departs from FP32, and whether the
calibration sample covers the validation data. The checks only warn: atlas chooses the precision.
"""
