"""Keras models: `.keras`, Keras 2 `.h5` and in-memory models, and the Keras equivalent every source is rebuilt as."""
