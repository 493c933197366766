import pandas as pd

from bench.report import to_markdown, training_table


def test_training_table_prints_parameter_counts_as_integers():
    cells = pd.DataFrame([
        dict(generator="stargan", defense="none", bypass="lora", metric="train_seconds", value=542.151),
        dict(generator="stargan", defense="none", bypass="lora", metric="trainable_params", value=116580.0),
        dict(generator="stargan", defense="none", bypass="none", metric="dsr", value=1.0),
    ])
    text = to_markdown(training_table(cells), "training cost")
    assert " 116580 |" in text and "116580.000" not in text
    assert " 542.151 |" in text
