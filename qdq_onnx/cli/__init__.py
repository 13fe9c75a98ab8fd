"""The qdq-onnx command line: one thin module per subcommand."""
