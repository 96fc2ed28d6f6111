import pathlib
import sys

# toy_updaters.py sits beside the tests (importlib mode does not add test folders to sys.path)
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
