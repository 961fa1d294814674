"""sst-edge: find, ship and run few-shot action-recognition video transformers on edge hardware."""

__version__ = "0.1.0"
