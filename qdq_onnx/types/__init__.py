"""The two kinds of type a Q/DQ file is made of, one module each:

- a quantization scheme (`types.scheme`): what a Q/DQ pair holds (INT8, FP8 E4M3 and
  narrow-bit variants such as int8-4bit), its range, zero point and weight axis;
- a float type (`types.float_type`): what the float remainder runs in (FP32, FP16, BF16),
  and storing values in it.

The CLI's words stay (`--dtype` picks the scheme, `--high-precision` the float type); the
code's words are these two nouns."""
