"""The device layer: what a Jetson or a bare CPU box runs, with numpy, ONNX Runtime and a video decoder only.

It holds the model card, decoders and preprocessing, datasets and the episode sampler, the numpy few-shot
heads and the evaluation protocol, ONNX Runtime sessions and provider choice, deployment targets, the
device fingerprint, and the timing of ONNX files (profiling bundles). It imports nothing from space/,
train/, search/, deploy/ or cost/, and never torch, nni, fvcore, onnx, lightning or matplotlib
(tests/test_device_half.py checks this in a process where importing them fails).
"""
