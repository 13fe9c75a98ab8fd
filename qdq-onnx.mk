# qdq-onnx.mk: the qdq-onnx pipeline as file targets, for `include` in your own Makefile.
#
#   MODEL    Keras model (.keras / .h5 file or SavedModel folder)         [required]
#   DATA     .npz with the model inputs (by name) and `labels` (`labels/<output>`
#            for several outputs; none with DISTILL=1): used to calibrate
#            (inputs only) and to fine-tune                                 [required]
#   DISTILL  1: fine-tune by self-distillation from the float model, no labels
#   VAL      validation .npz, same layout                                   [optional]
#   SPEC     quantization spec YAML                                         [optional]
#   RULES    rule file or bundled rule set            (default: tensorrt)
#   EPOCHS   fine-tuning epochs                        (default: 1)
#   LR       fine-tuning learning rate      (default: qdq-onnx's, 1e-5 cosine)
#   OUT      output folder                             (default: qdq-out)
#   QDQ_ONNX the command                               (default: qdq-onnx)
#
# Targets: $(OUT)/fp32.onnx -> $(OUT)/qdq.onnx -> $(OUT)/calibrated.onnx -> $(OUT)/int8.onnx,
# and the phony `qdq-onnx` for the last one. Each step is one CLI call; re-running with
# nothing changed does nothing; a failed step leaves no target (qdq-onnx writes atomically,
# and .DELETE_ON_ERROR covers anything else).

QDQ_ONNX ?= qdq-onnx
OUT ?= qdq-out
EPOCHS ?= 1
RULES ?= tensorrt

ifndef MODEL
$(error qdq-onnx.mk: set MODEL to a .keras/.h5 file or a SavedModel folder)
endif
ifndef DATA
$(error qdq-onnx.mk: set DATA to an .npz with the model inputs and labels)
endif

.DELETE_ON_ERROR:
.PHONY: qdq-onnx

qdq-onnx: $(OUT)/int8.onnx

$(OUT):
	mkdir -p $@

$(OUT)/fp32.onnx: $(MODEL) | $(OUT)
	$(QDQ_ONNX) convert $(MODEL) -o $@

$(OUT)/qdq.onnx: $(OUT)/fp32.onnx $(SPEC) $(wildcard $(RULES))
	$(QDQ_ONNX) insert $< -o $@ --rules $(RULES) $(if $(SPEC),--spec $(SPEC)) --plan $(OUT)/plan.json

$(OUT)/calibrated.onnx: $(OUT)/qdq.onnx $(DATA)
	$(QDQ_ONNX) calibrate $< --data $(DATA) -o $@

$(OUT)/int8.onnx: $(OUT)/calibrated.onnx $(DATA) $(VAL)
	$(QDQ_ONNX) finetune $< --data $(DATA) $(if $(VAL),--val $(VAL)) --epochs $(EPOCHS) $(if $(LR),--lr $(LR)) $(if $(filter 1,$(DISTILL)),--distill) --quiet -o $@
