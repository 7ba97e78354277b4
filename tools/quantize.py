#!/usr/bin/env python3
"""Quantize a model to GGUF: `python tools/quantize.py INPUT OUTPUT --type {f32,f16,q8_0,q4_0,q4_1}`.
A thin entry point: the logic is pyinfer/quantize.py, also reachable as `pyinfer quantize`.
"""
import sys

from pyinfer.cli import main

if __name__ == "__main__":
    sys.exit(main(["quantize", *sys.argv[1:]]))
