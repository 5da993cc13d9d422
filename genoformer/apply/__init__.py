"""A trained model applied to new inputs: sequences (`predict --sequences`), variants (`score-variants`)
and regions (`attribute`). model.py is the one place that runs the model; see docs/apply.md."""
