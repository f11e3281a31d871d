"""Stand-ins for the custom Keras layers some corpus models use, written for this benchmark.

`crema-chord-crnn-h5` (crema 0.2.0) has a `SqueezeLayer(axis)` that drops one axis of size 1;
manifest.toml hands it to rnnexport as `custom_objects = ["corpus_layers:SqueezeLayer"]`
(benchmarks/corpus.py puts this folder on sys.path).
"""

import keras


@keras.saving.register_keras_serializable(package="corpus")
class SqueezeLayer(keras.layers.Layer):
    def __init__(self, axis=-1, **kwargs):
        super().__init__(**kwargs)
        self.axis = axis

    def call(self, inputs):
        return keras.ops.squeeze(inputs, axis=self.axis)

    def compute_output_shape(self, input_shape):
        shape = list(input_shape)
        del shape[self.axis]
        return tuple(shape)

    def get_config(self):
        return {**super().get_config(), "axis": self.axis}
