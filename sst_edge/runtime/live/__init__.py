"""Live video on the device (`sst-edge watch`): cameras and network streams in, action events out.

sources.py opens cameras, streams and files with PyAV and keeps a ring of resized frames per source;
watch.py cuts spans over wall-clock time, embeds them with one shared ONNX Runtime session (skipping
spans when inference falls behind), and turns labelled spans into events (events.py); sinks.py writes
them (stdout, an events file) and mqtt.py publishes them to a broker.
"""
