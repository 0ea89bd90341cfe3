"""python -m trajectory.synth OUT_DIR --patients N --seed S [--death-rate P]"""
from . import main

main()
