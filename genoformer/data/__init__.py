"""What the model reads: windows over intervals, labelled sequence sets, torch Datasets and seeded,
resumable samplers over them."""
