"""Runs in a fresh interpreter that never imports rnnexport: load SavedModels the plain way.

    python savedmodel_helper.py CASES.npz
CASES.npz holds, per model, `<name>/path`, `<name>/input/<key>` and `<name>/expected/<key>`.
Prints one line per model: name, and the max abs error of each output.
"""

import json
import sys

import numpy as np
import tensorflow as tf

assert "rnnexport" not in sys.modules

with np.load(sys.argv[1]) as data:
    models = sorted({key.split("/")[0] for key in data.files})
    for name in models:
        loaded = tf.saved_model.load(str(data[f"{name}/path"]))
        fn = loaded.signatures["serving_default"]
        feed = {k.split("/")[2]: tf.constant(data[k]) for k in data.files if k.startswith(f"{name}/input/")}
        outputs = fn(**feed)
        errors = {
            k.split("/")[2]: float(np.max(np.abs(outputs[k.split("/")[2]].numpy() - data[k])))
            for k in data.files
            if k.startswith(f"{name}/expected/")
        }
        print(json.dumps({"name": name, "errors": errors, "rnnexport_imported": "rnnexport" in sys.modules}))
