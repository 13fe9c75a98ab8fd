"""The float remainder's type: after Q/DQ insertion (and calibration or fine-tuning), every
tensor not between a QuantizeLinear and its DequantizeLinear is typed FP16, BF16 or left
FP32, since a strongly typed TensorRT build (the only kind TensorRT 11 makes) runs each
tensor in the type the file gives it. The range guard decides, from calibration data and
the weights, which ops stay FP32; every such island is recorded in the placement plan."""
