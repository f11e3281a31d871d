"""TensorFlow SavedModel exports: the writer, and the runtime that runs them."""
