"""A frozen TF1 graph whose LSTM has peepholes and projection and no cell clip (LSTM_S's kind),
ending in a softmax: `python quantize_helper.py OUT.pb` (run with tf-keras, TF_USE_LEGACY_KERAS=1)."""

import sys

import tensorflow as tf

v1 = tf.compat.v1
v1.disable_v2_behavior()

graph = tf.Graph()
with graph.as_default():
    v1.set_random_seed(4)
    x = v1.placeholder(tf.float32, [None, None, 5], name="x")
    # A forget bias of 3 keeps most of the cell state step to step, so it grows along the sequence.
    cell = v1.nn.rnn_cell.LSTMCell(16, use_peepholes=True, num_proj=6, forget_bias=3.0)
    outputs, _ = v1.nn.dynamic_rnn(cell, x, dtype=tf.float32)
    w = v1.get_variable("w", [6, 3], initializer=v1.random_normal_initializer(stddev=3.0))
    tf.nn.softmax(tf.matmul(outputs[:, -1], w), name="y")
    with v1.Session() as session:
        session.run(v1.global_variables_initializer())
        frozen = v1.graph_util.convert_variables_to_constants(session, graph.as_graph_def(), ["y"])
with open(sys.argv[1], "wb") as out:
    out.write(frozen.SerializeToString())
