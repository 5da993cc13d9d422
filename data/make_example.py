"""Write the simulated example used by README's quickstart: python data/make_example.py OUT_DIR"""
import sys

from genoformer.errors import GenoformerError
from genoformer.simulate import simulate

if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: " + __doc__.split(": ", 1)[1])
    try:
        print(simulate(sys.argv[1], seed=0).out_dir)
    except GenoformerError as err:
        sys.exit(f"error: {err}")
